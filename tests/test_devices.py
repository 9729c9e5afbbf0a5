"""Past one device (lth/training/devices.py, run.parallel): replicates sharded over 4 (forced CPU) devices give
one device's results for an MLP through IMP, and a run stopped on 4 devices resumes on 1; R < D runs
a 2-D mesh. The slow tier adds a BatchNorm conv net (VGG-11-BN) through a prune-at-init arm on 1 vs 2
devices."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from lth.errors import UserError
from lth.training.devices import layout

pytestmark = pytest.mark.xdist_group("devices")   # its module fixture is computed once, on one worker

SCRIPT = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import jax
from lth.api import run_study
from lth.training.signals import Stopped
from lth.training.step import Trainer
from conftest import TINY
tiny = {**dict(t.split("=", 1) for t in TINY), "train.duration": "40it"}
out, root = {"devices": len(jax.devices())}, sys.argv[2]

def imp(name, levels=1, **kw):
    r = run_study("lottery", "mnist1d_mlp",
                  {**tiny, "lottery.levels": levels, "lottery.controls": "", "replicates": 4, **kw},
                  run_dir=f"{root}/{name}", log=lambda *_: None)
    return r.summary["levels"]

out["one"] = imp("one", **{"run.devices": 1})
out["rep4"] = imp("rep4", **{"run.devices": 4})
out["grid"] = imp("grid", 0, **{"run.devices": 4, "replicates": 2})
# stopped mid-level 0 on 4 devices (a checkpoint every 10 steps), resumed on one (the compilation
# cache the test session shares serves both from the runs above)
real, seen = Trainer.run_steps, []
def cut(self, state, perm, x, y, n, should_stop=None, teacher=None):
    seen.append(1)
    if len(seen) == 3:
        raise Stopped(15)
    return real(self, state, perm, x, y, n, should_stop, teacher=teacher)
Trainer.run_steps = cut
try:
    imp("cut", 0, **{"run.devices": 4})
except Stopped:
    out["stopped_at"] = sorted(os.listdir(f"{root}/cut/level_0/ckpt"))
Trainer.run_steps = real
out["resumed"] = imp("cut", 0, **{"run.devices": 1})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=ROOT)
    tmp = tmp_path_factory.mktemp("devices")
    res = subprocess.run([sys.executable, "-c", SCRIPT, os.path.join(ROOT, "tests"), str(tmp)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


CONV_SCRIPT = r"""
import json, sys
import jax
from lth.api import run_study
conv = {"model.name": "vgg11", "model.width": 0.0625, "model.conv_impl": "xla", "data.name": "mnist_5k",
        "data.normalize": "0.1307/0.3081", "train.batch_size": 32, "train.duration": "2it", "train.eval_every": "2it",
        "pai.methods": "magnitude", "pai.compression": "4", "replicates": 2, "run.progress": False,
        "run.replicate_mode": "vmap"}
out = {"devices": len(jax.devices())}
for n in (1, 2):
    r = run_study("pai", "mnist1d_mlp", {**conv, "run.devices": n}, run_dir=f"{sys.argv[1]}/conv{n}")
    out[f"conv{n}"] = r.summary
print(json.dumps(out))
"""


@pytest.mark.slow
def test_batchnorm_conv_net_prune_at_init_on_two_devices(tmp_path):
    """A VGG-11 with BatchNorm, one prune-at-init arm with R = 2: one device and two (one replicate a
    device) agree to the float tolerance of convolutions batched differently."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", CONV_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    a, b = out["conv1"], out["conv2"]
    ra = [r["best_val_loss"] for arm in a["arms"] for r in arm["replicates"]]
    rb = [r["best_val_loss"] for arm in b["arms"] for r in arm["replicates"]]
    assert out["devices"] == 2 and len(ra) == 2 and ra == pytest.approx(rb, rel=1e-3)
    assert [arm["density"] for arm in a["arms"]] == [arm["density"] for arm in b["arms"]]


def per_replicate(levels, key="test_accuracy"):
    return [[r[key] for r in e["replicates"]] for e in levels]


def test_replicates_sharded_over_devices_equal_one_device(four_devices):
    out = four_devices
    assert out["devices"] == 4
    assert [e["density"] for e in out["rep4"]] == [e["density"] for e in out["one"]]   # IMP's two levels
    np.testing.assert_allclose(per_replicate(out["rep4"]), per_replicate(out["one"]), atol=1e-6)
    np.testing.assert_allclose(per_replicate(out["rep4"], "best_val_loss"), per_replicate(out["one"], "best_val_loss"),
                               rtol=1e-5)
    # R = 2 on 4 devices: 2 replica groups of 2 devices each splitting its batch (replicate- and
    # data-parallel at once); seeds 0, 1 as above
    np.testing.assert_allclose(per_replicate(out["grid"], "best_val_loss"),
                               [v[:2] for v in per_replicate(out["one"][:1], "best_val_loss")], rtol=1e-5)


def test_stopped_on_four_devices_resumes_on_one(four_devices):
    out = four_devices
    assert out["stopped_at"] == ["20"]   # checkpoints every 10 steps
    np.testing.assert_allclose(per_replicate(out["resumed"], "best_val_loss"),
                               per_replicate(out["one"][:1], "best_val_loss"), rtol=1e-5)


def test_layouts_and_bad_input():
    assert layout(4, "auto", 8) == (4, 1) and layout(4, "auto", 2) == (2, 2) and layout(4, "auto", 3) == (1, 4)
    assert layout(4, "data", 8) == (1, 4) and layout(1, "replicates", 3) == (1, 1)
    with pytest.raises(UserError, match="replicates 6 is not divisible by the 4 devices"):
        layout(4, "replicates", 6)
    with pytest.raises(UserError, match="replicates 3 does not divide the 4 devices"):
        layout(4, "replicates", 3)
    with pytest.raises(UserError, match="unknown run.parallel 'model'; allowed: auto, replicates, data"):
        layout(2, "model", 2)
