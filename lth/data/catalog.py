"""Datasets by name (lth.registry.DATASETS, registered in lth/data/__init__.py): the loaders of the
built-in ones, the validation split carved from train, per-channel normalization."""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from lth.data import files, mnist1d, mnist5k, text, tfds_source
from lth.errors import NotPrepared, UserError
from lth.options import options, split_list
from lth.registry import DATASETS

# The `data` section of the config.
OPTIONS = options(
    name=("mnist1d", "see `lth data list`: mnist1d, mnist_5k (offline) | mnist | fashion_mnist | cifar10 | cifar100 "
                     "| arrays | bbc_news"),
    data_dir=("", "where the files are (lth/data/files.py: NAME.npz, CIFAR pickles, IDX files, then a prepared tfds "
                  "dir); the .npz itself for `arrays`; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets"),
    drop_last=(True, "an epoch is floor(N/B) full batches; False: ceil(N/B), the last one partial "
                     "(PyTorch's DataLoader, OpenLTH)"),
    validation_size=(500, "examples carved from train for validation / early stopping"),
    split_seed=(0, "seed of that carve (fixed across replicates)"),
    classes=("", "keep only these labels (comma list, e.g. 0,1,2,3,4) in train, validation and test, relabeled "
                 "0..k-1 in that order ('' = all): tickets across label sets, Morcos et al. 2019"),
    train_part=("", "K/N: the training split (after the validation carve) cut into N consecutive equal parts, "
                    "the K-th kept, e.g. 1/2 and 2/2 ('' = all)"),
    normalize=("train", "images: train (per-channel mean/std of the training split) | 'MEAN/STD', comma lists on "
                        "the [0, 1] pixel scale, e.g. '0.1307/0.3081'"),
    recipe_for=("", "datasets a recipe was written for (comma list; '' = any); others are refused"),
    augment=("none", "training augmentation inside jit: none | crop_flip (pad 4, flip)"),
    tokenizer=("minilm_l6", "text: packaged model name, model dir, tokenizer.json or vocab.txt"),
    max_length=(128, "text: tokens per example (truncate / pad)"),
    mlm_windows=(0, "masked-LM text (bbc_news_mlm): windows of max_length tokens kept per article (0 = all)"),
    sop_pairs=(2, "bbc_sop / bbc_nsp: sentence pairs drawn per article (ALBERT's sentence-order / BERT's "
                  "next-sentence prediction)"),
    mlm_rate=(0.15, "masked-LM text: the fraction of tokens selected for prediction (BERT: 0.15; 80/10/10 rule)"),
    mlm_predictions=(0, "masked-LM text: 0 = the decoder runs at every position (HF BertForMaskedLM) | K: at most K "
                        "selected tokens per sequence, the decoder run at those only (Google BERT's "
                        "max_predictions_per_seq, 20 at 128 tokens)"),
)


@dataclasses.dataclass
class Dataset:
    """Whole splits as arrays: x float32 (N, ...) or token ids, y int32 (N,) — or, for a masked-LM
    corpus (meta['objective'] == 'mlm'), y = the token ids themselves (N, T)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    meta: dict = dataclasses.field(default_factory=dict)  # text: vocab_size, max_length, pad/cls/sep ids
    zero: np.ndarray | float = 0.0  # a raw 0 input after normalization: what padding a raw image with 0 gives

    @property
    def input_shape(self):
        return self.x_train.shape[1:]


def mnist1d_source(cfg):
    return mnist1d.load()


def image_files(name):
    """The first of `name`'s formats found in data.data_dir (lth.data.files.candidates: NAME.npz,
    then CIFAR pickles / IDX files in their usual folders), else a prepared tfds dir there."""
    def load(cfg):
        where = cfg.data_dir or tfds_source.default_data_dir()
        found = files.find(name, where)
        if found is not None:
            return files.read(*found, name)
        try:
            import tensorflow_datasets  # noqa: F401
        except ImportError:
            raise NotPrepared(f"dataset {name!r} not found in {where}: looked for {files.looked_for(name, where)}; "
                              f"set data.data_dir to the folder holding one of them") from None
        try:
            return tfds_source.load(name, cfg.data_dir or None)
        except NotPrepared as e:
            raise NotPrepared(f"{e} (also looked for {files.looked_for(name, where)})") from None
    return load


def arrays(cfg):
    """data.data_dir: an .npz with x_train, y_train, x_test, y_test (or a folder with one .npz)."""
    path = cfg.data_dir
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".npz"))
        if len(found) != 1:
            raise UserError(f"data.data_dir {path!r} holds {len(found)} .npz files; expected exactly one, or the "
                            f"path of the .npz itself")
        path = os.path.join(path, found[0])
    if not os.path.isfile(path):
        raise UserError(f"data.data_dir {path!r} is not an .npz file; the `arrays` dataset reads x_train, y_train, "
                        f"x_test, y_test from the .npz that data.data_dir names")
    return files.read_npz(path)


def mnist_5k_source(cfg):
    return mnist5k.load()


def text_source(name):
    def load(cfg):
        if name == "bbc_news_mlm":
            return text.load_bbc_mlm(cfg)
        if name in text.PAIR_TASKS:
            return text.load_bbc_sop(cfg, name)
        return text.load_bbc(cfg) if name == "bbc_news" else text.load_glue(name.split("/")[1])(cfg)
    return load


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset as registered in lth.registry.DATASETS: `load(cfg)` → ((x_train, y_train), (x_test,
    y_test), classes[, meta]) from the config's `data` section; its input shape and classes when
    known without reading the data (synthetic stand-ins, `lth bench --dataset`)."""

    load: Callable
    help: str
    shape: tuple | None = None        # (input shape without the batch axis, classes)


def synthetic(name: str, n: int, seed: int = 0) -> Dataset:
    """N(0,1) inputs with random labels in the shapes of `name` (meta['synthetic'] = True): for the
    scores of a sweep that trains nothing, when the dataset is not prepared."""
    shape, classes = DATASETS.get(name).shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return Dataset(name, x, y, x[:0], y[:0], x[:2], y[:2], classes, {"synthetic": True})


def names() -> list[str]:
    return sorted(DATASETS.names())


def shapes() -> dict:
    """{dataset: (input shape, classes)} of the datasets whose shapes are known without their data."""
    return {name: src.shape for name, src in DATASETS.items() if src.shape is not None}


def parse_part(text: str):
    """'K/N' → (K, N) with 1 <= K <= N; '' → None."""
    if not str(text).strip():
        return None
    k, sep, n = str(text).partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n:
        raise UserError(f"data.train_part {text!r}; allowed: K/N with 1 <= K <= N, e.g. 1/2 (or '' = all)")
    return k, n


def parse_classes(text: str, num_classes: int, label_ndim: int) -> list[int]:
    """'0,1,2' → [0, 1, 2]: distinct labels of the dataset, at least two."""
    if label_ndim != 1:
        raise UserError(f"data.classes {text!r} needs one label per example; this dataset's labels are not "
                        f"classes (e.g. masked-LM tokens); allowed: ''")
    try:
        keep = [int(v) for v in split_list(text)]
    except ValueError:
        keep = []
    if len(keep) < 2 or len(set(keep)) != len(keep) or not all(0 <= c < num_classes for c in keep):
        raise UserError(f"data.classes {text!r}; allowed: two or more distinct labels in 0..{num_classes - 1}, "
                        f"e.g. 0,1,2,3,4")
    return keep


def subset_classes(x, y, keep):
    """The examples labeled one of `keep`, relabeled by their position in it."""
    y = np.asarray(y)
    at = np.isin(y, keep)
    relabel = np.zeros(max(int(y.max()) + 1, max(keep) + 1), np.int64)
    relabel[keep] = np.arange(len(keep))
    return x[at], relabel[y[at]]


def split_validation(x, y, size: int, seed: int = 0):
    """Carve a fixed, seeded validation set of `size` examples out of the training set."""
    if not 0 <= size < len(y):
        raise UserError(f"data.validation_size {size} out of range; allowed: 0 <= size < {len(y)} (training examples)")
    perm = np.random.default_rng(seed).permutation(len(y))
    val, train = perm[:size], perm[size:]
    return x[train], y[train], x[val], y[val]


def parse_stats(spec: str, channels: int):
    """'0.485,0.456,0.406/0.229,0.224,0.225' → (mean, std) arrays of 1 or `channels` values."""
    try:
        mean, std = ([float(v) for v in part.split(",")] for part in spec.split("/"))
    except ValueError:
        mean = std = None
    if (not mean or not std or len(mean) != len(std) or len(mean) not in (1, channels) or not min(std) > 0
            or not np.all(np.isfinite(mean + std))):
        raise UserError(f"bad data.normalize {spec!r}; allowed: train | 'MEAN/STD' with 1 or {channels} "
                        f"comma-separated values each and STD > 0, e.g. '0.1307/0.3081'")
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def normalize(x_train, *others, spec: str = "train"):
    """(normalized arrays, normalized value of a raw 0). spec 'train' standardizes with the training
    set's per-channel (last axis for images, global otherwise) stats; 'MEAN/STD' uses fixed ones, as
    torchvision's Normalize (e.g. OpenLTH's CIFAR-10 uses ImageNet's). Token ids pass as they are."""
    if np.issubdtype(x_train.dtype, np.integer):
        return [x_train, *others], 0
    if spec == "train":
        axes = tuple(range(x_train.ndim - 1)) if x_train.ndim >= 4 else None
        mean = x_train.mean(axis=axes, keepdims=axes is not None)
        std = x_train.std(axis=axes, keepdims=axes is not None) + 1e-8
    else:
        mean, std = parse_stats(spec, x_train.shape[-1] if x_train.ndim >= 4 else 1)
    zero = np.asarray((0 - mean) / std, np.float32).reshape(-1)
    return [((x - mean) / std).astype(np.float32) for x in (x_train, *others)], zero


def load(cfg) -> Dataset:
    """Load `cfg.name` (a config's `data` section) with its validation split, normalized."""
    if cfg.name not in DATASETS:
        raise UserError(f"unknown dataset {cfg.name!r}; allowed: {', '.join(names())}")
    spec = cfg.get("normalize", "train")
    if spec != "train":
        parse_stats(spec, 3)  # format check before reading anything
    if cfg.get("split_seed", 0) < 0:
        raise UserError(f"data.split_seed {cfg.split_seed} out of range; allowed: 0 or more")
    part = parse_part(cfg.get("train_part", ""))
    (xtr, ytr), (xte, yte), num_classes, *meta = DATASETS.get(cfg.name).load(cfg)
    if cfg.get("classes", ""):
        keep = parse_classes(cfg.classes, num_classes, np.ndim(ytr))
        (xtr, ytr), (xte, yte) = (subset_classes(x, y, keep) for x, y in ((xtr, ytr), (xte, yte)))
        num_classes = len(keep)
    xtr, ytr, xva, yva = split_validation(xtr, ytr, cfg.validation_size, cfg.split_seed)
    if part is not None:
        k, n = part
        lo, hi = (k - 1) * len(ytr) // n, k * len(ytr) // n
        xtr, ytr = xtr[lo:hi], ytr[lo:hi]
    (xtr, xva, xte), zero = normalize(xtr, xva, xte, spec=spec)
    return Dataset(cfg.name, xtr, ytr.astype(np.int32), xva, yva.astype(np.int32), xte, yte.astype(np.int32),
                   num_classes, *(meta or [{}]), zero=zero)
