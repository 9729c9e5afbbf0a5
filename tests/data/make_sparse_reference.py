"""Stored jaxpruner reference outputs for lth's sparse-training code (tests/data/sparse_reference.npz).

Run once by hand, in a scratch environment outside the project (lth never imports jaxpruner):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install -c constraints.txt jax jaxlib optax chex flax ml-collections numpy
    # jaxpruner is not served by the package index here: install it from a local checkout of
    # github.com/google-research/jaxpruner (the outputs below were made at commit f133ee50f31a,
    # 2024-04-23) with `pip install --no-deps /path/to/jaxpruner`.
    /tmp/refvenv/bin/python tests/data/make_sparse_reference.py   # writes tests/data/sparse_reference.npz

Versions used: jax/jaxlib 0.10.2, optax 0.2.8, flax 0.12.8, chex 0.1.92, numpy 2.4.6 (lth's
constraints.txt). jaxpruner still calls `jax.tree_map`, which jax removed; the script sets
`jax.tree_map = jax.tree_util.tree_map` before importing it (an alias, no behaviour change;
jaxpruner's own test files pass under it). Every array below is jaxpruner's output, except the keys
under `rigl_counts/` (rigl's formula, see there) and `uniform_plus/` (Random_Pruning's formula).

Keys (L = layers of the model, in the order listed under MODELS):

* `layers/{m}`, `shapes/{m}` (str, e.g. "3x3x16x32"), `sizes/{m}` (int64): the kernel set of model m.
  Flax layouts: conv kernels HWIO, dense kernels (in, out). Only kernels are in the set (no biases,
  no BatchNorm). m in lenet300, resnet20, vgg16:
    lenet300: fc1 784x300, fc2 300x100, fc3 100x10.
    resnet20: conv0 3x3x3x16; s1 convs 3x3x16x16 x6; s2 first conv 3x3x16x32, then 3x3x32x32 x5,
              then the 1x1 16->32 shortcut; s3 first conv 3x3x32x64, then 3x3x64x64 x5, then the 1x1
              32->64 shortcut; fc 64x10  (22 layers).
    vgg16:    13 3x3 convs 3->64,64,64->128,128,128->256,256,256,256->512,512,512,512,512,512; fc 512x10.
* `{dist}/{m}/{s}` (float64, shape (L,)): per-layer sparsity for global target s in
  0.5, 0.8, 0.9, 0.95, 0.98, from jaxpruner/sparsity_distributions.py:
    uniform          `uniform(params, s)`            every kernel gets s (none kept dense).
    erk              `erk(params, s)`                ERK (erk_power_scale=1.0, the only value `erk`
                     passes) over ALL kernels incl. first conv and last dense; none forced dense
                     (the dense-layer loop may still make some layers 0.0: see the values).
    erk_first_dense  `erk(params, s, custom_sparsity_map={first: 0.0})`: the first layer (conv0 /
                     fc1) gets 0.0 and is left out of the ERK budget (= rigl's CIFAR/ImageNet setting
                     where the first layer is not masked at all).
    er               `get_sparsities_erdos_renyi(shapes, s, include_kernel=False)`: Erdos-Renyi
                     (n_in+n_out)/(n_in*n_out) on the last two dims, no power scale; all kernels.
    erk_p05          `get_sparsities_erdos_renyi(shapes, s, erk_power_scale=0.5)`.
* `{dist}_ones/{m}/{s}` (int64, (L,)) for uniform, erk, erk_first_dense: the number of ones of the
  mask jaxpruner's unstructured top-k (`mask_calculator.topk_mask_calculator`, used by every
  updater) makes for each layer at that sparsity: max(1, round_half_even(float32(size*(1-s)))), or
  size when s == 0.
* `rigl_counts/{dist}/{m}/{s}` (int64): ones per layer by rigl's `sparse_utils.get_mask_random_numpy`
  (size - floor(s*size) in float64), for erk and uniform, to compare the two roundings.
* `uniform_plus/{m}/{s}` (float64, (L,)): expected per-layer sparsity of Random_Pruning's
  `uniform_plus` (CIFAR/sparselearning/core.py, Masking.init), restated: first layer dense; with
  D = 1-s, N = sum of sizes: if D < 0.2: last layer density 0.2 and the others
  D' = (N*D - size_first - 0.2*size_last) / N; else every other layer (last included) density D.
  Clipped to [0, 1] (a negative D' -- LeNet-300-100 at s >= 0.9, whose first layer holds 88% of the
  weights -- means Random_Pruning's `torch.rand(shape) < D'` keeps nothing). Random_Pruning only
  runs it on its CIFAR ResNets (it looks up 'conv.weight' and 'fc.weight'); for LeNet/VGG this is
  the same rule applied to their first and last layers.
* `topk/scores` (float32, (10,)), `topk/sparsities` (float64, (K,)), `topk/masks` (uint8, (K, 10)):
  topk_mask_calculator on a score vector with ties: ties at the threshold are kept in increasing
  flat-index order; the count rounds half to even in float32.
* `poly/steps` (0..130), `poly/sparsity` (float32), `poly/is_update` (bool):
  PolynomialSchedule(update_freq=10, update_start_step=10, update_end_step=110, power=3) for target
  0.9: get_sparsity_at_step(0.9, step) and is_mask_update_iter(step).
* `gmp/density` (float64, (131,)): MagnitudePruning with that schedule wrapped around optax.sgd; the
  density of its (single, 1000-element) mask after the update_fn call with count = step, i.e. the
  mask a training step `step` leaves behind. Params are fixed distinct magnitudes, uniform dist.
* `cosine/steps`, `cosine/drop_fraction` (float32): optax.cosine_decay_schedule(0.3, 100) at steps
  0..130 -- what jaxpruner's create_updater_from_config wires as drop_fraction_fn for rigl/set with
  drop_fraction=0.3, update_end_step=100.
* Small MLP: params {'Dense_0': {'kernel': (8, 6)}, 'Dense_1': {'kernel': (6, 4)}} ONLY -- no
  biases, because jaxpruner's SET/RigL `update_state` tree_maps over the masks tree and fails on the
  None masks that unpruned leaves (biases) get. Keys `mlp/{what}/{layer}` with layer in
  Dense_0, Dense_1:
    mlp/params    float32, already masked (inactive entries exactly 0, jaxpruner's convention:
                  post_gradient_update masks params after every step)
    mlp/dense_params  the same values before masking (for the `rigl_stale` case)
    mlp/masks     uint8, exactly 24/48 and 12/24 ones (fixed numpy seed)
    mlp/grads     float32, dense gradients (nonzero on inactive entries too)
    mlp/trace     float32, momentum (optax.trace) state before the update, all entries nonzero
    mlp/mu, mlp/nu  Adam first/second moments before the update (nu > 0)
  and scalar `mlp/step` = 30 (the SparseState.count at the update).
  Updaters: jaxpruner.RigL / jaxpruner.SET(scheduler=PolynomialSchedule(update_freq=10,
  update_start_step=0, update_end_step=100), sparsity_distribution_fn=uniform(s=0.5),
  drop_fraction_fn=optax.cosine_decay_schedule(0.3, 100)) -- the same objects
  create_updater_from_config builds -- wrapped with `wrap_optax(optax.sgd(0.1, momentum=0.9))`
  (or optax.adam(1e-3) for `rigl_adam`). The state's masks/inner state/count are set to the values
  above and ONE call `tx.update(grads, state, params)` is made (count 30 is a mask-update step);
  then new_params = post_gradient_update(optax.apply_updates(params, updates), new_state).
    {alg}/drop_fraction     scalar, drop_fraction_fn(30)
    {alg}/dropped_mask/{l}  uint8, the intermediate mask after the drop step (jaxpruner's first
                            top-k call in SET._update_masks); new_masks is its superset
    {alg}/new_masks/{l}     uint8
    {alg}/updates/{l}       the updates returned (zeros: SET/RigL skip the gradient step on
                            mask-update steps, skip_gradients=True)
    {alg}/new_params/{l}    params after that step; grown entries are params*new_mask, i.e. the
                            stored param value there -- 0 under the masked-params convention
    {alg}/trace_after/{l}   momentum after (rigl, set); entries that went 0->1 are reset to 0,
                            all others unchanged (no optimizer step was taken)
    rigl_adam/mu_after, rigl_adam/nu_after  same for Adam's mu and nu
    rigl_ties/...           RigL with quantised params (|w| in {0.25, 0.5, 0.75}) and grads
                            (|g| in {0, 0.5, 1}) so ties decide: inputs under rigl_ties/params,
                            rigl_ties/grads (same masks), outputs new_masks/new_params
    rigl_stale/new_params   RigL with mlp/dense_params (unmasked) as params: same masks, but grown
                            entries come back with their stale dense value (jaxpruner does not
                            zero them; rigl's TF code sets them to grow_init='zeros')
    set/grow_scores/{l}     SET's random grow scores: new_rng = jax.random.fold_in(PRNGKey(8),
                            count=30); keys = jax.random.split(new_rng, num=2) (one per params leaf,
                            leaves in jax.tree_util order: Dense_0/kernel, Dense_1/kernel);
                            scores[l] = jax.random.uniform(keys[i], shape, float32).
                            `set/key_data` = jax.random.key_data(new_rng) (uint32 (2,)).
                            These are bitwise reproducible in jax 0.10.2 (threefry, default
                            jax_threefry_partitionable=True) only with the same leaf count/order;
                            with biases in the tree the split count (and draws) differ. A test can
                            feed these stored scores to lth's update (exact), or check invariants.
* `static_init/masks/{l}`: the initial masks jaxpruner.SET.init_state makes for the MLP at uniform
  s=0.5 (random scores from split(PRNGKey(8), 2), top-k): 24 and 12 ones.
"""
from __future__ import annotations

import functools
import os

import jax

if not hasattr(jax, "tree_map"):          # jaxpruner (2024) still uses the removed alias
    jax.tree_map = jax.tree_util.tree_map

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxpruner  # noqa: E402
from jaxpruner import mask_calculator  # noqa: E402
from jaxpruner import sparsity_distributions as sd  # noqa: E402
from jaxpruner.algorithms import pruners  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sparse_reference.npz")
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)


def _conv(name, cin, cout, k=3):
    return name, (k, k, cin, cout)


def _models():
    lenet = [("fc1", (784, 300)), ("fc2", (300, 100)), ("fc3", (100, 10))]
    rn = [_conv("conv0", 3, 16)]
    rn += [_conv(f"s1_conv{i}", 16, 16) for i in range(6)]
    rn += [_conv("s2_conv0", 16, 32)] + [_conv(f"s2_conv{i}", 32, 32) for i in range(1, 6)]
    rn += [_conv("s2_shortcut", 16, 32, k=1)]
    rn += [_conv("s3_conv0", 32, 64)] + [_conv(f"s3_conv{i}", 64, 64) for i in range(1, 6)]
    rn += [_conv("s3_shortcut", 32, 64, k=1)]
    rn += [("fc", (64, 10))]
    vgg, cin = [], 3
    for i, c in enumerate([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]):
        vgg.append(_conv(f"conv{i}", cin, c))
        cin = c
    vgg.append(("fc", (512, 10)))
    return {"lenet300": lenet, "resnet20": rn, "vgg16": vgg}


MODELS = _models()


def _params(layers):
    # Leaf values do not matter to the distributions (only shapes); zeros keep it cheap.
    return {name: {"kernel": np.zeros(shape, np.float32)} for name, shape in layers}


def _per_layer(tree, layers):
    return np.array([float(tree[name]["kernel"]) for name, _ in layers], np.float64)


def distributions(out):
    rng = np.random.default_rng(0)
    for m, layers in MODELS.items():
        names = [n for n, _ in layers]
        out[f"layers/{m}"] = np.array(names)
        out[f"shapes/{m}"] = np.array(["x".join(map(str, s)) for _, s in layers])
        sizes = np.array([int(np.prod(s)) for _, s in layers], np.int64)
        out[f"sizes/{m}"] = sizes
        params = _params(layers)
        shape_dict = {(n, "kernel"): s for n, s in layers}
        first = names[0]
        scores = {n: jnp.asarray(rng.random(s, dtype=np.float32)) for n, s in layers}
        for s in SPARSITIES:
            dists = {
                "uniform": _per_layer(sd.uniform(params, s), layers),
                "erk": _per_layer(sd.erk(params, s), layers),
                "erk_first_dense": _per_layer(
                    sd.erk(params, s, custom_sparsity_map={(first, "kernel"): 0.0}), layers),
            }
            er = sd.get_sparsities_erdos_renyi(shape_dict, s, include_kernel=False)
            dists["er"] = np.array([float(er[(n, "kernel")]) for n in names])
            p05 = sd.get_sparsities_erdos_renyi(shape_dict, s, erk_power_scale=0.5)
            dists["erk_p05"] = np.array([float(p05[(n, "kernel")]) for n in names])
            for d, v in dists.items():
                out[f"{d}/{m}/{s}"] = v
            for d in ("uniform", "erk", "erk_first_dense"):
                ones = [int(mask_calculator.topk_mask_calculator(scores[n], float(sp)).sum())
                        for n, sp in zip(names, dists[d])]
                out[f"{d}_ones/{m}/{s}"] = np.array(ones, np.int64)
            for d in ("uniform", "erk"):   # rigl sparse_utils.get_n_zeros: int(np.floor(sparsity * size))
                out[f"rigl_counts/{d}/{m}/{s}"] = np.array(
                    [sz - int(np.floor(sp * sz)) for sz, sp in zip(sizes, dists[d])], np.int64)
            # Random_Pruning uniform_plus (expected densities; masks there are Bernoulli draws).
            dens = 1.0 - s
            n_total = float(sizes.sum())
            sp = np.full(len(names), s, np.float64)
            sp[0] = 0.0
            if dens < 0.2:
                d2 = (n_total * dens - sizes[0] - sizes[-1] * 0.2) / n_total
                sp[1:-1] = 1.0 - d2
                sp[-1] = 0.8
            out[f"uniform_plus/{m}/{s}"] = np.clip(sp, 0.0, 1.0)


def topk(out):
    scores = np.array([1.0, 2.0, 2.0, 3.0, 2.0, 0.5, 2.0, 3.0, 2.0, 0.0], np.float32)
    sps = np.array([0.0, 0.25, 0.35, 0.5, 0.55, 0.65, 0.95, 1.0])
    masks = [np.asarray(mask_calculator.topk_mask_calculator(jnp.asarray(scores), float(x))) for x in sps]
    out["topk/scores"], out["topk/sparsities"], out["topk/masks"] = scores, sps, np.stack(masks)


def schedules(out):
    sched = jaxpruner.PolynomialSchedule(update_freq=10, update_start_step=10, update_end_step=110, power=3)
    steps = np.arange(131)
    out["poly/steps"] = steps
    out["poly/sparsity"] = np.array(
        [np.float32(sched.get_sparsity_at_step(0.9, jnp.int32(t))) for t in steps], np.float32)
    out["poly/is_update"] = np.array([bool(sched.is_mask_update_iter(jnp.int32(t))) for t in steps])

    # Gradual magnitude pruning through the real wrap_optax path.
    w = (np.random.default_rng(1).permutation(1000).astype(np.float32) + 1.0) / 1000.0
    params = {"w": {"kernel": jnp.asarray(w.reshape(20, 50))}}
    upd = jaxpruner.MagnitudePruning(
        scheduler=sched, sparsity_distribution_fn=functools.partial(sd.uniform, sparsity=0.9))
    tx = upd.wrap_optax(optax.sgd(0.1))
    state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    step = jax.jit(tx.update)
    dens = []
    for _ in steps:
        _, state = step(grads, state, params)
        dens.append(float(np.asarray(state.masks["w"]["kernel"]).mean()))
    out["gmp/density"] = np.array(dens)

    cos = optax.cosine_decay_schedule(0.3, 100)
    out["cosine/steps"] = steps
    out["cosine/drop_fraction"] = np.array([np.float32(cos(jnp.int32(t))) for t in steps], np.float32)


LAYERS = ("Dense_0", "Dense_1")
SHAPES = {"Dense_0": (8, 6), "Dense_1": (6, 4)}
STEP = 30


def _tree(d):
    return {l: {"kernel": jnp.asarray(d[l])} for l in LAYERS}


def _untree(t):
    return {l: np.asarray(t[l]["kernel"]) for l in LAYERS}


def _mlp_inputs():
    rng = np.random.default_rng(2024)
    dense = {l: rng.standard_normal(s).astype(np.float32) for l, s in SHAPES.items()}
    masks = {}
    for l, s in SHAPES.items():
        n = int(np.prod(s))
        flat = np.zeros(n, np.uint8)
        flat[rng.permutation(n)[: n // 2]] = 1
        masks[l] = flat.reshape(s)
    grads = {l: (rng.standard_normal(s) * 0.1).astype(np.float32) for l, s in SHAPES.items()}
    trace = {l: rng.uniform(0.1, 1.0, s).astype(np.float32) * rng.choice([-1, 1], s).astype(np.float32)
             for l, s in SHAPES.items()}
    mu = {l: (rng.standard_normal(s) * 0.01).astype(np.float32) for l, s in SHAPES.items()}
    nu = {l: rng.uniform(1e-5, 1e-3, s).astype(np.float32) for l, s in SHAPES.items()}
    params = {l: dense[l] * masks[l] for l in LAYERS}
    return dense, params, masks, grads, trace, mu, nu


def _updater(cls):
    return cls(
        scheduler=jaxpruner.PolynomialSchedule(update_freq=10, update_start_step=0, update_end_step=100),
        sparsity_distribution_fn=functools.partial(sd.uniform, sparsity=0.5),
        drop_fraction_fn=optax.cosine_decay_schedule(0.3, 100),
    )


def _one_update(cls, inner, params, masks, grads, inner_fn):
    upd = _updater(cls)
    tx = upd.wrap_optax(inner)
    p = _tree(params)
    state = tx.init(p)
    state = state._replace(
        masks=_tree({l: masks[l].astype(np.uint8) for l in LAYERS}),
        inner_state=inner_fn(state.inner_state),
        count=jnp.asarray(STEP, jnp.int32),
    )
    assert bool(upd.scheduler.is_mask_update_iter(state.count))
    updates, new_state = tx.update(_tree(grads), state, p)
    new_params = upd.post_gradient_update(optax.apply_updates(p, updates), new_state)
    return upd, state, updates, new_state, new_params


def sparse_trainers(out):
    dense, params, masks, grads, trace, mu, nu = _mlp_inputs()
    for l in LAYERS:
        out[f"mlp/params/{l}"] = params[l]
        out[f"mlp/dense_params/{l}"] = dense[l]
        out[f"mlp/masks/{l}"] = masks[l]
        out[f"mlp/grads/{l}"] = grads[l]
        out[f"mlp/trace/{l}"] = trace[l]
        out[f"mlp/mu/{l}"] = mu[l]
        out[f"mlp/nu/{l}"] = nu[l]
    out["mlp/step"] = np.int64(STEP)

    def set_trace(st):
        return (st[0]._replace(trace=_tree(trace)),) + tuple(st[1:])

    def set_adam(st):
        return (st[0]._replace(mu=_tree(mu), nu=_tree(nu)),) + tuple(st[1:])

    sgd = optax.sgd(0.1, momentum=0.9)
    for name, cls in (("rigl", jaxpruner.RigL), ("set", jaxpruner.SET)):
        upd, state, updates, new_state, new_params = _one_update(cls, sgd, params, masks, grads, set_trace)
        out[f"{name}/drop_fraction"] = np.float32(upd.drop_fraction_fn(state.count))
        for l in LAYERS:
            out[f"{name}/new_masks/{l}"] = np.asarray(new_state.masks[l]["kernel"])
            out[f"{name}/updates/{l}"] = np.asarray(updates[l]["kernel"])
            out[f"{name}/new_params/{l}"] = np.asarray(new_params[l]["kernel"])
            out[f"{name}/trace_after/{l}"] = np.asarray(new_state.inner_state[0].trace[l]["kernel"])
        # The intermediate (after-drop) masks: the same update_state call, eager, with the
        # updater's own top-k wrapped to record its first call per layer (drop), second (grow).
        calls = []

        def recording_topk(scores, sparsity, _f=upd.topk_fn):
            res = _f(scores, sparsity)
            calls.append(np.asarray(res))
            return res

        upd.topk_fn = recording_topk
        eager = upd.update_state(state, _tree(params), _tree(grads))
        assert len(calls) == 4
        for i, l in enumerate(LAYERS):
            assert np.array_equal(calls[2 * i + 1], out[f"{name}/new_masks/{l}"])
            assert np.array_equal(np.asarray(eager.masks[l]["kernel"]), out[f"{name}/new_masks/{l}"])
            out[f"{name}/dropped_mask/{l}"] = calls[2 * i]
        if name == "set":
            new_rng = jax.random.fold_in(upd.rng_seed, state.count)
            scores = pruners.generate_random_scores(_tree(params), new_rng)
            out["set/key_data"] = np.asarray(jax.random.key_data(new_rng)).astype(np.uint32)
            for l in LAYERS:
                out[f"set/grow_scores/{l}"] = np.asarray(scores[l]["kernel"])

    _, _, _, new_state, _ = _one_update(jaxpruner.RigL, optax.adam(1e-3), params, masks, grads, set_adam)
    for l in LAYERS:
        out[f"rigl_adam/new_masks/{l}"] = np.asarray(new_state.masks[l]["kernel"])
        out[f"rigl_adam/mu_after/{l}"] = np.asarray(new_state.inner_state[0].mu[l]["kernel"])
        out[f"rigl_adam/nu_after/{l}"] = np.asarray(new_state.inner_state[0].nu[l]["kernel"])

    # Ties: quantised magnitudes and gradients.
    rng = np.random.default_rng(7)
    qp = {l: (rng.choice([0.25, 0.5, 0.75], s) * rng.choice([-1.0, 1.0], s)).astype(np.float32) * masks[l]
          for l, s in SHAPES.items()}
    qg = {l: (rng.choice([0.0, 0.5, 1.0], s) * rng.choice([-1.0, 1.0], s)).astype(np.float32)
          for l, s in SHAPES.items()}
    _, _, _, new_state, new_params = _one_update(jaxpruner.RigL, sgd, qp, masks, qg, set_trace)
    for l in LAYERS:
        out[f"rigl_ties/params/{l}"] = qp[l]
        out[f"rigl_ties/grads/{l}"] = qg[l]
        out[f"rigl_ties/new_masks/{l}"] = np.asarray(new_state.masks[l]["kernel"])
        out[f"rigl_ties/new_params/{l}"] = np.asarray(new_params[l]["kernel"])

    # Unmasked params: grown entries revive their stale value.
    _, _, _, new_state, new_params = _one_update(jaxpruner.RigL, sgd, dense, masks, grads, set_trace)
    for l in LAYERS:
        assert np.array_equal(np.asarray(new_state.masks[l]["kernel"]), out[f"rigl/new_masks/{l}"])
        out[f"rigl_stale/new_params/{l}"] = np.asarray(new_params[l]["kernel"])

    # jaxpruner's own random initial masks for the MLP.
    st = _updater(jaxpruner.SET).init_state(_tree(params))
    for l in LAYERS:
        out[f"static_init/masks/{l}"] = np.asarray(st.masks[l]["kernel"])


def main():
    out = {}
    distributions(out)
    topk(out)
    schedules(out)
    sparse_trainers(out)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}: {len(out)} arrays, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
