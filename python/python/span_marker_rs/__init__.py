"""SpanMarker named-entity recognition for Polars and DataFusion, on a Rust core.

Importing the package registers the ``span_marker`` expression namespace on Polars
expressions::

    >>> import polars as pl
    >>> import span_marker_rs
    >>> frame = pl.DataFrame({"text": ["Angela Merkel visited Paris."]})
    >>> entities = frame.select(pl.col("text").span_marker.predict_text(model="bundled"))
    >>> [e["text"] for e in entities["text"][0]]
    ['Angela Merkel', 'Paris']

- ``pl.col(...).span_marker.predict / predict_text / candidates``: Polars expressions
  (:class:`span_marker_rs.polars.SpanMarkerNamespace`);
- :func:`register` and :func:`session_config`: the SQL functions and the ``span_marker.*``
  settings for a ``datafusion.SessionContext``;
- :func:`train`: training from a Polars (lazy) frame or a DataFusion DataFrame, or from a
  Hugging Face Hub dataset's split read by :func:`load_dataset` (labels included).
"""

# libtorch comes from the torch wheel: load it before the extension, so that the process holds
# one copy (the extension also finds it through an $ORIGIN-relative rpath).
import torch  # noqa: F401  # isort: skip

from span_marker_rs._native import SpanMarkerError, __version__
from span_marker_rs.datafusion import Settings, register, session_config
from span_marker_rs.polars import SpanMarkerNamespace
from span_marker_rs.training import HubSplit, TrainResult, load_dataset, train

__all__ = [
    "SpanMarkerError",
    "SpanMarkerNamespace",
    "HubSplit",
    "Settings",
    "TrainResult",
    "__version__",
    "load_dataset",
    "register",
    "session_config",
    "train",
]
