"""The demo: IMP on MNIST-1D (generated offline) with a LeNet-300-100-style MLP, rewinding to
init, 12 levels (down to 6.9% of the weights), random-reinit and random-prune controls, two seeds
trained together. About 1.5 minutes on a 2-core CPU."""
from lth.harness.config import base


def get_config():
    c = base()
    c.name = "mnist1d_mlp"
    c.replicates = 2
    c.model.name = "lenet_300_100"
    c.model.init = "kaiming_normal"
    c.data.name = "mnist1d"
    c.data.validation_size = 500     # 3,500 train / 500 validation / 1,000 test
    c.train.optimizer = "adam"
    c.train.lr = 1e-3
    c.train.batch_size = 100
    c.train.duration = "30ep"        # 1,050 iterations per level
    c.train.eval_every = "5ep"
    c.prune.fraction = 0.2
    c.prune.scope = "global"
    c.prune.layer_fractions = "out=0.1"  # output layer at half the rate (Frankle & Carbin)
    c.lottery.levels = 12
    c.lottery.rewind = "0it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "10ep"
    return c
