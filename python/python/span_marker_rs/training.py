"""Training from Python: a Polars (lazy) frame or a DataFusion DataFrame of annotated rows."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from span_marker_rs import _native
from span_marker_rs._args import check_finite, check_str

__all__ = ["HubSplit", "TrainResult", "load_dataset", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Where the model was saved, and the metrics of the run.

    ``metrics`` holds ``train_loss``, ``train_runtime`` and the like, and the final ``eval_*``
    metrics (``eval_overall_f1``, per label ``eval_PER`` ...) when there is evaluation data, and
    ``test_*`` ones when there is test data.
    """

    output_dir: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class HubSplit:
    """A split of a Hugging Face Hub dataset: its rows, and the label names its integer tags
    index (the ``ClassLabel`` feature, as ``features["ner_tags"].feature.names``), ``None`` when
    the tags are strings or the data store no names. ``train`` takes it in place of a frame,
    with its labels."""

    frame: pl.DataFrame
    labels: list[str] | None


def load_dataset(
    id: str,  # noqa: A002 - the Hub's word
    split: str = "train",
    *,
    config: str | None = None,
    revision: str | None = None,
    rows: int | None = None,
    tags: str = "ner_tags",
) -> HubSplit:
    """Reads a split of a Hugging Face Hub dataset, as ``datasets.load_dataset(id, config,
    split=split)`` (``.select(range(rows))`` with ``rows``) would.

    The split's Parquet files (the repository's own, else the Hub's ``refs/convert/parquet``
    conversion) are downloaded once into the Hugging Face cache, which ``HF_HOME``,
    ``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE=1`` govern as for the
    Python tools.

    Raises:
        span_marker_rs.SpanMarkerError: the dataset, its config or split cannot be found (the
            message names the ones there are), or a file cannot be read.
    """
    check_str("id", id)
    check_str("split", split)
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        msg = f"`rows` must be a positive integer, got {rows!r}"
        raise ValueError(msg)
    frame, labels = _native.hub_dataset(id, split, config, revision, rows, check_str("tags", tags))
    return HubSplit(frame=frame, labels=labels)


def _frame(value: object, argument: str, columns: list[str]) -> pl.DataFrame:
    """The ``columns`` of ``value`` as a Polars DataFrame (collected when lazy); categorical
    columns become strings."""
    if isinstance(value, HubSplit):
        value = value.frame
    if isinstance(value, pl.LazyFrame):
        value = value.collect()
    elif not isinstance(value, pl.DataFrame):
        to_arrow = getattr(value, "to_arrow_table", None)
        if not callable(to_arrow):
            msg = (
                f"`{argument}` must be a polars DataFrame or LazyFrame or a datafusion "
                f"DataFrame, got {type(value).__name__}"
            )
            raise TypeError(msg)
        value = pl.DataFrame(pl.from_arrow(to_arrow()))
    missing = [c for c in columns if c not in value.columns]
    if missing:
        msg = f"`{argument}` has no column {missing[0]!r}; its columns are {value.columns}"
        raise _native.SpanMarkerError(msg)
    return value.select(columns).with_columns(
        pl.col(pl.Categorical, pl.Enum).cast(pl.String),
        pl.col(pl.List(pl.Categorical), pl.List(pl.Enum)).cast(pl.List(pl.String)),
    )


def train(
    frame: pl.DataFrame | pl.LazyFrame | Any,
    *,
    encoder: str | os.PathLike[str],
    labels: list[str] | None = None,
    args: dict[str, Any] | None = None,
    eval_frame: pl.DataFrame | pl.LazyFrame | Any | None = None,
    test_frame: pl.DataFrame | pl.LazyFrame | Any | None = None,
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
            ``B-PER``); or a :class:`HubSplit` from :func:`load_dataset`, whose label names serve
            as ``labels``.
        encoder: The encoder to start from: a directory or Hugging Face id of a BERT-family
            encoder, or a SpanMarker model (``"bundled"``) to fine-tune further.
        labels: The tag list (``["O", "B-PER", "I-PER", ...]``); taken from a
            :class:`HubSplit`'s labels or from the string tags when absent. Labels given as well
            as stored in a :class:`HubSplit` must be the same.
        args: Training arguments by their Hugging Face ``TrainingArguments`` names
            (``output_dir``, ``learning_rate``, ``num_train_epochs``, ``per_device_train_batch_size``,
            ``seed``, ...). ``output_dir`` defaults to ``models/span-marker`` under the
            working directory; one that holds a finished run (a model or checkpoints) is
            refused unless ``overwrite_output_dir`` is true (its checkpoints are then removed).
        eval_frame: Rows to evaluate on (as ``frame``), at the end and as ``args`` schedule.
        test_frame: Rows to test the final model on (as ``frame``), giving ``test_*`` metrics,
            as ``trainer.evaluate(test, metric_key_prefix="test")``.
        tokens: The column of words.
        tags: The column of tags.
        document_id: With ``sentence_id``, columns that place sentences in documents, for
            document context.
        sentence_id: See ``document_id``.
        model_settings: Settings of a new model (``entity_max_length``, ``model_max_length``,
            ``marker_max_length``, ...).

    Raises:
        TypeError: ``frame``, ``eval_frame`` or ``test_frame`` is not a frame.
        span_marker_rs.SpanMarkerError: invalid arguments, settings or data (the message names
            which), an encoder that cannot be loaded, or a failed run.
    """
    for name, value in [("args", args), ("model_settings", model_settings)]:
        if value is not None and not isinstance(value, Mapping):
            msg = f"`{name}` must be a dict, got {type(value).__name__}"
            raise TypeError(msg)
    spec: dict[str, Any] = dict(model_settings or {})
    spec["encoder"] = check_str("encoder", encoder, path=True)
    splits = (frame, eval_frame, test_frame)
    stored = [v.labels for v in splits if isinstance(v, HubSplit) and v.labels]
    if any(other != stored[0] for other in stored[1:]):
        msg = f"the splits' tags index different labels: {stored[0]} and {stored[1]}"
        raise _native.SpanMarkerError(msg)
    if stored and labels is not None and list(labels) != stored[0]:
        msg = (
            f"the labels given, {list(labels)}, differ from the labels the data's tags index, "
            f"{stored[0]}: leave `labels` out or give these"
        )
        raise _native.SpanMarkerError(msg)
    if stored and labels is None:
        labels = stored[0]
    if labels is not None:
        if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
            msg = f"`labels` must be a list of strings, got {labels!r}"
            raise TypeError(msg)
        spec["labels"] = list(labels)
    args = dict(args or {})
    check_finite("args", args)
    check_finite("model_settings", spec)
    columns = [check_str("tokens", tokens), check_str("tags", tags)]
    if (document_id is None) != (sentence_id is None):
        msg = "document context needs both `document_id` and `sentence_id`"
        raise ValueError(msg)
    if document_id is not None:
        columns += [check_str("document_id", document_id), check_str("sentence_id", sentence_id)]
    train_rows = _frame(frame, "frame", columns)
    eval_rows = None if eval_frame is None else _frame(eval_frame, "eval_frame", columns)
    test_rows = None if test_frame is None else _frame(test_frame, "test_frame", columns)
    output_dir, metrics = _native.train(
        train_rows,
        eval_rows,
        test_rows,
        json.dumps(spec),
        json.dumps(args),
        tokens,
        tags,
        document_id,
        sentence_id,
    )
    return TrainResult(output_dir=Path(output_dir), metrics=json.loads(metrics))
