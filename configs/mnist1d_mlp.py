"""The demo: IMP on MNIST-1D (offline) with a LeNet-300-100-style MLP, rewinding to init, with
random-reinit and random-prune controls. About a few minutes on a 2-core CPU."""
from lth.config import base


def get_config():
    c = base()
    c.name = "mnist1d_mlp"
    c.model.name = "lenet_300_100"
    c.model.init = "kaiming_normal"
    c.data.name = "mnist1d"
    c.data.validation_size = 500
    c.train.optimizer = "adam"
    c.train.lr = 2e-3
    c.train.batch_size = 100
    c.train.duration = "40ep"
    c.train.eval_every = "5ep"
    c.prune.fraction = 0.2
    c.prune.scope = "global"
    c.prune.layer_fractions = "out=0.1"
    c.lottery.levels = 8
    c.lottery.rewind = "0it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "10ep"
    return c
