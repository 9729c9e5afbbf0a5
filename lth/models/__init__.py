"""Model zoo: Flax Linen modules behind a name registry (see registry.py)."""
from lth.models.registry import INITS, build, names  # noqa: F401
