"""The SynFlow paper's CIFAR-10 ResNet-18 recipe: SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 128, 160 epochs with ×0.2 at epochs 60 and 120, crop+flip augmentation; here trained as IMP
with global magnitude pruning 20% per level and late rewinding to iteration 1000.
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`)."""
from lth.config import base


def get_config():
    c = base()
    c.name = "cifar_resnet_18"
    c.model.name = "resnet18"
    c.model.init = "kaiming_normal"
    c.data.name = "cifar10"
    c.data.validation_size = 5000
    c.data.augment = "crop_flip"
    c.train.optimizer = "sgd"
    c.train.lr = 0.01
    c.train.momentum = 0.9
    c.train.weight_decay = 5e-4
    c.train.batch_size = 128
    c.train.duration = "160ep"
    c.train.schedule = "step"
    c.train.milestones = "60ep,120ep"
    c.train.gamma = 0.2
    c.train.eval_every = "4ep"
    c.prune.fraction = 0.2
    c.prune.scope = "global"
    c.lottery.levels = 15
    c.lottery.rewind = "1000it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "4ep"
    return c
