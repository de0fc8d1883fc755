"""pitfall-guard: a linter for the mistakes that make PyTorch training silently wrong."""

from pathlib import Path

from pitfall_guard.findings import Edit, Finding, Fix, Location, Severity, Source

__version__ = "0.1.0"

__all__ = ["Edit", "Finding", "Fix", "Location", "Severity", "Source", "__version__"]

# Installed, `rules/` and `reference_impl/` are subpackages (pyproject's package-dir maps
# them). Imported straight from a source checkout (`python -m ...` in the repository root
# puts the checkout first on sys.path), they sit beside this package: look there too.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "rules" / "__init__.py").is_file():
    __path__.append(str(_checkout))
