"""OpenLTH's cifar_vgg_16 (facebookresearch/open_lth models/cifar_vgg.py `default_hparams`): VGG-16
with BatchNorm on all 50,000 CIFAR-10 training images, SGD lr 0.1 momentum 0.9 weight decay 1e-4,
batch 128, 160 epochs with ×0.1 at 80 and 120, crop+flip, kaiming-normal weights with PyTorch's own
bias init, BatchNorm γ ~ U(0,1), global magnitude pruning 20% per level with the output layer left
dense (pruning_layers_to_ignore='fc.weight'), rewinding to init (late rewinding, as Frankle et al.
2020 need for VGG-16: --set lottery.rewind=2000it). See lth/recipes.py `openlth_cifar`.
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`)."""
from lth.harness.config import base
from lth.harness.recipes import openlth_cifar


def get_config():
    c = openlth_cifar(base(), "vgg16")
    c.prune.layer_fractions = "out=0"   # models/cifar_vgg.py: pruning_layers_to_ignore='fc.weight'
    return c
