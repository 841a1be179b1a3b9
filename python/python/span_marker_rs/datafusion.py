"""The SpanMarker SQL functions for Python's ``datafusion`` (through the DataFusion FFI).

Example:
    >>> from datafusion import SessionContext
    >>> import span_marker_rs
    >>> ctx = SessionContext(span_marker_rs.session_config())
    >>> span_marker_rs.register(ctx)
    >>> _ = ctx.sql("SET span_marker.model = 'bundled'")
    >>> batches = ctx.sql(
    ...     "SELECT span_marker_predict(['Paris', 'is', 'in', 'France']) AS e"
    ... ).collect()
    >>> [entity["label"] for entity in batches[0].column("e")[0].as_py()]
    ['LOC', 'LOC']
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from span_marker_rs._args import check_str
from span_marker_rs._native import ScalarFunction, Settings, scalar_function_names

if TYPE_CHECKING:
    from datafusion import SessionConfig, SessionContext

__all__ = ["Settings", "register", "session_config"]


def session_config(config: SessionConfig | None = None) -> SessionConfig:
    """``config`` (or a new ``SessionConfig``) with the ``span_marker.*`` settings.

    A context made from it accepts ``SET span_marker.<key> = <value>`` for the Rust engine's
    settings: ``model``, ``device``, ``strict``, ``entity_max_length`` and the prediction
    options (``batch_size``, ``threshold``, ``allow_overlapping``, ``precision``: the keys of
    :class:`span_marker_rs.polars.PredictOptions`, with the same defaults and checks). ``SET``
    refuses an unknown key or a value that does not parse; ranges, precisions and models are
    checked when a function runs. Each error names the setting.
    """
    from datafusion import SessionConfig

    if config is None:
        config = SessionConfig()
    return config.with_extension(Settings())


def register(
    ctx: SessionContext,
    *,
    model: str | os.PathLike[str] | None = None,
    device: str | None = None,
) -> None:
    """Registers the SpanMarker scalar functions on ``ctx``.

    The functions: ``span_marker_predict(tokens)``, ``span_marker_predict_text(text)``,
    ``span_marker_candidates(tokens[, entity_max_length])`` and ``span_marker_model_info()``.
    They read the ``span_marker.*`` settings of contexts made with :func:`session_config`.

    Args:
        ctx: The session.
        model: A model used whenever ``span_marker.model`` is not set (loaded now, so a wrong
            path fails here); without it, queries need ``SET span_marker.model = '...'``.
        device: Where ``model`` runs (default ``"cpu"``).

    The training table function (``span_marker_train`` in the Rust engine) is not registered:
    it plans and runs queries inside the calling session, which the FFI does not offer. Use
    :func:`span_marker_rs.train` on a DataFrame of the session instead.
    """
    from datafusion import udf

    if model is not None:
        model = check_str("model", model, path=True)
    if device is not None:
        check_str("device", device)
        if model is None:
            msg = "`device` applies to `model`; without one, use SET span_marker.device = '...'"
            raise ValueError(msg)
    for name in scalar_function_names():
        ctx.register_udf(udf(ScalarFunction(name, model, device)))
