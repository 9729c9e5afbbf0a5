"""lth: lottery tickets and pruning at initialization in JAX/Flax."""
__version__ = "0.1.0"
