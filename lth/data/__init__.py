"""Datasets as whole numpy arrays (train / validation / test), by name (see registry.py)."""
from lth.data.registry import SHAPES, Dataset, load, names, synthetic  # noqa: F401
