"""Forward Sentry error events to Segment as "Error Captured" track calls, from the application."""

from .config import ConfigurationError
from .integration import SegmentIntegration

__version__ = "0.1.0"

__all__ = ["ConfigurationError", "SegmentIntegration", "__version__"]
