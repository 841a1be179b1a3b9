"""Argument checks shared by the package's functions: errors name the argument."""

from __future__ import annotations

import math
import numbers
import operator
import os


def check_str(name: str, value: object, *, path: bool = False) -> str:
    """A non-empty string (or, with ``path``, an ``os.PathLike``)."""
    if path and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        kind = "a non-empty string or path" if path else "a non-empty string"
        msg = f"`{name}` must be {kind}, got {value!r}"
        raise TypeError(msg)
    return value


def check_int(name: str, value: object, minimum: int, maximum: int) -> int:
    """An integer (Python's or NumPy's, not a bool) in ``minimum..=maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"`{name}` must be an int, got {type(value).__name__}"
        raise TypeError(msg)
    value = operator.index(value)
    if not minimum <= value <= maximum:
        msg = f"`{name}` must be between {minimum} and {maximum}, got {value}"
        raise ValueError(msg)
    return value


def check_fraction(name: str, value: object) -> float:
    """A number (Python's or NumPy's, not a bool) between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"`{name}` must be a number, got {type(value).__name__}"
        raise TypeError(msg)
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        msg = f"`{name}` must be between 0 and 1, got {value}"
        raise ValueError(msg)
    return value


def check_finite(name: str, value: object) -> None:
    """Refuses NaN and infinities anywhere in a JSON-bound value, naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"`{name}` must be a finite number, got {value}"
        raise ValueError(msg)
    if isinstance(value, dict):
        for key, inner in value.items():
            check_finite(f"{name}.{key}", inner)
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            check_finite(f"{name}[{index}]", inner)
