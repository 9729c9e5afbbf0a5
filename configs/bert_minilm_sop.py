"""A second downstream task on offline data: sentence-order prediction (ALBERT's SOP, Lan et al. 2020)
on BBC News sentence pairs — two consecutive sentences, in order or swapped — with the pretrained
MiniLM-L6 and the recipe of configs/bert_minilm_bbc.py (IMP by global magnitude over Chen et al.'s
prunable set, rewinding to the pretrained weights, a new classifier each level).

bbc_sop: 2 pairs per article; 3,560 train (less the validation carve) / 890 test pairs, from the same
seeded test articles as bbc_news. With bbc_news and bbc_news_mlm it makes the task-agnostic vs
task-specific ticket comparison of `lth transfer`.
"""
from lth.configs.bert_minilm_bbc import get_config as bbc_news


def get_config():
    c = bbc_news()   # the BBC topic recipe, on the sentence pairs
    c.name = "bert_minilm_sop"
    c.data.name = "bbc_sop"
    c.data.sop_pairs = 2
    return c
