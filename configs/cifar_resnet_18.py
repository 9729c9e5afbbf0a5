"""The SynFlow paper's CIFAR-10 ResNet-18 recipe: SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 128, 160 epochs with ×0.2 at epochs 60 and 120, crop+flip augmentation; here trained as IMP
with global magnitude pruning 20% per level and late rewinding to iteration 1000.
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`)."""
from lth.config import base, openlth_cifar


def get_config():
    c = openlth_cifar(base(), "resnet18", rewind="1000it")
    c.train.update(dict(lr=0.01, weight_decay=5e-4, milestones="60ep,120ep", gamma=0.2))
    return c
