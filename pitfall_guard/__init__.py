"""pitfall-guard: a linter for the mistakes that make PyTorch training silently wrong."""

from pitfall_guard.findings import Edit, Finding, Fix, Location, Severity, Source

__version__ = "0.1.0"

__all__ = ["Edit", "Finding", "Fix", "Location", "Severity", "Source", "__version__"]
