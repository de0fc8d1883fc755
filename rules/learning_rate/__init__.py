"""PG5xx learning rates: steps that cannot train, schedulers out of order.

One family, two sides that speak the same codes: `static` reads the code (libcst, never
torch), `runtime` watches a real run (torch is imported only once a guard starts).
"""

from .runtime import RUNTIME_MONITORS
from .static import STATIC_RULES

__all__ = ["RUNTIME_MONITORS", "STATIC_RULES"]
