"""OpenLTH's `mnist_lenet_300_100` (facebookresearch/open_lth models/mnist_lenet.py `default_hparams`):
LeNet-300-100 on all 60,000 MNIST training images, SGD lr 0.1 (no momentum), batch 128, 40 epochs,
kaiming-normal weights with PyTorch's own bias init, global magnitude pruning 20% per level with the
output layer never pruned (pruning_layers_to_ignore='fc.weight'), rewinding to init. OpenLTH
evaluates on the test set only: no validation split here either (--set data.validation_size=5000
adds one; then the early-stop columns use its loss).
Reads MNIST from data.data_dir: torchvision's MNIST/raw IDX files, Keras' mnist.npz, or a prepared
tfds dir (lth/data/files.py), e.g. --set data.data_dir=~/data (the folder holding MNIST/raw)."""
from lth.harness.config import base


def get_config():
    c = base()
    c.name = "openlth_mnist_lenet_300_100"
    c.model.name = "lenet_300_100"
    c.model.init = "kaiming_normal"      # models/initializers.py kaiming_normal: weights only
    c.model.bias_init = "torch_default"  # biases keep nn.Linear's own U(±1/√fan_in)
    c.data.name = "mnist"
    c.data.recipe_for = "mnist"
    c.data.validation_size = 0           # datasets/mnist.py: all 60,000 for training, the test set for evaluation
    c.data.normalize = "0.1307/0.3081"   # datasets/mnist.py: Normalize(mean=[0.1307], std=[0.3081])
    c.data.drop_last = False             # datasets/base.py DataLoader: 469 iterations an epoch, the last of 96 examples
    c.train.optimizer = "sgd"            # training_hparams: sgd, lr 0.1, 40ep (no momentum, no weight decay)
    c.train.lr = 0.1
    c.train.momentum = 0.0
    c.train.batch_size = 128             # dataset_hparams: batch_size 128
    c.train.duration = "40ep"
    c.train.eval_every = "1ep"
    c.prune.fraction = 0.2               # pruning_hparams: sparse_global, pruning_fraction 0.2
    c.prune.scope = "global"
    c.prune.layer_fractions = "out=0"    # pruning_layers_to_ignore='fc.weight'
    c.lottery.levels = 15
    c.lottery.rewind = "0it"
    c.lottery.controls = "reinit,random_prune"
    c.run.checkpoint_every = "5ep"
    return c
