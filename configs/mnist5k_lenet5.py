"""IMP on real MNIST digits with a conv net, offline: LeNet-5 on `mnist_5k` (3,500 train / 500
validation / 1,000 test), configs/mnist5k_lenet_300_100.py's recipe (Adam 1.2e-3, batch 60, Glorot
init, rewinding to init, both controls, 3 seeds, the output layer pruned at 10%) with 10 epochs a
level, pruned globally 20% per level, 8 levels (16.8% of the weights)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist5k_lenet_300_100 import get_config as mlp_config  # noqa: E402


def get_config():
    c = mlp_config()
    c.name = "mnist5k_lenet5"
    c.model.name = "lenet5"
    c.train.duration = "10ep"            # 580 iterations per level (a conv net on 2 CPU cores)
    c.train.eval_every = "1ep"
    c.prune.scope = "global"
    c.lottery.levels = 8
    c.run.checkpoint_every = "5ep"
    return c
