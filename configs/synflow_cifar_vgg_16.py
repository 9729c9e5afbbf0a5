"""The SynFlow code's VGG-16 CIFAR-10 recipe (ganguli-lab/Synaptic-Flow, Models/lottery_vgg.py
`vgg16_bn`, Experiments/singleshot.py, arguments as its stored args.json): prune at init with each
score (SynFlow 100 rounds, others one shot) to `pai.compression`, then train 160 epochs with
Nesterov SGD lr 0.1 (×0.1 at 60 and 120), weight decay 1e-4, batch 128, crop+flip; kaiming-normal
weights, zero biases, BatchNorm γ = 1. See lth/recipes.py `synflow_cifar`.
  lth pai --config configs/synflow_cifar_vgg_16.py --set pai.compression=10^2
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`)."""
from lth.harness.config import base
from lth.harness.recipes import synflow_cifar


def get_config():
    c = synflow_cifar(base(), "vgg16")
    c.pai.compression = "10^1"
    return c
