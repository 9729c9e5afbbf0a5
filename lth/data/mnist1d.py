"""MNIST-1D (Greydanus 2020), generated offline by the `mnist1d` package with its standard seed."""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def _generate():
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG; restore it after
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return d["x"].astype(np.float32), d["y"], d["x_test"].astype(np.float32), d["y_test"]


def load():
    """((x_train, y_train), (x_test, y_test), num_classes): 4,000 / 1,000 signals of length 40."""
    xtr, ytr, xte, yte = _generate()
    return (xtr.copy(), ytr.copy()), (xte.copy(), yte.copy()), 10
