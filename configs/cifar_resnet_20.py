"""OpenLTH's cifar_resnet_20 recipe: ResNet-20 on CIFAR-10, SGD lr 0.1, momentum 0.9, weight decay
1e-4, batch 128, 160 epochs with ×0.1 at epochs 80 and 120, crop+flip augmentation, global
magnitude pruning 20% per level. Late rewinding to iteration 500 (Frankle et al. 2020).
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`). CPU smoke run:
  lth lottery --config configs/cifar_resnet_20.py --set model.width=0.25 --set train.duration=20it \\
      --set train.batch_size=32 --set lottery.rewind=5it --set lottery.levels=1 --set lottery.controls="""
from lth.config import base, openlth_cifar


def get_config():
    return openlth_cifar(base(), "resnet20", rewind="500it")
