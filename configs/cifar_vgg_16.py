"""OpenLTH's cifar_vgg_16 recipe: VGG-16 with BatchNorm on CIFAR-10, SGD lr 0.1, momentum 0.9,
weight decay 1e-4, batch 128, 160 epochs with ×0.1 at epochs 80 and 120, crop+flip augmentation,
global magnitude pruning 20% per level with the output layer not pruned. Late rewinding to
iteration 1000: IMP tickets of VGG-16 need it (Frankle et al. 2020).
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`). CPU smoke run:
  lth lottery --config configs/cifar_vgg_16.py --set model.width=0.125 --set train.duration=20it ..."""
from lth.config import base


def get_config():
    c = base()
    c.name = "cifar_vgg_16"
    c.model.name = "vgg16"
    c.model.init = "kaiming_normal"
    c.data.name = "cifar10"
    c.data.validation_size = 5000
    c.data.augment = "crop_flip"
    c.train.optimizer = "sgd"
    c.train.lr = 0.1
    c.train.momentum = 0.9
    c.train.weight_decay = 1e-4
    c.train.batch_size = 128
    c.train.duration = "160ep"
    c.train.schedule = "step"
    c.train.milestones = "80ep,120ep"
    c.train.gamma = 0.1
    c.train.eval_every = "4ep"
    c.prune.fraction = 0.2
    c.prune.scope = "global"
    c.prune.layer_fractions = "out=0"
    c.lottery.levels = 15
    c.lottery.rewind = "1000it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "4ep"
    return c
