"""Reference fidelity (DESIGN invariant 7): lth's vision models, BatchNorm, optimizers and
initializers equal PyTorch's, and its GraSP scores the SynFlow code's, checked against outputs stored
by tests/data/make_torch_reference.py (torch is never imported here). Weights come from that
script's `fill`, a pure numpy function."""
import os
import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lth.harness.trainer import trainer_from_config
from lth.models import zoo
from lth.models.inits import Init
from lth.pruning import masks as M
from lth.scores import make_scorer
from lth.training.state import TrainState

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "data"))
import make_torch_reference as R  # noqa: E402

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "torch_reference.npz"))
PLANS = {"vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
         "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]}
VGG_INDEX = {m: {idx: k for k, idx in enumerate(i for i, s in enumerate(plan) if s != "M")}
             for m, plan in PLANS.items()}


def lth_module(model: str, torch_module: str):
    """The lth module path (tuple) of a PyTorch module name, or None where lth has no counterpart."""
    if torch_module == "fc":
        return ("out",)
    if model == "lenet_300_100":
        return ("fc_" + re.fullmatch(r"fc_layers\.(\d+)", torch_module).group(1),)
    if model == "lenet5":
        return ({"conv1": "conv_0", "conv2": "conv_1", "fc1": "fc_0", "fc2": "fc_1"}[torch_module],)
    if model in VGG_INDEX:
        idx, kind = re.fullmatch(r"layers\.(\d+)\.(conv|bn)", torch_module).groups()
        return (f"{kind}_{VGG_INDEX[model][int(idx)]}",)
    if model == "resnet20":
        if torch_module in ("conv", "bn"):
            return ({"conv": "stem", "bn": "stem_bn"}[torch_module],)
        k, rest = re.fullmatch(r"blocks\.(\d+)\.(.+)", torch_module).groups()
        k = int(k)
        sub = {"conv1": "conv_0", "bn1": "bn_0", "conv2": "conv_1", "bn2": "bn_1", "shortcut.0": "shortcut",
               "shortcut.1": "shortcut_bn"}[rest]
        return (f"stage{k // 3}_block{k % 3}", sub)
    if model == "resnet18":
        if torch_module.startswith("conv1."):
            return ({"0": "stem", "1": "stem_bn"}[torch_module[-1]],)
        s, b, rest = re.fullmatch(r"conv(\d)_x\.(\d)\.(.+)", torch_module).groups()
        if rest == "shortcut":
            return None  # SynFlow's Identity2d, fixed at 1: lth omits it
        sub = {"residual_function.0": "conv_0", "residual_function.1": "bn_0", "residual_function.3": "conv_1",
               "residual_function.4": "bn_1", "shortcut.0": "shortcut", "shortcut.1": "shortcut_bn"}[rest]
        return (f"stage{int(s) - 2}_block{b}", sub)
    raise KeyError(model)


def to_lth(model: str, torch_name: str, value: np.ndarray):
    """(collection, path, value in lth's layout) of a PyTorch tensor, or None."""
    module, leaf = torch_name.rsplit(".", 1)
    path = lth_module(model, module)
    if path is None:
        return None
    if leaf == "weight" and value.ndim == 4:
        return "params", path + ("kernel",), value.transpose(2, 3, 1, 0)
    if leaf == "weight" and value.ndim == 2:
        if model == "lenet5" and module == "fc1":  # torch flattens (C, H, W), lth (H, W, C)
            return "params", path + ("kernel",), value.reshape(120, 16, 5, 5).transpose(2, 3, 1, 0).reshape(400, 120)
        return "params", path + ("kernel",), value.T
    return ({"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
             "running_var": ("batch_stats", "var")}[leaf][0],
            path + ({"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf],), value)


def torch_tensors(model: str) -> dict:
    """name → shape of every tensor of the reference model (from the stored gradients and buffers)."""
    out = {}
    for key in REF.files:
        m = re.fullmatch(rf"{model}/(grad|after_step)/(.+)", key)
        if m:
            out[m.group(2)] = REF[key].shape
    return out


def set_path(tree, path, value):
    node = tree
    for p in path[:-1]:
        node = node[p]
    assert node[path[-1]].shape == value.shape, (path, node[path[-1]].shape, value.shape)
    node[path[-1]] = jnp.asarray(value)


def lth_model(name):
    shape, classes = R.MODELS[name]
    nhwc = (shape[1], shape[2], shape[0])
    model = zoo.build(name, classes, "kaiming_normal", nhwc, R.WIDTH.get(name, 1.0))
    # every leaf is overwritten below (checked), so only the structure is needed: no eager init
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *nhwc)))
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))
    filled = set()
    for tname, tshape in torch_tensors(name).items():
        hit = to_lth(name, tname, R.fill(tname, tshape))
        if hit is None:
            continue
        col, path, value = hit
        set_path(variables[col], path, value)
        filled.add((col, path))
    every = {(col, tuple(k.key for k in kp))
             for col in variables for kp, _ in jax.tree_util.tree_leaves_with_path(variables[col])}
    assert every == filled, f"lth leaves without a PyTorch counterpart: {sorted(every - filled)}"
    x, y = R.batch(name)
    return model, variables, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(y.astype(np.int32))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


SLOW_MODELS = ("resnet18", "resnet20", "vgg16")   # over ~20 s each on 2 cores: `make test-all`


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n
                                  for n in sorted(n for n in R.MODELS if n != "vgg11")])   # vgg11 (narrow): GraSP's
def test_logits_grads_and_batchnorm_equal_pytorch(name):
    model, variables, x, y = lth_model(name)
    assert rel_err(jax.jit(lambda v, xb: model.apply(v, xb, train=False))(variables, x),
                   REF[f"{name}/logits_eval"]) < 2e-5
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss_fn(params):
        if rest:
            logits, new = model.apply({"params": params, **rest}, x, train=True, mutable=list(rest))
        else:
            logits, new = model.apply({"params": params}, x, train=True), {}
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, new)

    (loss, (logits, new)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
    assert rel_err(logits, REF[f"{name}/logits_train"]) < 2e-5
    assert abs(float(loss) - float(REF[f"{name}/loss"])) < 2e-5 * abs(float(REF[f"{name}/loss"]))
    checked = 0
    scale = max(np.abs(REF[k]).max() for k in REF.files if k.startswith(f"{name}/grad/"))
    for tname in torch_tensors(name):
        key = f"{name}/grad/{tname}" if f"{name}/grad/{tname}" in REF.files else f"{name}/after_step/{tname}"
        hit = to_lth(name, tname, REF[key])
        if hit is None:
            continue
        col, path, want = hit
        got = grads if col == "params" else new["batch_stats"]
        for p in path:
            got = got[p]
        # gradients that are 0 in exact arithmetic (a conv bias before BatchNorm) are compared on the model's scale
        assert np.max(np.abs(np.asarray(got) - want)) <= 1e-4 * np.abs(want).max() + 2e-6 * scale, tname
        checked += 1
    assert checked == len(jax.tree.leaves(variables))


@pytest.mark.slow
def test_flax_batchnorm_running_variance_would_differ():
    """The check above can fail: PyTorch's running variance uses the unbiased batch variance."""
    name = "resnet20"
    x = np.asarray(REF[f"{name}/after_step/bn.running_var"])
    start = R.fill("bn.running_var", x.shape)
    model, variables, xb, _ = lth_model(name)
    _, new = model.apply(variables, xb, train=True, mutable=["batch_stats"])
    got = np.asarray(new["batch_stats"]["stem_bn"]["var"])
    n = xb.shape[0] * xb.shape[1] * xb.shape[2]
    biased = (got - 0.9 * start) * (n - 1) / n + 0.9 * start   # what a biased-variance update would store
    assert rel_err(got, x) < 1e-5 and rel_err(biased, x) > 1e-6


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_train_step_equals_pytorch_optimizer(opt):
    """Three steps of lth's train step (the masked one every command uses) equal torch.optim's."""
    model, variables, x, y = lth_model("lenet5")
    t = ml_collections.ConfigDict(dict(optimizer=opt, lr=0.05 if opt == "sgd" else 1e-3, momentum=0.9, nesterov=True,
                                       weight_decay=5e-4 if opt == "sgd" else 0.0, batch_size=8, duration="3it",
                                       schedule="constant", milestones="", gamma=0.1, warmup="0it", eval_every="1ep",
                                       eval_batch_size=8, clip_norm=0.0))
    trainer = trainer_from_config(model, t, 8)
    params = variables["params"]
    key = jax.random.PRNGKey(0)
    state = TrainState(params=params, model_state={}, opt_state=trainer.tx.init(params), masks=M.ones_like(params),
                       step=jnp.int32(0), rng=key, data_rng=key, diverged=jnp.int32(-1))
    step = jax.jit(trainer.train_step)   # one compile, not one per op
    for _ in range(3):
        state, _ = step(state, x, y)
    for tname in torch_tensors("lenet5"):
        _, path, want = to_lth("lenet5", tname, REF[f"optim/{opt}/{tname}"])
        got = state.params
        for p in path:
            got = got[p]
        assert rel_err(got, want) < 1e-4, (tname, rel_err(got, want))


def test_partial_last_batch_equals_pytorch_dataloader():
    """data.drop_last false (OpenLTH's recipes): an epoch of 10 examples at batch 4 is 3 steps, the last
    on 2 examples — run as a padded batch of 4 whose 2 pads weigh 0 in the loss and in BatchNorm's
    statistics. Losses, weights and running statistics equal PyTorch's DataLoader epoch
    (tests/data/make_partial_batch_reference.py, VGG-11-BN, SGD with momentum and weight decay)."""
    import make_partial_batch_reference as P

    ref = np.load(os.path.join(os.path.dirname(__file__), "data", "partial_batch_reference.npz"))
    model, variables, _, _ = lth_model(P.MODEL)
    x, y = P.data()
    t = ml_collections.ConfigDict(dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
                                       batch_size=P.BATCH, duration="1ep", schedule="constant", milestones="",
                                       gamma=0.1, warmup="0it", eval_every="1ep", eval_batch_size=8, clip_norm=0.0))
    trainer = trainer_from_config(model, t, P.N, drop_last=False)
    assert trainer.steps_per_epoch == 3 and trainer.partial
    one = lambda a: jnp.asarray(a)[None]  # noqa: E731  (a replicate axis of 1)
    params, ms = jax.tree.map(one, variables["params"]), {"batch_stats": jax.tree.map(one, variables["batch_stats"])}
    key = jax.random.PRNGKey(0)[None]
    state = trainer.new_state(params, ms, M.ones_like(params), 0, key, key)
    order = jnp.asarray(np.concatenate([np.arange(P.N), np.arange(2)]))[None]   # in order, padded to 3 × 4
    state, losses = trainer.run_steps(state, order, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(y, jnp.int32), 3)
    np.testing.assert_allclose(np.asarray(losses)[:, 0], ref["losses"], rtol=2e-5)
    checked = 0
    for tname in ref.files:
        hit = None if tname in ("losses", "meta/torch_version") else to_lth(P.MODEL, tname, ref[tname])
        if hit is None:
            continue
        col, path, want = hit
        got = state.params if col == "params" else state.model_state["batch_stats"]
        for p in path:
            got = got[p]
        assert rel_err(np.asarray(got)[0], want) < 5e-5, (tname, rel_err(np.asarray(got)[0], want))
        checked += 1
    assert checked == len(jax.tree.leaves(variables))


@pytest.mark.slow
def test_grasp_equals_synflow_code_prunable_weights_only():
    """lth's `grasp` (through the Scorer, as every command runs it) equals the SynFlow code's GraSP
    (Pruners/pruners.py class GraSP, restated in make_torch_reference.py) on VGG-11-BN with conv
    biases and BatchNorm γ/β: derivatives w.r.t. the conv / linear weights only, the mask inside the
    network (masked case: g and Hg are 0 at pruned weights), eval mode, temperature 200, gradients
    summed over 2 batches. The variant that also differentiates the biases and γ/β (lth's former
    definition) is far outside the tolerance."""
    name = R.GRASP_MODEL
    model, variables, x, y = lth_model(name)
    params = variables["params"]
    prunable = M.prunable_tree(params, r".*kernel")
    weights = [t for t in torch_tensors(name) if f"grasp/dense/raw/{t}" in REF.files]
    assert len(weights) == sum(jax.tree.leaves(prunable)) == 9

    def flat(tree, case):   # (`tree`'s leaves, the reference's scores) over the prunable weights, flat
        got, want = [], []
        for t in weights:
            _, path, w = to_lth(name, t, REF[f"grasp/{case}/raw/{t}"])
            node = tree
            for p in path:
                node = node[p]
            got.append(np.asarray(node, np.float64).ravel())
            want.append(np.asarray(w, np.float64).ravel())
        return np.concatenate(got), np.concatenate(want)

    scorer = make_scorer("grasp", lambda v, xb: model.apply(v, xb, train=False), variables, prunable, (x, y),
                         x.shape[1:], batches=R.GRASP_BATCHES)
    for case in ("dense", "masked"):
        masks = jax.tree.map(np.asarray, M.ones_like(params))
        if case == "masked":
            for t in weights:
                _, path, m = to_lth(name, t, R.grasp_mask(t, REF[f"grasp/dense/raw/{t}"].shape))
                set_path(masks, path, m.astype(bool))
        scores = scorer(variables, masks, jax.random.PRNGKey(0))
        got, want = flat(scores, case)
        keep, _ = flat(masks, case)
        keep = keep.astype(bool)
        assert np.all(want[~keep] == 0) and np.all(np.isneginf(got[~keep]))   # pruned: 0 there, -inf here
        scale = np.abs(want).max()
        np.testing.assert_allclose(got[keep], want[keep], rtol=1e-4, atol=1e-5 * scale, err_msg=case)
        # the reference divides by |Σ scores| + 1e-10, a positive scalar: the same ranking
        norm = float(REF[f"grasp/{case}/norm"])
        assert abs(abs(got[keep].sum()) + 1e-10 - norm) < 1e-4 * norm
        for s, pr in zip(jax.tree.leaves(scores), jax.tree.leaves(prunable)):
            assert pr or not np.any(np.asarray(s))   # biases, γ/β: never differentiated, score 0
    _, dense = flat(scores, "dense")
    _, whole = flat(scores, "all_params")
    assert np.max(np.abs(whole - dense)) > 100 * 1e-5 * np.abs(dense).max()   # the whole-tree variant is far off


def sample_stats(init_fn, shape, seeds):
    rows = []
    for s in range(seeds):
        v = np.asarray(init_fn(jax.random.PRNGKey(s), shape, jnp.float32)).ravel().astype(np.float64)
        sd = v.std()
        rows.append([sd, np.mean(np.abs(v) > 2 * sd), np.mean(np.abs(v) > 3 * sd), np.abs(v).max() / sd])
    return np.asarray(rows)


FLAX_SHAPES = {"conv": (3, 3, 32, 64), "linear": (784, 300)}   # the PyTorch shapes in lth's layout


def close_to_torch(init_fn, name, kind) -> bool:
    ref = REF[f"init/{name}/{kind}"]
    ours = sample_stats(init_fn, FLAX_SHAPES[kind], R.INIT_SEEDS)
    n = np.prod(FLAX_SHAPES[kind]) * R.INIT_SEEDS
    std_ok = abs(ours[:, 0].mean() / ref[:, 0].mean() - 1) < 5 / np.sqrt(n) + 2e-3
    tails_ok = all(abs(ours[:, j].mean() - ref[:, j].mean()) < 5 * np.sqrt(max(ref[:, j].mean(), 1e-4) / n) * np.sqrt(2)
                   for j in (1, 2))
    return bool(std_ok and tails_ok)


@pytest.mark.parametrize("name", R.INIT_NAMES)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_initializers_match_pytorch_distribution(name, kind):
    assert close_to_torch(Init(name).kernel_fn(), name, kind)


def test_untruncated_tails_and_truncated_flax_variant_fails():
    ref = REF["init/kaiming_normal/conv"]
    assert 0.040 < ref[:, 1].mean() < 0.051 and ref[:, 2].mean() > 0.001   # N(0,1): 4.55% beyond 2σ, 0.27% beyond 3σ
    assert not close_to_torch(Init("kaiming_truncated_normal").kernel_fn(), "kaiming_normal", "conv")
    trunc = sample_stats(Init("kaiming_truncated_normal").kernel_fn(), FLAX_SHAPES["conv"], 2)
    assert trunc[:, 2].max() == 0.0   # Flax's he_normal: nothing beyond 3σ


def test_torch_default_bias_and_bn_uniform():
    for kind, fan_in in (("linear", 784), ("conv", 32 * 9)):
        ref = REF[f"init/torch_default_bias/{kind}"]
        n_out = 300 if kind == "linear" else 64
        b = np.concatenate([np.asarray(Init("kaiming_normal", "torch_default").bias_fn(fan_in)(jax.random.PRNGKey(s),
                                                                                               (n_out,)))
                            for s in range(8)])
        assert np.abs(b).max() <= 1 / np.sqrt(fan_in) and abs(b.std() / ref[:, 0].mean() - 1) < 0.1
    g = np.asarray(Init(bn="uniform").bn_scale_fn()(jax.random.PRNGKey(0), (100_000,)))
    mean, std, lo, hi = REF["init/bn_uniform"]
    assert abs(g.mean() - mean) < 0.005 and abs(g.std() - std) < 0.005 and g.min() >= 0 and g.max() < 1


def test_model_inits_follow_the_spec():
    """Built models draw what their Init says: fans as PyTorch computes them, per-layer overrides."""
    m = zoo.build("resnet18", 10, zoo.synflow_init("resnet18"), (16, 16, 3), width=0.25)
    p = jax.jit(m.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]   # jitted: ~3× faster than eager
    w = np.asarray(p["stage1_block0"]["conv_1"]["kernel"])          # (3, 3, 32, 32): fan_out = 32·9
    assert abs(w.std() / np.sqrt(2 / (32 * 9)) - 1) < 0.05
    out = p["out"]
    bound = 1 / np.sqrt(out["kernel"].shape[0])
    assert np.abs(out["kernel"]).max() <= bound and np.abs(out["bias"]).max() <= bound and np.abs(out["bias"]).max() > 0
    v = jax.jit(zoo.build("vgg11", 10, Init("kaiming_normal", "torch_default", "uniform"), (16, 16, 3),
                          width=0.25).init)(
        jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    gamma = np.asarray(v["params"]["bn_1"]["scale"])
    assert gamma.min() >= 0 and gamma.max() < 1 and gamma.std() > 0.1
    assert np.abs(np.asarray(v["params"]["conv_1"]["bias"])).max() <= 1 / np.sqrt(16 * 9)
