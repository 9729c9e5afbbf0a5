"""The few places where the processes of one jax.distributed run differ, for the code that trains:
whether there are several (`multi`), which one writes (`is_main`), waiting for the others
(`barrier`), and arrays gathered whole to every process (`to_host`) or made global for orbax
(`to_global`). In one process every function here is a no-op."""
from __future__ import annotations

import functools

import jax
import numpy as np


def multi() -> bool:
    return jax.process_count() > 1


def is_main() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here for the others (a no-op in one process)."""
    if multi():
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def to_host(tree):
    """`tree` with every array another process holds part of gathered whole, as numpy (a no-op in
    one process, and for arrays already whole here)."""
    if not multi():
        return tree
    from jax.experimental import multihost_utils

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return a
    return jax.tree.map(one, tree)


@functools.lru_cache(maxsize=1)
def replicated():
    """A sharding that holds a whole array on every device of every process (what orbax saves once)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    return NamedSharding(Mesh(np.array(jax.devices()), ("all",)), PartitionSpec())


def to_global(tree):
    """Arrays that are whole in this process made global (replicated over every process's devices),
    so that orbax writes each once; arrays already spread over processes stay as they are."""
    if not multi():
        return tree

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return a
        return jax.device_put(np.asarray(a), replicated())
    return jax.tree.map(one, tree)
