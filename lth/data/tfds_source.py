"""tfds datasets through `tfds.data_source` from a prepared data dir, read whole into numpy."""
from __future__ import annotations

import os

import numpy as np

from lth.errors import NotPrepared

PREPARE_HINT = ("prepare it on a machine with internet: pip install -e '.[prepare]' && "
                "lth data prepare {name} --data-dir {dir}")


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def read_split(name, split, data_dir):
    """(list of example dicts, DatasetInfo) of a prepared split; UserError when it is not prepared."""
    import tensorflow_datasets as tfds

    try:
        src = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not there" / "wrong format"
        where = data_dir or default_data_dir()
        raise NotPrepared(f"dataset {name!r} ({split}) is not prepared in {where} "
                        f"({type(e).__name__}); " + PREPARE_HINT.format(name=name, dir=where)) from None
    return [src[i] for i in range(len(src))], tfds.builder(name, data_dir=data_dir).info


def _read(name, split, data_dir):
    items, _ = read_split(name, split, data_dir)
    x = np.stack([np.asarray(it["image"]) for it in items]).astype(np.float32) / 255.0
    y = np.asarray([it["label"] for it in items], np.int32)
    return x, y


def load(name, data_dir=None):
    """((x_train, y_train), (x_test, y_test), num_classes) for a tfds image dataset."""
    import tensorflow_datasets as tfds

    train, test = _read(name, "train", data_dir), _read(name, "test", data_dir)
    num_classes = tfds.builder(name, data_dir=data_dir).info.features["label"].num_classes
    return train, test, num_classes


def prepare(name, data_dir=None):
    """Download and prepare `name` in array_record format (needs TensorFlow and internet)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir or default_data_dir())
    builder.download_and_prepare(file_format="array_record")
    return builder.data_dir
