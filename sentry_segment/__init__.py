"""Forward Sentry error events to Segment as "Error Captured" track calls, from the application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ConfigurationError
    from .integration import SegmentIntegration

__version__ = "0.2.0"

__all__ = ["ConfigurationError", "SegmentIntegration", "__version__"]

# Imported on first use, not with the package: the pytest plugin (sentry_segment.pytest_plugin)
# loads before an application's conftest, which may need to import sentry_sdk itself first, or
# monkey-patch with gevent before anything imports threading.
_LAZY = {"ConfigurationError": ".config", "SegmentIntegration": ".integration"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
