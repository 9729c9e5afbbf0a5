"""Recipes of the reference codes, shared by the configs/*.py written from them: each sets the
fields of a `lth.config.base()` config as the reference's defaults do, naming the source file."""
from __future__ import annotations

from lth.models.zoo import synflow_init


def openlth_cifar(c, model: str):
    """OpenLTH's CIFAR-10 recipe, `default_hparams()` of models/cifar_vgg.py and models/cifar_resnet.py
    (facebookresearch/open_lth); shared by configs/openlth_cifar_vgg_16.py and openlth_cifar_resnet_20.py."""
    c.name = f"openlth_cifar_{model[:-2]}_{model[-2:]}"
    c.model.name = model
    c.model.init = "kaiming_normal"      # model_init='kaiming_normal': models/initializers.py, weights only
    c.model.bias_init = "torch_default"  # ...so biases keep nn.Conv2d / nn.Linear's own init
    c.model.bn_init = "uniform"          # batchnorm_init='uniform': models/bn_initializers.py, γ ~ U(0,1), β = 0
    c.data.name = "cifar10"
    c.data.recipe_for = "cifar10"
    c.data.validation_size = 0           # datasets/cifar10.py trains on all 50,000 and evaluates on the test set
    c.data.normalize = "0.485,0.456,0.406/0.229,0.224,0.225"   # datasets/cifar10.py: Normalize with ImageNet's stats
    c.data.augment = "crop_flip"         # datasets/cifar10.py: RandomHorizontalFlip, RandomCrop(32, 4)
    c.data.drop_last = False             # datasets/base.py DataLoader: torch's default, ceil(N / B) iterations an epoch
    # training_hparams: sgd, momentum 0.9, lr 0.1, milestone_steps '80ep,120ep', gamma 0.1, weight_decay 1e-4, 160ep;
    # dataset_hparams: batch_size 128.
    c.train.update(dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, batch_size=128,
                        duration="160ep", schedule="step", milestones="80ep,120ep", gamma=0.1, eval_every="4ep"))
    c.prune.score = "magnitude"          # pruning_hparams: sparse_global, pruning_fraction 0.2
    c.prune.fraction = 0.2
    c.prune.scope = "global"
    c.prune.prunable = r".*kernel"       # models/base.py prunable_layer_names: every Conv2d / Linear weight
    c.lottery.levels = 15
    c.lottery.rewind = "0it"             # lottery runner's default rewinding_steps
    #                                      (late rewinding: --set lottery.rewind=…)
    c.lottery.controls = "reinit,random_prune"   # lottery/branch/randomly_reinitialize.py, randomly_prune.py
    c.run.checkpoint_every = "4ep"
    return c


def synflow_cifar(c, model: str):
    """The SynFlow code's CIFAR-10 pruning-at-init recipe (ganguli-lab/Synaptic-Flow): Experiments/singleshot.py
    with the arguments of Results/data/singleshot/0630_2020_cifar10_lottery_vgg11_bn_run0/args.json and
    0520_2020_cifar100_lottery_vgg16_bn/args.json; data as Utils/load.py; shared by configs/synflow_cifar_*.py."""

    c.name = f"synflow_cifar_{model}"
    c.model.name = model
    synflow_init(model).write(c.model)   # Models/lottery_vgg.py / tinyimagenet_resnet.py `_initialize_weights`
    c.data.name = "cifar10"
    c.data.recipe_for = "cifar10"        # its normalization (and schedule) are CIFAR-10's
    c.data.validation_size = 0           # Utils/load.py: the whole train split; test split for evaluation
    c.data.normalize = "0.491,0.482,0.447/0.247,0.243,0.262"   # Utils/load.py, cifar10
    c.data.augment = "crop_flip"         # Utils/load.py: RandomCrop(32, padding=4), RandomHorizontalFlip
    # args.json: optimizer 'momentum' (Utils/load.py: SGD momentum 0.9, nesterov), lr 0.1, lr_drops [60, 120],
    # lr_drop_rate 0.1, weight_decay 1e-4, train_batch_size 128, post_epochs 160.
    c.train.update(dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, batch_size=128,
                        duration="160ep", schedule="step", milestones="60ep,120ep", gamma=0.1, eval_every="4ep"))
    c.prune.prunable = r".*kernel"       # Utils/generator.py masked_parameters: conv / linear weights (bias, BN,
                                         # residual off), the output layer included
    c.pai.methods = "synflow,snip,grasp,magnitude,random"   # args.json pruner_list (cs = ours, not shipped)
    c.pai.rounds = 0                     # prune_epoch_list: 1 for every score, 100 for synflow
    c.pai.schedule = "exponential"       # compression_schedule
    c.pai.scope = "global"               # mask_scope
    c.pai.batch_size = 100               # prune_dataset_ratio 10 × 10 classes = 100 examples, one batch of ≤ 256
    c.pai.batches = 1
    c.run.checkpoint_every = "4ep"
    return c
