"""The SynFlow paper's Figure 6 recipe on CIFAR-100: VGG-16-BN (ganguli-lab/Synaptic-Flow,
Results/data/0520_2020_cifar100_lottery_vgg16_bn/args.json; the CIFAR-10 recipe of lth/harness/recipes.py
`synflow_cifar` with CIFAR-100's data): prune at init with each score (SynFlow 100 rounds, the others
one shot) to 10×, 100× and 1000×, then train 160 epochs, Nesterov SGD 0.1 (×0.1 at 60 and 120),
weight decay 1e-4, batch 128, crop + flip; 3 seeds. Utils/load.py's CIFAR-100 normalization; the
prune set is 10 × 100 classes = 1,000 examples (--prune_dataset_ratio 10), here 4 batches of 250 (the
reference batches them 256, 256, 256, 232). experiments/reproduce_synflow_fig6.py prints lth's table
beside the published one. Needs CIFAR-100 (`cifar-100-python` in data.data_dir, or tfds)."""
from lth.harness.config import base
from lth.harness.recipes import synflow_cifar


def get_config():
    c = synflow_cifar(base(), "vgg16")
    c.name = "synflow_cifar100_vgg_16"
    c.data.name = "cifar100"
    c.data.recipe_for = "cifar100"
    c.data.normalize = "0.507,0.487,0.441/0.267,0.256,0.276"   # Utils/load.py, cifar100
    c.pai.batch_size = 250
    c.pai.batches = 4
    c.pai.compression = "10^1,10^2,10^3"
    c.replicates = 3
    return c
