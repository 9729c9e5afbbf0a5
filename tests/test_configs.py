"""Every shipped config loads, validates and builds (tfds datasets under mock_data), and the
published protocols say what their papers say."""
import glob
import os

import jax
import pytest
import tensorflow_datasets as tfds
from conftest import ROOT

from lth.harness.config import load_config
from lth.pruning import masks as M
from lth.studies import lottery

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "[!_]*.py")))


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
        params, _ = s.trainer.init_replicates(lottery.keys(s, "init"), s.dataset.input_shape)
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
    assert (c.model.init, c.model.bias_init, c.data.validation_size, c.data.normalize) == \
        ("kaiming_normal", "torch_default", 0, "0.1307/0.3081")


def cfg_of(name):
    return load_config(os.path.join(ROOT, "configs", name + ".py"))


def test_openlth_cifar_recipes():
    """models/cifar_vgg.py, cifar_resnet.py, bn_initializers.py, initializers.py, datasets/cifar10.py."""
    vgg, r20 = cfg_of("openlth_cifar_vgg_16"), cfg_of("openlth_cifar_resnet_20")
    for c in (vgg, r20):
        assert (c.train.lr, c.train.momentum, c.train.nesterov, c.train.weight_decay, c.train.batch_size,
                c.train.duration) == (0.1, 0.9, False, 1e-4, 128, "160ep")
        assert (c.train.schedule, c.train.milestones, c.train.gamma, c.prune.fraction) == ("step", "80ep,120ep", 0.1,
                                                                                           0.2)
        assert (c.model.init, c.model.bias_init, c.model.bn_init) == ("kaiming_normal", "torch_default", "uniform")
        assert (c.data.validation_size, c.data.normalize) == (0, "0.485,0.456,0.406/0.229,0.224,0.225")
        assert c.data.augment == "crop_flip" and c.lottery.rewind == "0it"
    assert vgg.prune.layer_fractions == "out=0" and r20.prune.layer_fractions == ""


def test_synflow_recipes():
    """Synaptic-Flow Results/data/*/args.json, Utils/load.py, Models/lottery_vgg.py, tinyimagenet_resnet.py."""
    vgg, r18 = cfg_of("synflow_cifar_vgg_16"), cfg_of("synflow_cifar_resnet_18")
    assert (vgg.train.lr, vgg.train.milestones, vgg.train.gamma,
            vgg.train.weight_decay) == (0.1, "60ep,120ep", 0.1, 1e-4)
    assert (r18.train.lr, r18.train.gamma, r18.train.weight_decay) == (0.01, 0.2, 5e-4)
    for c in (vgg, r18):
        assert (c.train.optimizer, c.train.momentum, c.train.nesterov, c.train.batch_size) == ("sgd", 0.9, True, 128)
        assert (c.data.validation_size, c.data.normalize) == (0, "0.491,0.482,0.447/0.247,0.243,0.262")
        assert (c.pai.batch_size, c.pai.scope, c.pai.schedule) == (100, "global", "exponential")
    assert (vgg.model.init, vgg.model.bias_init, vgg.model.bn_init) == ("kaiming_normal", "zeros", "ones")
    assert (r18.model.init, r18.model.out_init, r18.model.bias_init) == ("kaiming_normal_fan_out", "torch_default",
                                                                         "torch_default")
    c100 = cfg_of("synflow_cifar100_vgg_16")   # 0520_2020_cifar100_lottery_vgg16_bn/args.json, Utils/load.py
    assert (c100.data.name, c100.data.normalize) == ("cifar100", "0.507,0.487,0.441/0.267,0.256,0.276")
    assert (c100.pai.batch_size * c100.pai.batches, c100.pai.compression, c100.replicates) == (
        1000, "10^1,10^2,10^3", 3)
    assert (c100.train.lr, c100.train.milestones, c100.train.weight_decay, c100.train.duration) == (
        0.1, "60ep,120ep", 1e-4, "160ep")


@pytest.mark.parametrize("sets, match", [
    (["model.init=he_normal"], "unknown model.init 'he_normal'; allowed: .*kaiming_normal_fan_out"),
    (["model.bias_init=ones"], "unknown model.bias_init 'ones'; allowed: zeros, torch_default"),
    (["model.bn_init=uniform"], "model.bn_init 'uniform' does not apply; allowed: ones"),
    (["data.name=mnist"], "data.name 'mnist'.* written for cifar10; allowed: cifar10"),
    (["data.normalize=0.5/0.1,0.2"], "bad data.normalize '0.5/0.1,0.2'"),
])
def test_bad_init_and_recipe_input(sets, match, tmp_path):
    """One-line errors before any work (CLI: exit 2)."""
    from lth.errors import UserError

    name = "mnist1d_mlp" if sets[0].startswith("model.bn_init") else "openlth_cifar_resnet_20"
    c = load_config(os.path.join(ROOT, "configs", name + ".py"), sets)
    c.data.data_dir = str(tmp_path)
    with pytest.raises(UserError, match=match):
        lottery.validate(c)
        lottery.setup(c)


def test_bert_lottery_protocol():
    """Chen et al. (2020): the encoder's linear kernels + pooler, rewound to the pretrained weights,
    a new classifier each level, AdamW with warmup and linear decay, a fraction of the original weights."""
    from lth.models.bert import PRUNABLE

    c = load_config(os.path.join(ROOT, "configs", "bert_minilm_bbc.py"))
    assert (c.model.name, c.model.pretrained, c.data.name) == ("minilm_l6", "minilm_l6", "bbc_news")
    assert (c.prune.prunable, c.prune.of, c.prune.scope, c.lottery.rewind) == (PRUNABLE, "original", "global", "0it")
    assert c.lottery.reinit == "classifier/.*" and set(c.lottery.controls.split(",")) == {"random_prune", "reinit"}
    assert (c.train.optimizer, c.train.schedule) == ("adamw", "linear") and c.train.warmup != "0it"
