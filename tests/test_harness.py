"""Run harness: the divergence guard, strict JSON, the run-directory lock, and SIGTERM mid-level
resuming bit-identically."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import DEMO, ROOT, TINY, tiny_config
from test_lottery import REWIND, final, run, tree_equal
from test_train import make, start_state

from lth.cli import main
from lth.errors import UserError
from lth.harness.rundir import RunLock, open_run_dir, strict, write_json
from lth.pruning import masks as M
from lth.studies import lottery
from lth.training.signals import Stopped
from lth.training.step import Trainer


def strict_load(path):
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token} in {path}")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


@pytest.mark.slow   # over ~20 s on 2 cores: `make test-all`
def test_diverging_replicate_is_frozen_and_the_healthy_one_is_untouched():
    t, x, y = make("sgd", momentum=0.9, lr=0.05)
    both = start_state(t, [3, 4])
    # replicate 1 starts from weights that overflow the loss: it diverges at its first step
    both = both.replace(params=jax.tree.map(lambda p: p.at[1].multiply(1e30), both.params))
    before = M.index(both.params, 1)
    both, losses = t.run_steps(both, t.epoch_perm(both.data_rng, 0), x, y, 6)
    assert np.asarray(both.diverged).tolist() == [-1, 0]
    assert np.isfinite(np.asarray(losses)[:, 0]).all() and not np.isfinite(np.asarray(losses)[:, 1]).any()
    assert tree_equal(M.index(both.params, 1), before)                 # frozen from the bad step on
    alone = start_state(t, [3])
    alone, _ = t.run_steps(alone, t.epoch_perm(alone.data_rng, 0), x, y, 6)
    for a, b in zip(jax.tree.leaves(M.index(both.params, 0)), jax.tree.leaves(M.index(alone.params, 0))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_max_loss_marks_divergence():
    t, x, y = make("sgd", lr=0.05, max_loss=1e-3)   # every real loss is above 1e-3
    st = start_state(t, [0])
    st, _ = t.run_steps(st, t.epoch_perm(st.data_rng, 0), x, y, 3)
    assert int(st.diverged[0]) == 0 and int(st.step[0]) == 3


def test_diverged_run_exits_3_with_strict_json_and_a_diverged_table(tmp_path, capsys):
    code = main(["lottery", "--config", os.path.join(ROOT, "configs", "mnist1d_mlp.py"), "--out", str(tmp_path),
                 *sum([["--set", s] for s in TINY + ["train.lr=1e6", "replicates=2", "lottery.controls=reinit"]], [])])
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert code == 3 and "diverged" in out.out and len(err) == 1 and err[0].startswith("lth: error: 1 arm(s) had a "
                                                                                      "diverged replicate"), err
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".json")]
    assert files and all(strict_load(f) is not None for f in files)
    (summary,) = [strict_load(f) for f in files if f.endswith("summary.json")]
    row = summary["levels"][0]["replicates"][0]
    assert row["diverged_at_step"] is not None and summary["levels"][0]["diverged"] == 2


def test_strict_json_writes_null_for_non_finite(tmp_path):
    p = tmp_path / "x.json"
    write_json(str(p), {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5), "d": np.array([np.nan])})
    assert strict_load(p) == {"a": None, "b": [1.0, None], "c": 2.5, "d": [None]}
    assert strict({"k": (float("-inf"),)}) == {"k": [None]}


def test_lock_refuses_a_second_process_and_is_taken_over_after_a_crash(tmp_path):
    cfg = tiny_config()
    d = str(tmp_path / "run")
    lock = open_run_dir(d, cfg, lottery.COMMAND)
    listing = sorted(os.listdir(d))
    with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
        RunLock(d)
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "lth.cli", "lottery",
                        "--config", os.path.join(ROOT, "configs", "mnist1d_mlp.py"),
                        "--run-dir", d, *sum([["--set", s] for s in TINY], [])],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2 and "in use by process" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(set(os.listdir(d)) - {"lth.log"}) == listing   # nothing written but the log of the refusal
    lock.release()
    # a process that holds the lock and dies: its lock file stays, the lock does not
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); from lth.harness.rundir import RunLock; "
            "l = RunLock(sys.argv[1]); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code, d, ROOT]).returncode == 9
    again = RunLock(d)
    assert open(os.path.join(d, ".lock")).read() == str(os.getpid())
    again.release()


@pytest.mark.slow   # over ~20 s on 2 cores: `make test-all`
def test_sigterm_mid_level_saves_that_step_and_resumes_bit_identically(tmp_path, monkeypatch):
    """SIGTERM arrives at step 45 of level 1 (checkpoints every 10): that step is saved, the rerun
    resumes there and ends with the same masks, weights and summary as an uninterrupted run."""
    ref = tmp_path / "ref"
    s, ref_summary, _ = run(ref, *REWIND)
    real, seen = Trainer.run_steps, []

    def steps_with_sigterm(self, state, perm, x, y, n, should_stop=None, teacher=None):
        def stop():
            seen.append(1)
            if len(seen) == 60 + 25:  # level 0 takes 60 steps; level 1 starts at 20: step 45
                os.kill(os.getpid(), signal.SIGTERM)
            return should_stop() if should_stop else None
        return real(self, state, perm, x, y, n, stop, teacher=teacher)
    monkeypatch.setattr(Trainer, "run_steps", steps_with_sigterm)
    d = tmp_path / "cut"
    with pytest.raises(Stopped) as e:
        run(d, *REWIND)
    assert e.value.signum == signal.SIGTERM
    assert sorted(os.listdir(d / "level_1" / "ckpt")) == ["45"]
    monkeypatch.setattr(Trainer, "run_steps", real)
    _, summary, calls = run(d, *REWIND, spy=monkeypatch)
    assert int(calls[0].step[0]) == 45
    assert summary["levels"] == ref_summary["levels"] and summary["controls"] == ref_summary["controls"]
    for level in (1, 2):
        a, b = final(d, s, level), final(ref, s, level)
        assert tree_equal(a.masks, b.masks) and tree_equal(a.params, b.params)
    # the cut level's TensorBoard curve is whole: every evaluated step of its history, read back
    history = json.load(open(d / "level_1" / "metrics.json"))["history"]
    got = read_events(d / "level_1" / "tensorboard" / "replicate_0")
    assert got["loss/train"] == [(e["step"], pytest.approx(e["train_loss"][0], rel=1e-6)) for e in history]
    assert got["accuracy/test"] == [(e["step"], pytest.approx(e["test_acc"][0], rel=1e-6)) for e in history]
    assert set(got) == {"loss/train", "loss/val", "loss/test", "accuracy/val", "accuracy/test"}


def test_disk_full_while_saving_is_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    """ENOSPC inside a checkpoint save (orbax wraps the OSError): exit 4, one line naming the path and
    what to do, no traceback; the last good checkpoint stays and a rerun resumes from it."""
    import errno

    from lth.harness import checkpoint
    real, calls, full = checkpoint.Rolling.save, [], [True]

    def save(self, step, state, meta):
        calls.append(step)
        if step == 30 and full[0]:
            try:
                raise OSError(errno.ENOSPC, "No space left on device", os.path.join(self.directory, "30"))
            except OSError as e:
                raise RuntimeError("orbax: async save failed") from e
        return real(self, step, state, meta)
    monkeypatch.setattr(checkpoint.Rolling, "save", save)
    argv = ["lottery", "--config", DEMO, "--no-progress", "--run-dir", str(tmp_path / "run")] + \
        [a for t in TINY + ["lottery.levels=0", "lottery.controls="] for a in ("--set", t)]
    assert main(argv) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full while writing" in err[0] and "/level_0/ckpt/30" in err[0] \
        and "free space and rerun" in err[0], err
    assert sorted(os.listdir(tmp_path / "run" / "level_0" / "ckpt")) == ["20"]
    full[0] = False   # space freed
    calls.clear()
    assert main(argv) == 0
    assert calls[0] == 30     # resumed from step 20, not from 0
    assert json.load(open(tmp_path / "run" / "summary.json"))["levels"][0]["replicates"][0]["final_step"] == 60


def read_events(folder):
    """tag → [(step, value)] from the TensorBoard event files in `folder` (TFRecord framing: length
    u64, its crc u32, an Event proto, its crc u32), as `tensorboard --logdir` reads them."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = {}
    for name in sorted(os.listdir(folder)):
        raw = open(os.path.join(folder, name), "rb").read()
        at = 0
        while at < len(raw):
            (n,) = struct.unpack("<Q", raw[at:at + 8])
            event = Event.FromString(raw[at + 12:at + 12 + n])
            at += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


COLLAPSE = ["collapse", "--model", "lenet_20_10", "--dataset", "mnist1d", "--methods", "synflow,magnitude,random",
            "--max-log10", "1.5", "--step", "0.5", "--init", "kaiming_normal", "--rounds", "3"]


def without_times(summary):
    return {k: ({m: {f: v for f, v in e.items() if f not in ("seconds", "score_s", "select_s")}
                 for m, e in v.items()} if k == "methods" else v) for k, v in summary.items()}


def test_collapse_sweep_killed_between_points_resumes_without_recomputing(tmp_path, monkeypatch, capsys):
    from lth.pruning import at_init as pai
    assert main(COLLAPSE + ["--run-dir", str(tmp_path / "ref")]) == 0
    ref = strict_load(tmp_path / "ref" / "summary.json")
    real, calls = pai.prune_at_init, []

    def dying(*a, **kw):
        calls.append(1)
        if len(calls) == 3:   # synflow (3 rounds per point) dies computing its third point
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(pai, "prune_at_init", dying)
    d = tmp_path / "cut"
    assert main(COLLAPSE + ["--run-dir", str(d)]) == 130
    partial = strict_load(d / "summary.json")
    assert partial["methods"]["synflow"]["points_done"] == 2 and not partial["methods"]["synflow"]["complete"]
    calls.clear()
    monkeypatch.setattr(pai, "prune_at_init", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    assert main(COLLAPSE + ["--run-dir", str(d)]) == 0
    assert len(calls) == 3 * len(ref["compressions_log10"]) - 2  # only the missing points (3 methods)
    assert without_times(strict_load(d / "summary.json")) == without_times(ref)
    assert "| synflow | 10^" in capsys.readouterr().out


def test_collapse_flags_are_config_keys_with_one_default(tmp_path):
    from lth.harness.config import load_config
    from lth.studies import collapse

    cfg = load_config(os.path.join(ROOT, "configs", "synflow_layer_collapse.py"))
    assert (cfg.model.name, cfg.data.name, cfg.pai.obd_probes, cfg.collapse.init) == ("vgg16", "cifar10", 32, "synflow")
    collapse.resolve_init(cfg)
    assert (cfg.model.init, cfg.model.bias_init, cfg.model.bn_init) == ("kaiming_normal", "zeros", "ones")
    assert main(COLLAPSE + ["--run-dir", str(tmp_path / "c"), "--obd-probes", "3"]) == 0
    stored = strict_load(tmp_path / "c" / "config.json")
    assert stored["command"] == "collapse" and stored["config"]["pai"]["obd_probes"] == 3
    assert (stored["config"]["collapse"]["init"] == "kaiming_normal"
            and stored["config"]["model"]["name"] == "lenet_20_10")


PAI = ["pai", "--config", os.path.join(ROOT, "configs", "mnist1d_mlp.py"), "--no-progress"]


def pai_args(out, *sets):
    return PAI + ["--out", str(out)] + sum([["--set", s] for s in TINY + ["pai.methods=magnitude,random",
                                                                          "pai.sanity=shuffle", *sets]], [])


@pytest.mark.slow   # over ~20 s on 2 cores: `make test-all`
def test_pai_sweep_resumes_per_arm_and_reuses_its_directory(tmp_path, monkeypatch):
    from lth.harness import run as harness
    real, trained = harness.fit, []

    def counting(trainer, state, *a, **kw):
        trained.append(1)
        if len(trained) == 3:
            raise KeyboardInterrupt
        return real(trainer, state, *a, **kw)
    monkeypatch.setattr(harness, "fit", counting)
    assert main(pai_args(tmp_path, "pai.compression=10^0.5")) == 130
    monkeypatch.setattr(harness, "fit", real)
    assert main(pai_args(tmp_path, "pai.compression=10^0.5")) == 0          # the 2 finished arms are reused
    (run,) = list(tmp_path.iterdir())
    first = strict_load(run / "summary.json")
    assert [e["arm"] for e in first["arms"]] == ["magnitude@10^0.5", "random@10^0.5", "magnitude+shuffle@10^0.5",
                                                 "random+shuffle@10^0.5"]
    trained.clear()
    monkeypatch.setattr(harness, "fit", lambda *a, **kw: (trained.append(1), real(*a, **kw))[1])
    assert main(pai_args(tmp_path, "pai.compression=10^0.5,10^1")) == 0    # a second compression: same directory
    assert list(tmp_path.iterdir()) == [run] and len(trained) == 4         # only the new compression's arms train
    swept = strict_load(run / "summary.json")
    assert swept["arms"][:4] == first["arms"] and {e["compression_log10"] for e in swept["arms"]} == {0.5, 1.0}
    assert abs(swept["arms"][4]["density"] - 0.1) < 1e-3


def test_identity_per_command():
    from lth.studies import heads, lottery
    from lth.studies import pai as pai_run

    cfg = tiny_config()
    other = tiny_config("pai.compression=10^2", "heads.step=0.2")
    assert lottery.COMMAND.hash(cfg) == lottery.COMMAND.hash(other)        # pai.* is not IMP's identity
    assert pai_run.COMMAND.hash(cfg) == pai_run.COMMAND.hash(tiny_config("pai.compression=10^2", "lottery.rewind=9ep"))
    assert pai_run.COMMAND.hash(cfg) != pai_run.COMMAND.hash(tiny_config("pai.rounds=7"))
    assert heads.COMMAND.hash(cfg) == lottery.COMMAND.hash(cfg)          # heads reuse the lottery run's level 0
    assert heads.results_dir("r", cfg) != heads.results_dir("r", other)   # ...but heads.* never overwrite each other


def test_pai_ignores_imp_fields(tmp_path, capsys):
    """A rewind point past the end of training is IMP's problem, not pai's."""
    assert main(pai_args(tmp_path, "lottery.rewind=999ep", "pai.methods=magnitude", "pai.sanity=")) == 0
    assert main(["lottery", "--config", os.path.join(ROOT, "configs", "mnist1d_mlp.py"), "--out", str(tmp_path / "l"),
                 *sum([["--set", s] for s in TINY + ["lottery.rewind=999ep"]], [])]) == 2
    assert "lottery.rewind '999ep'" in capsys.readouterr().err


def test_identity_holds_non_default_fields_and_legacy_directories_are_found(tmp_path, monkeypatch):
    """A run's identity is the non-default fields of its sections: adding a schema field with a
    default leaves every hash as it was. A run directory of the former format (the full sections;
    tests/data/legacy_run/config.json, written by lth before this change) is found again."""
    import json
    import shutil

    from lth.harness import config, rundir
    cfg = tiny_config()
    ident = lottery.COMMAND.identity(cfg)
    assert ident == {"name": "mnist1d_mlp", "model": {"name": "lenet_24_12"}, "train": {
        "lr": 0.05, "weight_decay": 0.0001, "batch_size": 50, "duration": "60it", "eval_every": "20it"}}
    h = lottery.COMMAND.hash(cfg)
    real = config.base

    def with_new_field():
        c = real()
        c.train.new_option = 0.5                 # a new field with its default
        return c
    monkeypatch.setattr(config, "base", with_new_field)
    from conftest import DEMO, TINY

    from lth.harness.config import load_config
    cfg2 = load_config(DEMO, TINY)
    assert cfg2.train.new_option == 0.5 and lottery.COMMAND.hash(cfg2) == h
    cfg2.train.new_option = 0.7                   # set away from its default: a new identity
    assert lottery.COMMAND.hash(cfg2) != h
    monkeypatch.setattr(config, "base", real)
    # the stored former-format directory: found, and its identity accepted
    legacy = os.path.join(os.path.dirname(__file__), "data", "legacy_run")
    stored = json.load(open(os.path.join(legacy, "config.json")))
    old = tmp_path / f"mnist1d_mlp-{stored['hash']}"
    shutil.copytree(legacy, old)
    cfg = tiny_config()
    assert stored["hash"] != lottery.COMMAND.hash(cfg)
    assert lottery.COMMAND.run_dir(cfg, str(tmp_path)) == str(old)
    rundir.check_run_dir(str(old), cfg, lottery.COMMAND)           # no "another config" error
    with pytest.raises(UserError, match="holds a run of another config"):
        rundir.check_run_dir(str(old), tiny_config("train.lr=0.3"), lottery.COMMAND)


def test_only_process_zero_writes_json(tmp_path, monkeypatch):
    """In a run of several processes, process 0 alone writes JSON (the others would race it on the
    same files); the end-to-end two-process run is in the slow tier (tests/test_processes.py)."""
    import jax

    from lth.harness import rundir

    monkeypatch.setattr(jax, "process_index", lambda: 1)
    rundir.write_json(str(tmp_path / "a.json"), {"x": 1})
    assert not (tmp_path / "a.json").exists()
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    rundir.write_json(str(tmp_path / "a.json"), {"x": float("nan")})
    assert open(tmp_path / "a.json").read().replace(" ", "").replace("\n", "") == '{"x":null}'

