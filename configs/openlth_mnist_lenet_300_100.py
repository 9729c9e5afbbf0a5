"""OpenLTH's `mnist_lenet_300_100` recipe: SGD lr 0.1 (no momentum), batch 128, 40 epochs,
Kaiming-normal init, global magnitude pruning 20% per level with the output layer never pruned,
rewinding to init. OpenLTH evaluates on the test set only: no validation split here either.
Needs MNIST prepared for tfds (`lth data prepare mnist`)."""
from lth.config import base


def get_config():
    c = base()
    c.name = "openlth_mnist_lenet_300_100"
    c.model.name = "lenet_300_100"
    c.model.init = "kaiming_normal"
    c.data.name = "mnist"
    c.data.validation_size = 0
    c.train.optimizer = "sgd"
    c.train.lr = 0.1
    c.train.momentum = 0.0
    c.train.batch_size = 128
    c.train.duration = "40ep"
    c.train.eval_every = "1ep"
    c.prune.fraction = 0.2
    c.prune.scope = "global"
    c.prune.layer_fractions = "out=0"
    c.lottery.levels = 15
    c.lottery.rewind = "0it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "5ep"
    return c
