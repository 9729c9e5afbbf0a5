"""`lth compress`: int8 quantization keeps zeros and is within half a step, sizes add up, the command
runs PTQ, QAT and QAT + KD on a tiny ticket, and bad input is one line, exit 2, nothing written."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import LOTTERY
from test_cli import fails, snapshot

from lth.cli import main
from lth.compression import quantize as Q
from lth.harness.config import base
from lth.models import zoo
from lth.models.inits import Init
from lth.pruning import masks as M
from lth.studies import compress as C

pytestmark = pytest.mark.xdist_group("compress")   # its module fixture is computed once, on one worker


def sparse_mlp(density=0.3, seed=0):
    model = zoo.build("lenet_64_32", 10, Init("kaiming_normal"), (40,), 1.0)
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 40)))["params"]
    prunable = M.prunable_tree(params, r".*kernel")
    rng = np.random.default_rng(seed)
    masks = jax.tree.map(lambda p, pr: jnp.asarray(rng.random(p.shape) < density) if pr else jnp.ones(p.shape, bool),
                         params, prunable)
    return model, M.apply(params, masks), masks, prunable


@pytest.mark.parametrize("activations", ["none", "dynamic", "static"])
def test_zero_stays_zero_and_dequantized_within_half_a_step(activations):
    model, params, masks, prunable = sparse_mlp()
    cfg = base()
    cfg.compress.activations = activations
    calib = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 40))
    ptq, qp = Q.quantize(model, cfg, params, {}, calib)
    q = Q.quantized_leaves(qp)
    assert sorted(q) == ["fc_0/kernel", "fc_1/kernel", "out/kernel"]
    flat_p = dict(zip(M.leaf_paths(params), jax.tree.leaves(params)))
    flat_m = dict(zip(M.leaf_paths(masks), jax.tree.leaves(masks)))
    for path, leaf in q.items():
        w, m = np.asarray(flat_p[path]), np.asarray(flat_m[path])
        assert leaf.qvalue.dtype == jnp.int8 and np.shape(leaf.scale) == (1, w.shape[1])   # per output channel
        assert np.all(np.asarray(leaf.qvalue)[~m] == 0)                                    # the mask survives
        step = np.asarray(leaf.scale, np.float32)
        assert np.all(np.abs(Q.dequantize(leaf) - w) <= step / 2 * (1 + 1e-4))   # qwix: step = absmax / 127.5
        assert np.abs(np.asarray(leaf.qvalue)).max() == 127                                # symmetric absmax
    x = calib[0]
    y, yq = model.apply({"params": params}, x), ptq.apply({"params": qp}, x)
    err = float(jnp.max(jnp.abs(y - yq))) / float(jnp.max(jnp.abs(y)))
    # static scales are qwix's mean over calibration examples of each example's absmax: values past it clip
    assert err < (0.02 if activations == "none" else 0.1 if activations == "dynamic" else 0.5), err


def test_sizes_take_the_cheapest_format_per_layer_and_count_batchnorm():
    """Each layer in min(dense, bitmask, indices) bytes, per column: fc_0 at 30% density → bitmask in
    both; fc_1 at 90% → bitmask in f32 (3.725 B/entry < 4) but dense in int8 (1.025 > 1); out dense →
    dense in both (values + bitmask would cost more than the layer). BatchNorm statistics are counted."""
    model, params, masks, prunable = sparse_mlp(density=0.3)
    rng = np.random.default_rng(1)
    masks["fc_1"]["kernel"] = jnp.asarray(rng.random((64, 32)) < 0.9)
    masks["out"]["kernel"] = jnp.ones((32, 10), bool)
    params = M.apply(params, masks)
    stats = {"batch_stats": {"bn": {"mean": jnp.zeros(7), "var": jnp.ones(7)}}}
    _, qp = Q.quantize(model, base(), params, {}, jnp.zeros((1, 4, 40)))
    out = Q.sizes(params, masks, prunable, Q.quantized_leaves(qp), stats)
    rows = {r["path"]: r for r in out["leaves"]}
    n_all = sum(int(np.size(p)) for p in jax.tree.leaves(params)) + 14
    assert out["dense_f32"] == 4 * n_all
    assert out["sparse_f32"] == sum(r["f32_bytes"] for r in rows.values())
    assert out["sparse_int8"] == sum(r["int8_bytes"] for r in rows.values())
    nz = {k: int(np.count_nonzero(np.asarray(masks[k]["kernel"]))) for k in ("fc_0", "fc_1", "out")}
    scales = {"fc_0": 4 * 64, "fc_1": 4 * 32, "out": 4 * 10}
    assert (rows["fc_0/kernel"]["f32_bytes"], rows["fc_0/kernel"]["int8_bytes"]) == \
        (4 * nz["fc_0"] + 320, nz["fc_0"] + 320 + scales["fc_0"])           # 2560 entries: bitmask 320 B
    assert (rows["fc_1/kernel"]["f32_bytes"], rows["fc_1/kernel"]["int8_bytes"]) == \
        (4 * nz["fc_1"] + 256, 2048 + scales["fc_1"])                       # int8: dense 2048 < nnz + 256
    assert (rows["out/kernel"]["f32_bytes"], rows["out/kernel"]["int8_bytes"]) == (4 * 320, 320 + scales["out"])
    assert [rows[k]["locate"] for k in ("fc_0/kernel", "fc_1/kernel", "out/kernel")] == ["bitmask", "bitmask", "dense"]
    assert rows["fc_1/kernel"]["int8_locate"] == "dense"
    assert rows["fc_0/bias"]["f32_bytes"] == rows["fc_0/bias"]["int8_bytes"] == 4 * 64
    assert rows["batch_stats/bn/var"]["f32_bytes"] == rows["batch_stats/bn/var"]["int8_bytes"] == 28
    # indices win when very sparse; 4-byte indices past 65,536 entries
    assert Q.storage(1000, 10, 4) == {"bytes": 60, "how": "indices"}
    assert Q.storage(100000, 10, 4) == {"bytes": 80, "how": "indices"}
    assert Q.storage(30000, 30000, 1) == {"bytes": 30000, "how": "dense"}


@pytest.mark.slow
def test_compress_command_ptq_qat_and_distilled_qat(capsys, finished_run):
    assert main(["compress", "--run-dir", finished_run, "--level", "1", "--no-progress",
                 "--set", "compress.qat_duration=6it",
                 "--set", "train.distill.teacher=level_0", "--set", "train.distill.alpha=0.3"]) == 0
    text = capsys.readouterr().out
    for row in ("dense f32 (level 0)", "ticket f32 (level 1)", "ticket int8 PTQ", "ticket int8 QAT |", "QAT + KD"):
        assert row in text, text
    (res_dir,) = [d for d in os.listdir(os.path.join(finished_run, "compress"))
                  if os.path.isdir(os.path.join(finished_run, "compress", d, "ticket_int8_qat"))]
    res = json.load(open(os.path.join(finished_run, "compress", res_dir, "results.json")))
    st = res["stages"]
    assert st["ticket_int8_ptq"]["zeros_kept"] and st["ticket_int8_qat_kd"]["zeros_kept"]
    assert st["ticket_int8_qat_kd"]["teacher"].endswith("level_0")
    b = res["bytes"]
    assert b["sparse_int8"] < b["sparse_f32"] < b["dense_f32"]
    # the ticket's f32 accuracy is the level's own (same weights, same test set)
    level = json.load(open(os.path.join(finished_run, "level_1", "metrics.json")))["replicates"][0]["test_accuracy"]
    assert st["ticket_f32"]["test_accuracy"] == pytest.approx(level, abs=1e-6)
    # QAT kept the mask: fine-tuned weights are zero where the ticket's are
    from lth.harness import checkpoint
    assert checkpoint.exists(os.path.join(finished_run, "compress", res_dir, "ticket_int8_qat", "final"))
    # QAT kept the mask: the fine-tuned weights are zero wherever the ticket's are, and the mask is the ticket's
    like = checkpoint.load(os.path.join(finished_run, "level_1", "final"), _like(finished_run))
    qat = checkpoint.load(os.path.join(finished_run, "compress", res_dir, "ticket_int8_qat", "final"), like)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(qat.masks), jax.tree.leaves(like.masks)))
    assert all(not np.any(np.asarray(p)[~np.asarray(m)])
               for p, m in zip(jax.tree.leaves(qat.params), jax.tree.leaves(qat.masks)))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(qat.params), jax.tree.leaves(like.params)))


def _like(run_dir):
    """A TrainState template of the run's model (for loading its checkpoints)."""
    from lth.harness.run import init_variables, keys, setup
    s = setup(C.run_config(run_dir), C.COMMAND)
    p, ms = init_variables(s, keys(s, "init"))
    return s.trainer.new_state(p, ms, M.ones_like(p), 0, keys(s, "train"), keys(s, "data"))


def test_default_level_is_the_sparsest_within_one_std_of_dense(tmp_path):
    """Dense 0.90 ± 0.02 over replicates: levels at ≥ 0.88 qualify; the sparsest of them is chosen."""
    accs = {0: [0.88, 0.92], 1: [0.91, 0.91], 2: [0.87, 0.895], 3: [0.60, 0.62], 4: [0.95, None]}
    for lv, a in accs.items():
        os.makedirs(tmp_path / f"level_{lv}")
        json.dump({"replicates": [{"test_accuracy": x} for x in a]},
                  open(tmp_path / f"level_{lv}" / "metrics.json", "w"))
    assert C.choose_level(str(tmp_path), None) == 4         # 0.95 from its healthy replicate
    os.remove(tmp_path / "level_4" / "metrics.json")
    assert C.choose_level(str(tmp_path), None) == 2         # 0.8825 >= 0.88; level 3 is not
    assert C.choose_level(str(tmp_path), 3) == 3


def test_compress_bad_input_one_line_exit_2_nothing_written(capsys, finished_run, tmp_path):
    before = snapshot(finished_run)
    fails(capsys, ["compress", "--run-dir", finished_run, "--level", "7"], "level 7", "allowed: 0, 1")
    fails(capsys, ["compress", "--run-dir", str(tmp_path / "nope")], "does not exist")
    fails(capsys, ["compress", "--run-dir", finished_run, "--set", "train.lr=1"], "train.lr", "compress.*")
    fails(capsys, ["compress", "--run-dir", finished_run, "--set", "compress.activations=int4"], "'int4'", "dynamic")
    fails(capsys, ["compress", "--run-dir", finished_run, "--set", "train.distill.teacher=level_5"],
          "level_5", "level_0")
    # a teacher trained on another dataset
    other = tmp_path / "other"
    shutil.copytree(finished_run, other, ignore=shutil.ignore_patterns("compress", ".lock"))
    cfg = json.load(open(other / "config.json"))
    cfg["config"]["data"]["name"] = "fashion_mnist"
    json.dump(cfg, open(other / "config.json", "w"))
    fails(capsys, ["compress", "--run-dir", finished_run, "--set", f"train.distill.teacher={other}/level_0"],
          "fashion_mnist", "same inputs")
    after = snapshot(finished_run)
    assert {k: v for k, v in after.items() if not k.startswith("compress")} == before or after == before
    assert not any(k.startswith("compress") and k not in before for k in after)


@pytest.mark.slow
def test_physical_stages_shrunk_factorized_and_timed(capsys, finished_run):
    """`lth compress` with every physical stage on the tiny ticket: the shrunk model scores as the
    masked one, the factorized one has fewer parameters and is fine-tuned, every stage is timed
    beside dense; bad settings are one line, exit 2, nothing written."""
    before = snapshot(finished_run)
    for bad, needle in (("compress.rank=25", "rank 25 is above layer fc_0/kernel's size 40×24"),
                        ("compress.energy=1.5", "compress.energy 1.5 out of range"),
                        ("compress.heads=0.5", "has no attention heads")):
        fails(capsys, ["compress", "--run-dir", finished_run, "--level", "1", "--set", "compress.factorize=fc_0/kernel",
                       "--set", "compress.rank=0" if "energy" in bad else "compress.rank=4", "--set", bad], needle)
    assert snapshot(finished_run) == before
    assert main(["compress", "--run-dir", finished_run, "--level", "1", "--no-progress",
                 "--set", "compress.shrink=true",
                 "--set", "compress.factorize=fc_0/kernel", "--set", "compress.rank=4",
                 "--set", "compress.finetune=4it",
                 "--set", "compress.speed=true", "--set", "compress.speed_repeats=2"]) == 0
    text = capsys.readouterr().out
    assert "| factorized, fine-tuned |" in text and "speed-up b64" in text, text
    (res_dir,) = [d for d in os.listdir(os.path.join(finished_run, "compress"))
                  if os.path.isdir(os.path.join(finished_run, "compress", d, "factorized_ft"))]
    st = json.load(open(os.path.join(finished_run, "compress", res_dir, "results.json")))["physical"]
    assert list(st) == ["dense_f32", "ticket_f32", "ticket_int8", "ticket_shrunk", "ticket_shrunk_int8", "factorized",
                        "factorized_ft"]
    assert st["ticket_int8"]["test_accuracy"] == pytest.approx(
        json.load(open(os.path.join(finished_run, "compress", res_dir,
                                    "results.json")))["stages"]["ticket_int8_ptq"]["test_accuracy"])
    assert st["ticket_int8"]["bytes"] < st["ticket_f32"]["bytes"] < st["dense_f32"]["bytes"]
    assert st["ticket_shrunk"]["test_accuracy"] == pytest.approx(st["ticket_f32"]["test_accuracy"], abs=1e-3)
    assert st["ticket_shrunk"]["params"] <= st["ticket_f32"]["params"] == st["dense_f32"]["params"]
    assert st["ticket_f32"]["nonzero"] < st["dense_f32"]["nonzero"]
    assert st["factorized"]["ranks"] == {"fc_0": 4}
    width = st["ticket_shrunk"]["units"]["fc_0"][1]          # fc_0 (40 × width) became 40×4 · 4×width
    assert st["factorized"]["params"] == st["ticket_shrunk"]["params"] - 40 * width + 4 * (40 + width)
    assert st["factorized_ft"]["params"] == st["factorized"]["params"]
    assert st["dense_f32"]["speedup_b1"] == 1.0
    assert all(r["latency_ms_b1"] > 0 and r["throughput_b64"] > 0 for r in st.values())


def test_conv_nets_quantized_per_channel_and_weight_only_refused():
    from lth.errors import UserError
    cfg = base()
    cfg.model.name = "lenet5"
    model = zoo.build("lenet5", 10, Init("kaiming_normal", conv_impl="xla"), (28, 28, 1), 1.0)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 28, 28, 1))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[0])["params"]
    params = jax.tree.map(lambda w: jnp.where(jnp.abs(w) < 0.05, 0.0, w), params)
    ptq, qp = Q.quantize(model, cfg, params, {}, x)          # dynamic activations (the default)
    k = Q.quantized_leaves(qp)["conv_1/kernel"]
    assert k.qvalue.shape == (5, 5, 6, 16) and np.shape(k.scale) == (1, 1, 1, 16)
    w = np.asarray(params["conv_1"]["kernel"])
    assert np.all(np.asarray(k.qvalue)[w == 0] == 0) and (w == 0).any()
    Q.check_supported(model, cfg, (28, 28, 1), jnp.float32)
    cfg.compress.activations = "none"
    with pytest.raises(UserError, match="'lenet5'.*allowed: dynamic, static"):
        Q.check_supported(model, cfg, (28, 28, 1), jnp.float32)
    Q.check_supported(zoo.build("lenet_8", 10, Init("kaiming_normal"), (40,), 1.0), cfg, (40,), jnp.float32)


@pytest.mark.slow
def test_imp_distilled_from_its_dense_level_and_from_another_model(finished_run, tmp_path):
    """train.distill.teacher=level_0: level 0 trains on labels alone (the same as the plain run),
    level 1 learns from level 0. Another run's level can teach a different model."""
    out = tmp_path / "kd"
    assert main(LOTTERY + ["--set", "lottery.levels=1", "--set", "lottery.controls=", "--out", str(out),
                           "--set", "train.distill.teacher=level_0"]) == 0
    (kd_dir,) = [os.path.join(out, d) for d in os.listdir(out)]
    assert kd_dir != finished_run and os.path.basename(kd_dir) != os.path.basename(finished_run)

    def history(run, level):
        return json.load(open(os.path.join(run, f"level_{level}", "metrics.json")))["history"]
    assert history(kd_dir, 0) == history(finished_run, 0)
    assert history(kd_dir, 1) != history(finished_run, 1)
    # a smaller MLP taught by the 24-12 MLP's dense level
    small = ["--set", "model.name=lenet_16_8", "--set", "lottery.levels=0", "--set", "lottery.controls=",
             "--set", "train.duration=20it"]
    assert main(LOTTERY + small + ["--out", str(tmp_path / "plain")]) == 0
    assert main(LOTTERY + small + ["--out", str(tmp_path / "taught"),
                                   "--set", f"train.distill.teacher={finished_run}/level_0"]) == 0
    (plain,) = [os.path.join(tmp_path / "plain", d) for d in os.listdir(tmp_path / "plain")]
    (taught,) = [os.path.join(tmp_path / "taught", d) for d in os.listdir(tmp_path / "taught")]
    assert history(plain, 0) != history(taught, 0)


# ----- low-bit and mixed precision (lth/compression/lowbit.py), whole layers (LayerDrop) -----

def test_compress_adds_low_bit_and_mixed_stages(capsys, finished_run):
    assert main(["compress", "--run-dir", finished_run, "--level", "1", "--no-progress",
                 "--set", "compress.low_bits=4,2", "--set", "compress.group_size=4", "--set", "compress.mixed=8,4,2",
                 "--set", "compress.power_iters=30"]) == 0
    text = capsys.readouterr().out
    for row in ("ticket int4 PTQ, groups of 4", "ticket int2 PTQ, groups of 4", "ticket mixed PTQ (Q-BERT, mean"):
        assert row in text, text
    found = [os.path.join(finished_run, "compress", d, "results.json")
             for d in os.listdir(os.path.join(finished_run, "compress"))]
    (res,) = [f for f in found if os.path.exists(f) and "ticket_mixed_ptq" in json.load(open(f))["stages"]]
    st = json.load(open(res))["stages"]
    # (groups of 4 inputs: a float32 scale per 4 weights outweighs int8's per-channel scales here)
    assert st["ticket_int2_ptq"]["bytes"] < st["ticket_int4_ptq"]["bytes"]
    assert all(st[k]["zeros_kept"] for k in ("ticket_int4_ptq", "ticket_int2_ptq", "ticket_mixed_ptq"))
    mixed = st["ticket_mixed_ptq"]
    order = sorted(mixed["omega"], key=lambda p: -mixed["omega"][p])
    assert [mixed["bits"][p] for p in order] == [8, 4, 2]          # three kernels: one per width, by Ω
    assert 2 < mixed["mean_bits"] < 8


def test_group_size_that_does_not_divide_is_refused(capsys, finished_run):
    assert main(["compress", "--run-dir", finished_run, "--level", "1", "--no-progress",
                 "--set", "compress.low_bits=4", "--set", "compress.group_size=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compress.group_size 8 does not divide the inputs of out/kernel (12 inputs)" in err[0]
    assert main(["compress", "--run-dir", finished_run, "--set", "compress.mixed=8,3"]) == 2
    assert "compress.mixed entry '3'" in capsys.readouterr().err


def test_layers_of_a_model_without_layers_are_refused(capsys, finished_run):
    before = snapshot(finished_run)
    assert main(["compress", "--run-dir", finished_run, "--level", "1", "--set", "compress.layers=every_other"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compress.layers 'every_other' needs a BERT model" in err[0]
    assert snapshot(finished_run) == before
