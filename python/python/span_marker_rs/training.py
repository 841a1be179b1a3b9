"""Training from Python: a Polars (lazy) frame or a DataFusion DataFrame of annotated rows."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from span_marker_rs import _native

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Where the model was saved, and the metrics of the run.

    ``metrics`` holds ``train_loss``, ``train_runtime`` and the like, and the final ``eval_*``
    metrics (``eval_overall_f1``, per label ``eval_PER`` ...) when there is evaluation data.
    """

    output_dir: Path
    metrics: dict[str, Any]


def _frame(value: object, argument: str) -> pl.DataFrame:
    """``value`` as a Polars DataFrame (collected when lazy)."""
    if isinstance(value, pl.DataFrame):
        return value
    if isinstance(value, pl.LazyFrame):
        return value.collect()
    to_arrow = getattr(value, "to_arrow_table", None)
    if callable(to_arrow):  # a datafusion.DataFrame
        frame = pl.from_arrow(to_arrow())
        if isinstance(frame, pl.DataFrame):
            return frame
    msg = (
        f"`{argument}` must be a polars DataFrame or LazyFrame or a datafusion DataFrame, "
        f"got {type(value).__name__}"
    )
    raise TypeError(msg)


def train(
    frame: pl.DataFrame | pl.LazyFrame | Any,
    *,
    encoder: str | os.PathLike[str],
    labels: list[str] | None = None,
    args: dict[str, Any] | None = None,
    eval_frame: pl.DataFrame | pl.LazyFrame | Any | None = None,
    tokens: str = "tokens",
    tags: str = "ner_tags",
    document_id: str | None = None,
    sentence_id: str | None = None,
    model_settings: dict[str, Any] | None = None,
) -> TrainResult:
    """Trains a SpanMarker model on the rows of ``frame`` and saves it to ``args["output_dir"]``.

    The saved model loads in Python ``span_marker`` (``SpanMarkerModel.from_pretrained``) and in
    this package (``model=<output_dir>``).

    Args:
        frame: Annotated rows: a ``tokens`` column (``List[String]``) and a ``tags`` column of
            tag ids (``List[Int]``, needs ``labels``) or tag strings (``List[String]``, e.g.
            ``B-PER``).
        encoder: The encoder to start from: a directory or Hugging Face id of a BERT-family
            encoder, or a SpanMarker model (``"bundled"``) to fine-tune further.
        labels: The tag list (``["O", "B-PER", "I-PER", ...]``); taken from the string tags when
            absent.
        args: Training arguments by their Hugging Face ``TrainingArguments`` names
            (``output_dir``, ``learning_rate``, ``num_train_epochs``, ``per_device_train_batch_size``,
            ``seed``, ...).
        eval_frame: Rows to evaluate on (as ``frame``), at the end and as ``args`` schedule.
        tokens: The column of words.
        tags: The column of tags.
        document_id: With ``sentence_id``, columns that place sentences in documents, for
            document context.
        sentence_id: See ``document_id``.
        model_settings: Settings of a new model (``entity_max_length``, ``model_max_length``,
            ``marker_max_length``, ...).

    Raises:
        TypeError: ``frame`` or ``eval_frame`` is not a frame.
        span_marker_rs.SpanMarkerError: invalid arguments, settings or data (the message names
            which), an encoder that cannot be loaded, or a failed run.
    """
    spec: dict[str, Any] = dict(model_settings or {})
    spec["encoder"] = os.fspath(encoder)
    if labels is not None:
        spec["labels"] = list(labels)
    train_rows = _frame(frame, "frame")
    eval_rows = None if eval_frame is None else _frame(eval_frame, "eval_frame")
    output_dir, metrics = _native.train(
        train_rows,
        eval_rows,
        json.dumps(spec),
        json.dumps(args or {}),
        tokens,
        tags,
        document_id,
        sentence_id,
    )
    return TrainResult(output_dir=Path(output_dir), metrics=json.loads(metrics))
