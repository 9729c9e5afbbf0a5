"""OpenLTH's cifar_vgg_16 recipe: VGG-16 with BatchNorm on CIFAR-10, SGD lr 0.1, momentum 0.9,
weight decay 1e-4, batch 128, 160 epochs with ×0.1 at epochs 80 and 120, crop+flip augmentation,
global magnitude pruning 20% per level with the output layer not pruned. Late rewinding to
iteration 1000: IMP tickets of VGG-16 need it (Frankle et al. 2020).
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`)."""
from lth.config import base, openlth_cifar


def get_config():
    c = openlth_cifar(base(), "vgg16", rewind="1000it")
    c.prune.layer_fractions = "out=0"
    return c
