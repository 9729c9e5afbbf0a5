"""OpenLTH's cifar_resnet_20 (facebookresearch/open_lth models/cifar_resnet.py `default_hparams`):
ResNet-20 on all 50,000 CIFAR-10 training images, SGD lr 0.1 momentum 0.9 weight decay 1e-4, batch
128, 160 epochs with ×0.1 at 80 and 120, crop+flip, kaiming-normal weights, BatchNorm γ ~ U(0,1),
global magnitude pruning 20% per level over every conv and the output layer, rewinding to init
(late rewinding as in Frankle et al. 2020: --set lottery.rewind=500it). See lth/recipes.py `openlth_cifar`.
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`). CPU smoke run:
  lth lottery --config configs/openlth_cifar_resnet_20.py --set model.width=0.25 --set train.duration=20it \\
      --set train.batch_size=32 --set lottery.levels=1 --set lottery.controls="""
from lth.harness.config import base
from lth.harness.recipes import openlth_cifar


def get_config():
    return openlth_cifar(base(), "resnet20")
