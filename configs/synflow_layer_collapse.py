"""The layer-collapse study (Tanaka et al. 2020, Figures 1 and 3; ganguli-lab/Synaptic-Flow): VGG-16
with the SynFlow code's init (collapse.init = synflow), CIFAR-10 shapes (its data for the
data-dependent scores when prepared, synthetic inputs otherwise), global scores, SynFlow 100 rounds
with an exponential schedule, the others one shot; 100 examples for data-dependent scores
(prune_dataset_ratio 10 × 10 classes), OBD with 32 Hutchinson probes.
  lth collapse                                   # this config
  lth collapse --model resnet18 --max-log10 4    # flags set config keys (lth collapse --help)"""
from lth.harness.config import base


def get_config():
    c = base()
    c.name = "synflow_layer_collapse"
    c.model.name = "vgg16"
    c.data.name = "cifar10"
    c.pai.batch_size = 100
    c.pai.batches = 1
    c.pai.scope = "global"
    c.pai.schedule = "exponential"
    c.collapse.methods = "synflow,magnitude,random,snip,grasp,obd"
    c.collapse.max_log10 = 3.0
    c.collapse.step = 0.25
    c.collapse.init = "synflow"
    return c
