"""How a run lays out over devices: one mesh with axes ('replicas', 'data').

A lottery-ticket study is many independent trainings, so the natural layout past one device is
replicate-parallel: the leading replicate axis of every state leaf sharded over 'replicas' (R/D
replicates a device, no communication at all). Data-parallel splits each batch over 'data'. With
R < D both: R replicate groups of D/R devices each splitting the batch. `run.parallel` picks
(auto: replicates when R >= the devices, else the 2-D mesh when R divides them, else data).
Also here: how one step maps over the replicate axis on a device (`replicate_mode`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lth.errors import UserError
from lth.models.layers import input_shape as model_input_shape

PARALLEL = ("auto", "replicates", "data")
REPLICATE_MODES = ("auto", "vmap", "unroll", "sequential")


def layout(devices: int, parallel: str, replicates: int) -> tuple[int, int]:
    """(replica groups, devices per group) for `devices` devices and R replicates."""
    if parallel not in PARALLEL:
        raise UserError(f"unknown run.parallel {parallel!r}; allowed: {', '.join(PARALLEL)}")
    d, r = devices, replicates
    if d == 1 or parallel == "data":
        return 1, d
    if parallel == "auto":
        if r >= d:
            return (d, 1) if r % d == 0 else (1, d)
        return (r, d // r) if d % r == 0 else (1, d)
    if r >= d:
        if r % d:
            raise UserError(f"replicates {r} is not divisible by the {d} devices of run.parallel=replicates; "
                            f"allowed: a multiple of {d} (or fewer devices with run.devices, or run.parallel=data)")
        return d, 1
    if d % r:
        raise UserError(f"replicates {r} does not divide the {d} devices of run.parallel=replicates; allowed: "
                        f"R dividing {d}, R a multiple of {d}, or run.devices / run.parallel=data")
    return r, d // r


def make_mesh(devices: int = 0, parallel: str = "data", replicates: int = 1) -> Mesh | None:
    """A ('replicas', 'data') mesh over the first `devices` devices (0 = all, across every process
    of a jax.distributed run); None when there is only one."""
    available = jax.devices()
    if devices < 0 or devices > len(available):
        raise UserError(f"run.devices {devices} out of range; allowed: 0 (all) .. {len(available)} visible devices")
    chosen = available[:devices or len(available)]
    groups, per = layout(len(chosen), parallel, replicates)
    return Mesh(np.array(chosen).reshape(groups, per), ("replicas", "data")) if len(chosen) > 1 else None


def axis_size(mesh: Mesh | None, name: str) -> int:
    return 1 if mesh is None else mesh.shape[name]


def replicate_mode(mode: str, model, input_shape, replicates: int = 2, mesh: Mesh | None = None) -> str:
    """'auto' on CPU, for conv nets (vmapped, their convolutions become grouped convolutions, 2–3×
    slower there): unroll up to 2 replicates (1.05–1.19× of R separate runs), sequential beyond
    (LeNet-5 at R = 4 unrolled: 0.63×; R = 8: unrolled 0.60×, sequential 0.87×); vmap otherwise,
    and always when replicates are sharded over devices (the other modes slice the sharded axis)."""
    if mode not in REPLICATE_MODES:
        raise UserError(f"unknown run.replicate_mode {mode!r}; allowed: {', '.join(REPLICATE_MODES)}")
    if axis_size(mesh, "replicas") > 1:
        if mode not in ("auto", "vmap"):
            raise UserError(f"run.replicate_mode {mode!r} cannot shard replicates over devices; allowed with "
                            f"run.parallel=replicates: vmap, auto (or run.parallel=data)")
        return "vmap"
    if mode != "auto":
        return mode
    if jax.default_backend() != "cpu":
        return "vmap"
    x = jnp.zeros((1, *model_input_shape(model, input_shape)))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    if not any(x.ndim == 4 for x in jax.tree.leaves(shapes["params"])):
        return "vmap"
    return "unroll" if replicates <= 2 else "sequential"
