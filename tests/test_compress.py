"""`lth compress`: int8 quantization keeps zeros and is within half a step, sizes add up, the command
runs PTQ, QAT and QAT + KD on a tiny ticket, and bad input is one line, exit 2, nothing written."""
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth import compress as C, masks as M, quantize as Q
from lth.cli import main
from lth.config import base
from lth.models import registry
from lth.models.inits import Init
from conftest import LOTTERY
from test_cli import fails, snapshot


def sparse_mlp(density=0.3, seed=0):
    model = registry.build("lenet_64_32", 10, Init("kaiming_normal"), (40,), 1.0)
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


def test_sizes_add_up():
    model, params, masks, prunable = sparse_mlp(density=0.3)
    cfg = base()
    _, qp = Q.quantize(model, cfg, params, {}, jnp.zeros((1, 4, 40)))
    out = Q.sizes(params, masks, prunable, Q.quantized_leaves(qp))
    n_all = sum(int(np.size(p)) for p in jax.tree.leaves(params))
    assert out["dense_f32"] == 4 * n_all
    assert out["sparse_f32"] == sum(r["f32_bytes"] for r in out["leaves"])
    assert out["sparse_int8"] == sum(r["int8_bytes"] for r in out["leaves"])
    for r in out["leaves"]:
        n, nnz = r["size"], r["nonzero"]
        if r["path"].endswith("kernel"):
            locate = min(math.ceil(n / 8), 2 * nnz)
            assert r["locate"] == ("bitmask" if math.ceil(n / 8) <= 2 * nnz else "indices")
            assert r["f32_bytes"] == 4 * nnz + locate
            out_channels = int(r["path"] == "out/kernel") * 10 + int(r["path"] == "fc_0/kernel") * 64 + \
                int(r["path"] == "fc_1/kernel") * 32
            assert r["int8_bytes"] == nnz + locate + 4 * out_channels
        else:
            assert r["f32_bytes"] == r["int8_bytes"] == 4 * n and r["locate"] == "dense"
    # the bitmask is ceil(n/8) bytes: 40·64 = 2560 entries → 320 bytes at 30% density (768 indices cost 1536)
    fc0 = next(r for r in out["leaves"] if r["path"] == "fc_0/kernel")
    assert fc0["locate"] == "bitmask" and fc0["f32_bytes"] == 4 * fc0["nonzero"] + 320
    assert Q.sparse_bytes(100000, 10, 4) == {"values": 40, "locate": 40, "how": "indices"}   # 4-byte indices past 65,536


def test_compress_command_ptq_qat_and_distilled_qat(capsys, finished_run):
    assert main(["compress", "--run-dir", finished_run, "--level", "1", "--no-progress", "--set", "compress.qat_duration=6it",
                 "--set", "train.distill.teacher=level_0", "--set", "train.distill.alpha=0.3"]) == 0
    text = capsys.readouterr().out
    for row in ("dense f32 (level 0)", "ticket f32 (level 1)", "ticket int8 PTQ", "ticket int8 QAT |", "QAT + KD"):
        assert row in text, text
    (res_dir,) = os.listdir(os.path.join(finished_run, "compress"))
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
    from lth import checkpoint
    assert checkpoint.exists(os.path.join(finished_run, "compress", res_dir, "ticket_int8_qat", "final"))
    # default level: the sparsest within one std of dense
    assert C.choose_level(finished_run, None) in (0, 1)


def test_compress_bad_input_one_line_exit_2_nothing_written(capsys, finished_run, tmp_path):
    before = snapshot(finished_run)
    fails(capsys, ["compress", "--run-dir", finished_run, "--level", "7"], "level 7", "allowed: 0, 1")
    fails(capsys, ["compress", "--run-dir", str(tmp_path / "nope")], "does not exist")
    fails(capsys, ["compress", "--run-dir", finished_run, "--set", "train.lr=1"], "train.lr", "compress.*")
    fails(capsys, ["compress", "--run-dir", finished_run, "--set", "compress.activations=int4"], "'int4'", "dynamic")
    fails(capsys, ["compress", "--run-dir", finished_run, "--set", "train.distill.teacher=level_5"], "level_5", "level_0")
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


def test_conv_nets_quantized_per_channel_and_weight_only_refused():
    from lth.errors import UserError
    cfg = base()
    cfg.model.name = "lenet5"
    model = registry.build("lenet5", 10, Init("kaiming_normal", conv_impl="xla"), (28, 28, 1), 1.0)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 28, 28, 1))
    params = model.init(jax.random.PRNGKey(0), x[0])["params"]
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
    Q.check_supported(registry.build("lenet_8", 10, Init("kaiming_normal"), (40,), 1.0), cfg, (40,), jnp.float32)


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
