"""Training layer: the jit-compiled masked step over a leading replicate axis (`step`), the host
loop with evaluation and checkpoint hooks (`loop`), optimizers and schedules (`optim`),
distillation losses (`distill`), devices and meshes (`devices`) and the per-process helpers of a
jax.distributed run (`hosts`). Takes step counts and arrays, never config strings or run paths."""
