"""Name -> detector registry, in the spirit of timm's ``create_model``.

Detector modules register their class with :func:`register_detector`; users call
:func:`load_detector` with a name and keyword options. The registry loads nothing itself: the
package root imports :mod:`imlforensics.detectors` and :mod:`imlforensics.committee`, whose
modules register the built-in detectors, before any of these functions can run.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, TypeVar

from ..errors import UnknownDetector
from .base import Detector

# The detector `imlf detect` uses when none is named: the best classical detector measured by
# benchmarks/compare_pyifd.py on CASIA v1 (see README.md). It needs a JPEG file, so inputs it does
# not apply to (PNG, TIFF, ...) get the best detector that works on any image instead.
DEFAULT_DETECTOR = "dq"
DEFAULT_FALLBACK = "ela"

_DETECTORS: dict[str, type[Detector]] = {}
_ALIASES: dict[str, str] = {}
D = TypeVar("D", bound=type[Detector])


def register_detector(cls: D) -> D:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _DETECTORS and _DETECTORS[cls.name] is not cls:
        raise ValueError(f"detector name {cls.name!r} registered twice")
    _DETECTORS[cls.name] = cls
    if "-" in cls.name:
        _ALIASES[cls.name.replace("-", "_")] = cls.name
    return cls


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _DETECTORS:
        known = ", ".join(sorted(_DETECTORS))
        raise UnknownDetector(f"unknown detector {name!r} (known: {known})")
    return key


def load_detector(name: str, **options: Any) -> Detector:
    """Create the detector registered as ``name`` with its keyword options."""
    cls = _DETECTORS[canonical_name(name)]
    _check_option_types(cls, options)
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise UnknownDetector(f"bad options for detector {cls.name}: {exc}") from None


def _check_option_types(cls: type[Detector], options: dict[str, Any]) -> None:
    """Refuse an option whose value is not of its default's type (``-O default_quality=abc``
    reached the detector as text and failed there with a raw TypeError)."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return
    for key, value in options.items():
        p = params.get(key)
        default = None if p is None else p.default
        if default is None or default is inspect.Parameter.empty:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (isinstance(default, float) or float(value).is_integer()))
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            kind = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[type(default)]
            raise UnknownDetector(f"bad options for detector {cls.name}: {key}={value!r} must be {kind} "
                                  f"(default {default!r})")


def detector_class(name: str) -> type[Detector]:
    return _DETECTORS[canonical_name(name)]


def list_detectors() -> list[type[Detector]]:
    """All registered detector classes, sorted by name."""
    return [_DETECTORS[k] for k in sorted(_DETECTORS)]
