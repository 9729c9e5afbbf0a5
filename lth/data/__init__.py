"""Datasets as whole numpy arrays (train / validation / test), by name (see registry.py)."""
from lth.data.registry import Dataset, load, names  # noqa: F401
