"""Datasets in the formats researchers already have on disk, read without TensorFlow.

- CIFAR-10 / CIFAR-100 python pickles (`cifar-10-batches-py`, `cifar-100-python`: the folders that
  torchvision and Keras download). Each batch is a pickled dict whose b'data' is a uint8 array of
  shape (N, 3072): 1024 red, then 1024 green, then 1024 blue values of a 32×32 image, row-major
  (https://www.cs.toronto.edu/~kriz/cifar.html); labels in b'labels' (CIFAR-10) or b'fine_labels'.
- MNIST / Fashion-MNIST IDX files, raw or gzipped (http://yann.lecun.com/exdb/mnist/): a big-endian
  magic number 0x00000800 | type << 8 | ndim (type 0x08 = unsigned byte), ndim big-endian uint32
  sizes, then the data. torchvision keeps them in ROOT/MNIST/raw, Keras' Fashion-MNIST in
  ~/.keras/datasets/fashion-mnist.
- Arrays in an `.npz` with x_train, y_train, x_test, y_test (Keras' mnist.npz, `lth data prepare
  --from`, or a user's own data): images uint8 (scaled to [0, 1]) or float, any shape, any class
  count (optional `num_classes`).

Each reader returns ((x_train, y_train), (x_test, y_test), num_classes) with x float32 (N, ..., C)
and raises UserError naming the file and what was expected when the bytes are not that format.
"""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np

from lth.errors import UserError

# dataset → (pickle folder, npz name, IDX folders relative to the data dir) searched in this order
PICKLES = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
IDX_DIRS = {"mnist": ("", "MNIST/raw", "mnist"),
            "fashion_mnist": ("", "FashionMNIST/raw", "fashion-mnist", "fashion_mnist")}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _images(x: np.ndarray) -> np.ndarray:
    """uint8 → float32 in [0, 1]; (N, H, W) gets a channel axis."""
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return x[..., None] if x.ndim == 3 else x


# ----- CIFAR pickles ---------------------------------------------------------------------------
def _unpickle(path: str, label_key: bytes):
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(d[b"data"]), np.asarray(d[label_key])
    except FileNotFoundError:
        raise UserError(f"{path} is missing; expected the CIFAR python batches (cifar-10-batches-py: data_batch_1..5, "
                        f"test_batch; cifar-100-python: train, test)") from None
    except Exception as e:
        raise UserError(f"{path} is not a CIFAR python batch ({type(e).__name__}); expected a pickled dict with "
                        f"b'data' (N, 3072) uint8 and b'{label_key.decode()}'") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"{path}: b'data' is {data.dtype} {data.shape} with {len(labels)} labels; expected uint8 "
                        f"(N, 3072) and N labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def read_cifar(folder: str, name: str):
    """A `cifar-10-batches-py` / `cifar-100-python` folder."""
    if name == "cifar10":
        parts = [_unpickle(os.path.join(folder, f"data_batch_{i}"), b"labels") for i in range(1, 6)]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        test = _unpickle(os.path.join(folder, "test_batch"), b"labels")
    else:
        train = _unpickle(os.path.join(folder, "train"), b"fine_labels")
        test = _unpickle(os.path.join(folder, "test"), b"fine_labels")
    return _checked(((_images(train[0]), train[1]), (_images(test[0]), test[1]), CLASSES[name]), folder)


# ----- IDX -------------------------------------------------------------------------------------
def read_idx(path: str) -> np.ndarray:
    """One IDX file of unsigned bytes (raw or .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path} cannot be read as {'gzip' if opener is gzip.open else 'a file'} ({e}); "
                        f"expected an IDX file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise UserError(f"{path}: magic number {raw[:4].hex() or 'missing'}; expected an unsigned-byte IDX file "
                        f"(00000801 labels, 00000803 images)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: header cut short; expected {ndim} sizes after the magic number")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, 4))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise UserError(f"{path}: {len(body)} data bytes; expected {int(np.prod(shape))} for shape {shape} "
                        f"(truncated or not an IDX file)")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _idx_file(folder: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):   # torchvision / LeCun / some mirrors
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def find_idx(folder: str) -> str | None:
    """The folder holding train-images-idx3-ubyte[.gz], or None."""
    return folder if _idx_file(folder, IDX_FILES["train"][0]) else None


def read_idx_dataset(folder: str, name: str):
    splits = []
    for split in ("train", "test"):
        paths = [_idx_file(folder, stem) for stem in IDX_FILES[split]]
        for p, stem in zip(paths, IDX_FILES[split]):
            if p is None:
                raise UserError(f"{os.path.join(folder, stem)}[.gz] is missing; expected the four IDX files "
                                f"{', '.join(s for pair in IDX_FILES.values() for s in pair)}")
        x, y = read_idx(paths[0]), read_idx(paths[1])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{paths[0]}: images {x.shape} and labels {y.shape}; expected (N, H, W) and (N,)")
        splits.append((_images(x), y.astype(np.int64)))
    return _checked((splits[0], splits[1], CLASSES[name]), folder)


# ----- npz ---------------------------------------------------------------------------------------
def read_npz(path: str, num_classes: int | None = None):
    """x_train, y_train, x_test, y_test (and optionally num_classes) from one .npz."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise UserError(f"{path} lacks {', '.join(missing)}; expected arrays {', '.join(NPZ_KEYS)} "
                                f"(and optionally num_classes)")
            arrays = {k: z[k] for k in NPZ_KEYS}
            if "num_classes" in z.files and num_classes is None:
                num_classes = int(z["num_classes"])
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path} cannot be read as .npz ({type(e).__name__}: {e}); expected numpy.savez output "
                        f"with {', '.join(NPZ_KEYS)}") from None
    for k in ("y_train", "y_test"):
        if arrays[k].ndim != 1 or not np.issubdtype(arrays[k].dtype, np.integer):
            raise UserError(f"{path}: {k} is {arrays[k].dtype} {arrays[k].shape}; expected integer class labels (N,)")
    for s in ("train", "test"):
        if len(arrays["x_" + s]) != len(arrays["y_" + s]) or arrays["x_" + s].ndim < 2:
            raise UserError(f"{path}: x_{s} {arrays['x_' + s].shape} and y_{s} {arrays['y_' + s].shape}; "
                            f"expected (N, ...) inputs and N labels")
    if num_classes is None:
        num_classes = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0))) + 1
    out = ((_images(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
           (_images(arrays["x_test"]), arrays["y_test"].astype(np.int64)), num_classes)
    return _checked(out, path)


def write_npz(path: str, train, test, num_classes: int) -> None:
    """The arrays as uint8 images (x in [0, 1] scaled back) in lth's npz format, written atomically."""
    tmp = path + ".tmp.npz"
    to8 = lambda x: np.rint(np.squeeze(x, -1) * 255 if x.shape[-1] == 1 else x * 255).astype(np.uint8)  # noqa: E731
    np.savez(tmp, x_train=to8(train[0]), y_train=train[1].astype(np.int64), x_test=to8(test[0]),
             y_test=test[1].astype(np.int64), num_classes=np.int64(num_classes))
    os.replace(tmp, path)


def _checked(out, where: str):
    (xtr, ytr), (xte, yte), k = out
    for split, y in (("train", ytr), ("test", yte)):
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise UserError(f"{where}: {split} labels span {y.min()}..{y.max()}; expected 0..{k - 1} ({k} classes)")
    if xtr.shape[1:] != xte.shape[1:]:
        raise UserError(f"{where}: train inputs {xtr.shape[1:]} and test inputs {xte.shape[1:]} differ; "
                        f"expected one shape")
    return out


# ----- finding a dataset in a data dir -------------------------------------------------------------
def candidates(name: str, data_dir: str) -> list[tuple[str, str]]:
    """[(format, path)] where `name` may lie in `data_dir`, in the order they are tried:
    NAME.npz, then the source format (CIFAR pickles / IDX files) in its usual folders."""
    out = [("npz", os.path.join(data_dir, f"{name}.npz"))]
    if name == "mnist":
        out.append(("npz", os.path.join(data_dir, "mnist.npz")))
    if name in PICKLES:
        out += [("pickle", os.path.join(data_dir, PICKLES[name])), ("pickle", data_dir)]
    if name in IDX_DIRS:
        out += [("idx", os.path.join(data_dir, sub)) for sub in IDX_DIRS[name]]
    return list(dict.fromkeys(out))


def _present(fmt: str, path: str, name: str) -> bool:
    if fmt == "npz":
        return os.path.isfile(path)
    if fmt == "pickle":
        marks = ("data_batch_1", "test_batch") if name == "cifar10" else ("train", "test", "meta")
        return all(os.path.isfile(os.path.join(path, m)) for m in marks)
    return find_idx(path) is not None


def find(name: str, data_dir: str):
    """(format, path) of the first format of `name` present in `data_dir`, or None."""
    for fmt, path in candidates(name, data_dir):
        if _present(fmt, path, name):
            return fmt, path
    return None


def read(fmt: str, path: str, name: str):
    if fmt == "npz":
        return read_npz(path, CLASSES.get(name))
    if fmt == "pickle":
        return read_cifar(path, name)
    return read_idx_dataset(path, name)


def looked_for(name: str, data_dir: str) -> str:
    """The paths `find` tried, for an error message."""
    what = {"npz": "", "pickle": "/", "idx": "/train-images-idx3-ubyte[.gz]"}
    return ", ".join(p + what[f] for f, p in candidates(name, data_dir))
