"""Model zoo: Flax Linen modules behind a name registry (see registry.py)."""
from lth.models.inits import Init  # noqa: F401
from lth.models.registry import build, names  # noqa: F401
