"""Frankle & Carbin 2019 (The Lottery Ticket Hypothesis), LeNet-300-100 on MNIST: Adam 1.2e-3,
batch 60, 50K iterations, Glorot (Gaussian) init, layerwise pruning 20% per level with the output
layer at 10%, rewinding to init, early stopping measured on a 5K validation split.
Needs MNIST prepared for tfds (`lth data prepare mnist`)."""
from lth.harness.config import base


def get_config():
    c = base()
    c.name = "lenet_300_100_frankle_carbin"
    c.model.name = "lenet_300_100"
    c.model.init = "glorot_normal"
    c.data.name = "mnist"
    c.data.validation_size = 5000
    c.train.optimizer = "adam"
    c.train.lr = 1.2e-3
    c.train.batch_size = 60
    c.train.duration = "50000it"
    c.train.eval_every = "100it"
    c.prune.fraction = 0.2
    c.prune.scope = "layerwise"
    c.prune.layer_fractions = "out=0.1"
    c.lottery.levels = 20          # 0.8^20 ≈ 1.2% of the hidden-layer weights
    c.lottery.rewind = "0it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "5000it"
    return c
