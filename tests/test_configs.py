"""Every shipped config loads, validates and builds (tfds datasets under mock_data), and the
published protocols say what their papers say."""
import glob
import os

import jax
import pytest
import tensorflow_datasets as tfds

from lth import lottery, masks as M
from lth.cli import load_config
from conftest import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds(path, tmp_path):
    cfg = load_config(path, ["train.duration=2it", "train.batch_size=8", "lottery.rewind=0it"])
    if cfg.model.pretrained:
        from lth.errors import UserError
        from lth.models.bert_import import resolve
        try:
            resolve(cfg.model.pretrained)
        except UserError as e:
            pytest.skip(str(e))
    if not cfg.model.name.startswith(("lenet", "bert", "minilm")):
        cfg.model.width = 0.125
    lottery.validate(cfg)
    if cfg.data.name != "mnist1d":
        cfg.data.data_dir = str(tmp_path)
        cfg.data.validation_size = min(cfg.data.validation_size, 16)
        with tfds.testing.mock_data(num_examples=64):
            s = lottery.setup(cfg)
    else:
        s = lottery.setup(cfg)
    if cfg.model.name == "lenet_300_100" and cfg.data.name == "mnist":
        params, _ = s.trainer.init_replicates(lottery.keys(s, 0), s.dataset.input_shape)
        assert M.num_params(M.index(params, 0)) == 266_610
    assert any(jax.tree.leaves(s.prunable))


def test_frankle_carbin_protocol():
    c = load_config(os.path.join(ROOT, "configs", "lenet_300_100_frankle_carbin.py"))
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.duration) == ("adam", 1.2e-3, 60, "50000it")
    assert (c.prune.scope, c.prune.fraction, c.prune.layer_fractions) == ("layerwise", 0.2, "out=0.1")
    assert (c.model.init, c.data.validation_size, c.lottery.rewind) == ("glorot_normal", 5000, "0it")


def test_openlth_recipe():
    c = load_config(os.path.join(ROOT, "configs", "openlth_mnist_lenet_300_100.py"))
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.duration) == ("sgd", 0.1, 128, "40ep")
    assert (c.prune.scope, c.prune.fraction, c.prune.layer_fractions) == ("global", 0.2, "out=0")


def test_cifar_recipes():
    vgg = load_config(os.path.join(ROOT, "configs", "cifar_vgg_16.py"))
    r20 = load_config(os.path.join(ROOT, "configs", "cifar_resnet_20.py"))
    r18 = load_config(os.path.join(ROOT, "configs", "cifar_resnet_18.py"))
    for c in (vgg, r20):
        assert (c.train.lr, c.train.momentum, c.train.weight_decay, c.train.batch_size, c.train.duration) == \
            (0.1, 0.9, 1e-4, 128, "160ep")
        assert (c.train.schedule, c.train.milestones, c.train.gamma, c.prune.fraction) == ("step", "80ep,120ep", 0.1, 0.2)
    assert vgg.prune.layer_fractions == "out=0" and vgg.lottery.rewind == "1000it" and r20.lottery.rewind == "500it"
    assert (r18.train.lr, r18.train.gamma, r18.train.weight_decay) == (0.01, 0.2, 5e-4)
    assert all(c.data.augment == "crop_flip" for c in (vgg, r20, r18))


def test_bert_lottery_protocol():
    """Chen et al. (2020): the encoder's linear kernels + pooler, rewound to the pretrained weights,
    a new classifier each level, AdamW with warmup and linear decay, a fraction of the original weights."""
    from lth.models.bert import PRUNABLE

    c = load_config(os.path.join(ROOT, "configs", "bert_minilm_bbc.py"))
    assert (c.model.name, c.model.pretrained, c.data.name) == ("minilm_l6", "minilm_l6", "bbc_news")
    assert (c.prune.prunable, c.prune.of, c.prune.scope, c.lottery.rewind) == (PRUNABLE, "original", "global", "0it")
    assert c.lottery.reinit == "classifier/.*" and set(c.lottery.controls.split(",")) == {"random_prune", "reinit"}
    assert (c.train.optimizer, c.train.schedule) == ("adamw", "linear") and c.train.warmup != "0it"
