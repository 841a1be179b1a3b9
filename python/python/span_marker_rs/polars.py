"""The ``span_marker`` namespace of Polars expressions (a Polars expression plugin)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import polars as pl
from polars.plugins import register_plugin_function

from span_marker_rs import _native
from span_marker_rs._args import check_int, check_str

if TYPE_CHECKING:
    from typing_extensions import Unpack

# The directory of the extension module, which holds the plugin's functions.
_PLUGIN_PATH = Path(__file__).parent

__all__ = ["PredictOptions", "SpanMarkerNamespace"]


class PredictOptions(TypedDict, total=False):
    """The prediction options of :meth:`SpanMarkerNamespace.predict` and
    :meth:`SpanMarkerNamespace.predict_text`, given as keyword arguments.

    They are the Rust engine's ``PredictOptions``, which also reads the SQL settings
    (``span_marker.<key>``) and the command line's flags, and holds their defaults and checks.
    An option left out keeps its default. A value of the wrong type is a :class:`TypeError` and
    one out of range a :class:`ValueError` when the expression is built, each naming its key;
    ``precision`` is checked when the expression runs, with the device.

    Keys:
        batch_size: Encoder samples per forward pass (default 32).
        threshold: Drop entities scoring below this probability (0 to 1; default ``None``,
            which keeps every entity).
        allow_overlapping: Return every span labelled as an entity, not only the best
            non-overlapping ones (default ``False``).
        precision: ``"fp32"`` (the default); ``"bf16"`` autocast on CUDA or a CPU with bfloat16
            instructions; ``"fp16"`` autocast on CUDA; ``"int8"`` (dynamically quantised
            linear maps) on the CPU.
    """

    batch_size: int
    threshold: float | None
    allow_overlapping: bool
    precision: str


def _plain(value: object) -> object:
    """``value``, with a NumPy scalar as the Python number or bool it holds (the keyword
    arguments are pickled for the plugin, which reads plain values)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _predict_kwargs(
    model: str | os.PathLike[str],
    *,
    device: str = _native.DEFAULT_DEVICE,
    strict: bool = False,
    **options: Unpack[PredictOptions],
) -> dict[str, object]:
    """The plugin's keyword arguments: the model, its device and strict mode, and the
    prediction options given, checked now by the Rust type that reads them when the expression
    runs (its defaults fill in the options left out)."""
    model = check_str("model", model, path=True)
    device = check_str("device", device)
    given = {key: _plain(value) for key, value in options.items()}
    _native.check_predict_options(given)
    return {"model": model, "device": device, "strict": bool(strict), "options": given}


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
        strict: bool = False,
        **options: Unpack[PredictOptions],
    ) -> pl.Expr:
        """The entities of a column of words, as ``List(Struct{start, end, label, score})``.

        ``start`` and ``end`` are word indices (``end`` exclusive).

        Args:
            model: A SpanMarker model directory, a Hugging Face model id (from the local cache)
                or ``"bundled"`` for the small model compiled into the package.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
            strict: Fail on a row that cannot be annotated instead of returning NULL for it.
            **options: The prediction options (:class:`PredictOptions`): ``batch_size``,
                ``threshold``, ``allow_overlapping`` and ``precision``.

        Example:
            >>> import polars as pl
            >>> import span_marker_rs
            >>> frame = pl.LazyFrame({"tokens": [["Paris", "is", "in", "France"]]})
            >>> out = frame.select(pl.col("tokens").span_marker.predict("bundled")).collect()
            >>> [(e["start"], e["end"], e["label"]) for e in out["tokens"][0]]
            [(0, 1, 'LOC'), (3, 4, 'LOC')]
        """
        kwargs = _predict_kwargs(model, device=device, strict=strict, **options)
        return self._register("predict", kwargs)

    def predict_text(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = _native.DEFAULT_DEVICE,
        strict: bool = False,
        **options: Unpack[PredictOptions],
    ) -> pl.Expr:
        """The entities of a column of text, split into words by the model's pre-tokenizer.

        Gives ``List(Struct{start, end, label, score, char_start, char_end, text})``:
        word indices, character offsets into the text (end exclusive) and the entity's text.
        Arguments as in :meth:`predict`.
        """
        kwargs = _predict_kwargs(model, device=device, strict=strict, **options)
        return self._register("predict_text", kwargs)

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
