"""IMP on real MNIST digits with a conv net, offline: LeNet-5 on `mnist_5k` (3,500 train / 500
validation / 1,000 test), as configs/mnist5k_lenet_300_100.py (Adam 1.2e-3, batch 60, Glorot init,
rewinding to init, both controls, 3 seeds) but 10 epochs a level, pruned globally, 20% per level, the output layer at
10%, 8 levels (16.8% of the weights)."""
from lth.config import base


def get_config():
    c = base()
    c.name = "mnist5k_lenet5"
    c.replicates = 3
    c.model.name = "lenet5"
    c.model.init = "glorot_normal"
    c.data.name = "mnist_5k"
    c.data.validation_size = 500
    c.data.normalize = "0.1307/0.3081"
    c.train.optimizer = "adam"
    c.train.lr = 1.2e-3
    c.train.batch_size = 60
    c.train.duration = "10ep"            # 580 iterations per level (a conv net on 2 CPU cores)
    c.train.eval_every = "1ep"
    c.prune.fraction = 0.2
    c.prune.scope = "global"
    c.prune.layer_fractions = "out=0.1"
    c.lottery.levels = 8
    c.lottery.rewind = "0it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "5ep"
    return c
