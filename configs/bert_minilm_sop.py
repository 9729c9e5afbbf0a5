"""A second downstream task on offline data: sentence-order prediction (ALBERT's SOP, Lan et al. 2020)
on BBC News sentence pairs — two consecutive sentences, in order or swapped — with the pretrained
MiniLM-L6 and the recipe of configs/bert_minilm_bbc.py (IMP by global magnitude over Chen et al.'s
prunable set, rewinding to the pretrained weights, a new classifier each level).

bbc_sop: 2 pairs per article; 3,560 train (less the validation carve) / 890 test pairs, from the same
seeded test articles as bbc_news. With bbc_news and bbc_news_mlm it makes the task-agnostic vs
task-specific ticket comparison of `lth transfer`.
"""
from lth.harness.config import base
from lth.models.bert import PRUNABLE


def get_config():
    c = base()
    c.name = "bert_minilm_sop"
    c.model.name = "minilm_l6"
    c.model.pretrained = "minilm_l6"
    c.data.name = "bbc_sop"
    c.data.sop_pairs = 2
    c.data.tokenizer = "minilm_l6"
    c.data.max_length = 64
    c.data.validation_size = 200
    c.train.optimizer = "adamw"
    c.train.lr = 1e-4
    c.train.weight_decay = 0.01
    c.train.clip_norm = 1.0
    c.train.batch_size = 32
    c.train.duration = "1ep"
    c.train.schedule = "linear"
    c.train.warmup = "10it"
    c.train.eval_every = "1ep"
    c.train.eval_batch_size = 128
    c.prune.score = "magnitude"
    c.prune.prunable = PRUNABLE
    c.prune.fraction = 0.2
    c.prune.of = "original"
    c.prune.scope = "global"
    c.prune.layer_fractions = "pooler=0.2"
    c.lottery.levels = 4
    c.lottery.rewind = "0it"
    c.lottery.reinit = "classifier/.*"
    c.lottery.controls = "random_prune,reinit"
    c.run.checkpoint_every = "25it"
    return c
