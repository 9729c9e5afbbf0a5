"""CIFAR zoo: parameter counts, BatchNorm modes, masked conv training, augmentation, IMP on mock
CIFAR through the same loop (data-parallel and replicate-parallel runs: tests/test_devices.py)."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from lth.data.augment import crop_flip
from lth.models import zoo
from lth.pruning import masks as M
from lth.studies import lottery

COUNTS = {  # (all params, conv/dense kernels, prunable tensors) on CIFAR-10 at width 1
    "vgg11": (9_231_114, None, 9), "vgg16": (14_728_266, 14_715_584, 14), "vgg19": (20_040_522, None, 17),
    # ResNet-18: PyTorch counts 11,174,986 for the SynFlow code's model, 1,024 of them its frozen
    # Identity2d ones, which lth omits (see lth/models/resnet.py).
    "resnet20": (272_474, None, 22), "resnet18": (11_174_986 - 1_024, 11_164_352, 21),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name):
    model = zoo.build(name, 10, "kaiming_normal", (32, 32, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    prunable = M.prunable_tree(v["params"], r".*kernel")
    total, kernels, tensors = COUNTS[name]
    assert M.num_params(v["params"]) == total
    assert sum(jax.tree.leaves(prunable)) == tensors
    if kernels:
        assert sum(x.size for x, p in zip(jax.tree.leaves(v["params"]), jax.tree.leaves(prunable)) if p) == kernels


@pytest.mark.parametrize("name", ["vgg11"] + [pytest.param(n, marks=pytest.mark.slow)
                                               for n in ("resnet20", "resnet18")])
def test_forward_shapes_and_batchnorm_modes(name):
    import dataclasses

    from lth.models.inits import coerce
    # XLA's convolution: compiles ~4× faster here than the GEMM path (tested against it in test_models_data)
    model = zoo.build(name, 100, dataclasses.replace(coerce("kaiming_normal"), conv_impl="xla"), (32, 32, 3),
                           width=0.125)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3)) * 3 + 1
    v = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])   # jitted: one compile, not one per op
    assert set(v) == {"params", "batch_stats"}
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))   # one compile per mode and shape
    logits, new = apply(v, x, train=True, mutable=("batch_stats",))
    assert logits.shape == (4, 100)
    before, after = jax.tree.leaves(v["batch_stats"]), jax.tree.leaves(new["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))  # train mode updates running stats
    v2 = {"params": v["params"], **new}
    full = apply(v2, x, train=False)
    single = apply(v2, x[:1], train=False)  # eval mode: per-example, independent of the batch
    np.testing.assert_allclose(full[:1], single, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception):
        apply(v2, x, train=True)  # train mode must be allowed to mutate batch_stats


def test_resnet_width_multiplier_and_bad_shape():
    from lth.errors import UserError

    m = zoo.build("resnet20", 10, "kaiming_normal", (32, 32, 3), width=2)
    v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert v["params"]["stem"]["kernel"].shape == (3, 3, 3, 32)
    with pytest.raises(UserError, match="vgg16.*32, 32"):
        zoo.build("vgg16", 10, "kaiming_normal", (32, 32), 1.0)
    with pytest.raises(UserError, match="width 0"):
        zoo.build("vgg16", 10, "kaiming_normal", (32, 32, 3), 0.0)


def test_augmentation_changes_batch_is_reproducible_and_keeps_content():
    x = jax.random.uniform(jax.random.PRNGKey(0), (16, 8, 8, 3))
    a, b = crop_flip(jax.random.PRNGKey(5), x), crop_flip(jax.random.PRNGKey(5), x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, x) and not np.array_equal(a, crop_flip(jax.random.PRNGKey(6), x))
    # each output is a shifted (zero-filled) and maybe flipped copy: its nonzero pixels come from the input
    for i in range(16):
        vals = np.asarray(a[i]).ravel()
        assert np.isin(vals[vals != 0], np.asarray(x[i]).ravel()).all()


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) for m in ("resnet20", "vgg11")])
def test_openlth_recipe_on_a_torchvision_cifar_folder_without_tensorflow(model, tmp_path, monkeypatch):
    """`lth lottery --config configs/openlth_cifar_resnet_20.py --set data.data_dir=PATH` on a
    (tiny) cifar-10-batches-py folder, tfds unavailable: OpenLTH's epochs of ceil(N / B) steps with
    a partial last batch, one IMP level, then `lth compress` of the ticket."""
    from test_data_files import write_cifar

    from lth.cli import main
    from lth.harness.config import load_config

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", per_batch=10, n_test=16)   # 50 train, 16 test
    sets = ["model.width=0.125", f"data.data_dir={tmp_path / 'data'}", "train.batch_size=16", "train.duration=8it",
            "train.eval_every=4it", "run.checkpoint_every=4it", "lottery.levels=1", "lottery.controls=",
            "lottery.rewind=2it", "train.eval_batch_size=32", "model.conv_impl=xla", "run.progress=False",
            "run.tensorboard=false"]   # XLA's convolution: it compiles faster; gemm has its own tests
    config = os.path.join(ROOT, "configs", "openlth_cifar_resnet_20.py")
    run = tmp_path / "run"
    assert main(["lottery", "--config", config, "--run-dir", str(run)] + [a for x in sets for a in ("--set", x)]) == 0
    summary = json.load(open(run / "summary.json"))
    assert [e["level"] for e in summary["levels"]] == [0, 1]
    assert abs(summary["levels"][1]["density"] - 0.8) < 0.01
    assert not any((run / d / "tensorboard").exists() for d in os.listdir(run))   # run.tensorboard=false
    s = lottery.setup(load_config(config, sets))
    assert s.trainer.steps_per_epoch == 4 and s.trainer.partial      # ceil(50 / 16): the last batch holds 2
    from lth.harness import checkpoint
    p, ms = s.trainer.init_replicates(lottery.keys(s, "init"), s.dataset.input_shape)
    like = s.trainer.new_state(p, ms, M.ones_like(p), 0, lottery.keys(s, "train"), lottery.keys(s, "data"))
    final = checkpoint.load(str(run / "level_1" / "final"), like)
    for w, m in zip(jax.tree.leaves(final.params), jax.tree.leaves(final.masks)):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0)  # pruned conv kernels exactly 0 after SGD+momentum+wd
    assert np.mean(np.asarray(final.masks["out"]["kernel"])) < 1   # OpenLTH prunes the output layer too
    assert not tree_equal(final.model_state, ms)  # BatchNorm statistics were trained
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(final.model_state))
    if model == "resnet20":  # `lth compress` on a conv net with BatchNorm: PTQ, convolutions quantized
        import lth
        res = lth.compress(str(run), 1).summary
        ptq = res["stages"]["ticket_int8_ptq"]
        assert ptq["zeros_kept"]
        assert res["stages"]["ticket_f32"]["test_accuracy"] == pytest.approx(summary["levels"][1]["test_accuracy"],
                                                                              abs=1e-6)
        assert "stage0_block0/conv_0/kernel" in ptq["quantized_layers"] and "out/kernel" in ptq["quantized_layers"]
        assert res["bytes"]["sparse_int8"] < res["bytes"]["sparse_f32"] < res["bytes"]["dense_f32"]


@pytest.mark.slow
def test_stability_smoke_on_a_cifar_folder_with_batchnorm(tmp_path, monkeypatch):
    """`lth stability` on a narrow VGG with BatchNorm (a tiny cifar-10-batches-py folder), statistics
    recomputed along the path."""
    from test_data_files import write_cifar

    from lth.harness.config import load_config
    from lth.harness.run import setup
    from lth.harness.rundir import open_run_dir
    from lth.studies import stability

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", per_batch=10, n_test=16)
    cfg = load_config(os.path.join(ROOT, "configs", "openlth_cifar_vgg_16.py"), [
        "model.name=vgg11", "model.width=0.125", f"data.data_dir={tmp_path / 'data'}", "train.batch_size=16",
        "train.duration=6it", "train.eval_every=6it", "train.eval_batch_size=32", "model.conv_impl=xla",
        "run.progress=False", "stability.rewind_points=2it", "stability.alphas=3", "stability.bn_batches=2"])
    st = setup(cfg, stability.COMMAND)
    d = str(tmp_path / "stab")
    open_run_dir(d, cfg, stability.COMMAND)
    summary = stability.run(st, d, log=lambda *_: None)
    (p,) = summary["points"]
    assert (p["level"], p["k"], summary["bn"]) == (0, 2, "recompute")
    assert np.isfinite(p["test_barrier"]) and len(p["test_error"][0]) == 3 and p["test_barrier"] >= 0


def tree_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))




def test_batch_not_divisible_by_devices_is_refused():
    from types import SimpleNamespace

    from lth.errors import UserError
    from lth.harness.config import base
    from lth.harness.trainer import trainer_from_config
    from lth.training.devices import make_mesh

    cfg = base().train
    cfg.batch_size = 50
    with pytest.raises(UserError, match="batch_size 50 is not divisible by the 3 devices"):
        trainer_from_config(zoo.build("lenet_8", 10, "kaiming_normal", (40,)), cfg, 500,
                     mesh=SimpleNamespace(size=3, shape={"replicas": 1, "data": 3}))
    with pytest.raises(UserError, match="run.devices 9"):
        make_mesh(9)


@pytest.mark.slow
def test_synflow_figure_6_reproduction_runs_end_to_end_on_a_fake_cifar100_folder(tmp_path, capsys):
    """experiments/reproduce_synflow_fig6.py --smoke on a tiny cifar-100-python folder: every score of
    the figure pruned and trained, the table printed beside the published numbers."""
    import importlib.util

    from test_data_files import write_cifar
    write_cifar(tmp_path / "data" / "cifar-100-python", name="cifar100", per_batch=40, n_test=16)
    spec = importlib.util.spec_from_file_location("fig6", os.path.join(ROOT, "experiments",
                                                                       "reproduce_synflow_fig6.py"))
    fig6 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig6)
    assert fig6.main(["--data-dir", str(tmp_path / "data"), "--smoke", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    for method, pub in fig6.PUBLISHED.items():
        line = next(x for x in out.splitlines() if x.startswith(f"| {method} |"))
        assert f"| {pub[0]} |" in line and not line.split("|")[2].strip().startswith("-")
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert {a["method"] for a in summary["arms"]} == set(fig6.PUBLISHED)
    assert summary["config"]["data"]["name"] == "cifar100" and summary["config"]["pai"]["batches"] == 1
