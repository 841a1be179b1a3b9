"""The ``span_marker`` namespace of Polars expressions (a Polars expression plugin)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
from polars.plugins import register_plugin_function

from span_marker_rs import _native
from span_marker_rs._args import check_fraction, check_int, check_str

# The directory of the extension module, which holds the plugin's functions.
_PLUGIN_PATH = Path(__file__).parent

__all__ = ["SpanMarkerNamespace"]


def _predict_kwargs(
    model: str | os.PathLike[str],
    *,
    device: str = _native.DEFAULT_DEVICE,
    batch_size: int = _native.DEFAULT_BATCH_SIZE,
    threshold: float | None = None,
    allow_overlapping: bool = False,
    precision: str = _native.DEFAULT_PRECISION,
    strict: bool = False,
) -> dict[str, object]:
    """The plugin's keyword arguments, checked (the one place of their defaults)."""
    return {
        "model": check_str("model", model, path=True),
        "device": check_str("device", device),
        "batch_size": check_int("batch_size", batch_size, 1, _native.MAX_BATCH_SIZE),
        "threshold": None if threshold is None else check_fraction("threshold", threshold),
        "allow_overlapping": bool(allow_overlapping),
        "precision": check_str("precision", precision),
        "strict": bool(strict),
    }


@pl.api.register_expr_namespace("span_marker")
class SpanMarkerNamespace:
    """SpanMarker operations on a column of words (``List[String]``) or text (``String``).

    Each is an element-wise expression: it works in eager and lazy frames and in the
    streaming engine, and runs the model on whole batches of rows. NULL rows give NULL. The model
    is loaded once per process (per model and device) and shared by every expression.

    A row that cannot be annotated (a word longer than the model input, a NULL word) is NULL
    with a :class:`UserWarning`, or an error with ``strict=True``.
    """

    def __init__(self, expr: pl.Expr) -> None:
        self._expr = expr

    def predict(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = _native.DEFAULT_DEVICE,
        batch_size: int = _native.DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        allow_overlapping: bool = False,
        precision: str = _native.DEFAULT_PRECISION,
        strict: bool = False,
    ) -> pl.Expr:
        """The entities of a column of words, as ``List(Struct{start, end, label, score})``.

        ``start`` and ``end`` are word indices (``end`` exclusive).

        Args:
            model: A SpanMarker model directory, a Hugging Face model id (from the local cache)
                or ``"bundled"`` for the small model compiled into the package.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
            batch_size: Encoder samples per forward pass.
            threshold: Drop entities scoring below this probability (0 to 1).
            allow_overlapping: Return every span labelled as an entity, not only the best
                non-overlapping ones.
            precision: ``"fp32"``; ``"bf16"`` autocast on CUDA or a CPU with bfloat16
                instructions; ``"fp16"`` autocast on CUDA; ``"int8"`` (dynamically
                quantised linear maps) on the CPU.
            strict: Fail on a row that cannot be annotated instead of returning NULL for it.

        Example:
            >>> import polars as pl
            >>> import span_marker_rs
            >>> frame = pl.LazyFrame({"tokens": [["Paris", "is", "in", "France"]]})
            >>> out = frame.select(pl.col("tokens").span_marker.predict("bundled")).collect()
            >>> [(e["start"], e["end"], e["label"]) for e in out["tokens"][0]]
            [(0, 1, 'LOC'), (3, 4, 'LOC')]
        """
        return self._register(
            "predict",
            _predict_kwargs(
                model,
                device=device,
                batch_size=batch_size,
                threshold=threshold,
                allow_overlapping=allow_overlapping,
                precision=precision,
                strict=strict,
            ),
        )

    def predict_text(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = _native.DEFAULT_DEVICE,
        batch_size: int = _native.DEFAULT_BATCH_SIZE,
        threshold: float | None = None,
        allow_overlapping: bool = False,
        precision: str = _native.DEFAULT_PRECISION,
        strict: bool = False,
    ) -> pl.Expr:
        """The entities of a column of text, split into words by the model's pre-tokenizer.

        Gives ``List(Struct{start, end, label, score, char_start, char_end, text})``:
        word indices, character offsets into the text (end exclusive) and the entity's text.
        Arguments as in :meth:`predict`.
        """
        return self._register(
            "predict_text",
            _predict_kwargs(
                model,
                device=device,
                batch_size=batch_size,
                threshold=threshold,
                allow_overlapping=allow_overlapping,
                precision=precision,
                strict=strict,
            ),
        )

    def candidates(self, entity_max_length: int = _native.DEFAULT_ENTITY_MAX_LENGTH) -> pl.Expr:
        """Every span of up to ``entity_max_length`` words, as ``List(Struct{start, end})``.

        Example:
            >>> import polars as pl
            >>> import span_marker_rs
            >>> frame = pl.DataFrame({"tokens": [["New", "York"]]})
            >>> out = frame.select(pl.col("tokens").span_marker.candidates(2))
            >>> out["tokens"].to_list()
            [[{'start': 0, 'end': 1}, {'start': 0, 'end': 2}, {'start': 1, 'end': 2}]]
        """
        kwargs = {
            "entity_max_length": check_int("entity_max_length", entity_max_length, 1, 2**32 - 1)
        }
        return self._register("candidates", kwargs)

    def _register(self, function: str, kwargs: dict[str, object]) -> pl.Expr:
        return register_plugin_function(
            plugin_path=_PLUGIN_PATH,
            function_name=function,
            args=self._expr,
            kwargs=kwargs,
            is_elementwise=True,
        )
