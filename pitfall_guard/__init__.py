"""pitfall-guard: a linter for the mistakes that make PyTorch training silently wrong."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitfall_guard.findings import Edit, Finding, Fix, Location, Severity, Source

if TYPE_CHECKING:
    from pitfall_guard.runtime.guard import Guard

__version__ = "0.1.0"

__all__ = ["Edit", "Finding", "Fix", "Guard", "Location", "Severity", "Source", "__version__"]


def __getattr__(name: str) -> Any:
    # Guard is imported on first use: `import pitfall_guard` (and `check`) stays light.
    if name == "Guard":
        from pitfall_guard.runtime.guard import Guard

        return Guard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Installed, `rules/` and `reference_impl/` are subpackages (pyproject's package-dir maps
# them). Imported straight from a source checkout (`python -m ...` in the repository root
# puts the checkout first on sys.path), they sit beside this package: look there too.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "rules" / "__init__.py").is_file():
    __path__.append(str(_checkout))
