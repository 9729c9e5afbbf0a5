"""The SynFlow code's CIFAR-10 ResNet-18 (ganguli-lab/Synaptic-Flow Models/tinyimagenet_resnet.py
`resnet18`, --model-class tinyimagenet): kaiming_normal_(mode='fan_out') on every conv, PyTorch's
default init for the linear layer, BatchNorm γ = 1; pruning at init as configs/synflow_cifar_vgg_16.py.
Training: the repository stores no args.json for ResNet-18, so the schedule is the SynFlow paper's
hyperparameter table for ResNet-18 (Tanaka et al. 2020, appendix): Nesterov SGD lr 0.01, weight
decay 5e-4, batch 128, 160 epochs with ×0.2 at 60 and 120, crop+flip.
  lth pai --config configs/synflow_cifar_resnet_18.py --set pai.compression=10^1
Needs CIFAR-10 prepared for tfds (`lth data prepare cifar10`)."""
from lth.harness.config import base
from lth.harness.recipes import synflow_cifar


def get_config():
    c = synflow_cifar(base(), "resnet18")
    c.train.update(dict(lr=0.01, weight_decay=5e-4, milestones="60ep,120ep", gamma=0.2))
    return c
