"""A downstream pair task on offline data: next-sentence prediction (BERT's NSP, Devlin et al. 2019) on
BBC News sentence pairs — a sentence and its next sentence (label 0), or a random sentence of another
article (label 1) — with the pretrained MiniLM-L6 and the recipe of configs/bert_minilm_bbc.py.
bbc_nsp: 2 pairs per article from the same seeded train / test articles as bbc_news. Beside bbc_sop
(which MiniLM-L6 does not learn in this one-epoch recipe: 51.1 % test accuracy, chance) it is the
second downstream task of the task-agnostic vs task-specific ticket comparison (`lth transfer`).
"""
from lth.configs.bert_minilm_bbc import get_config as bbc_news


def get_config():
    c = bbc_news()   # the BBC topic recipe, on the sentence pairs
    c.name = "bert_minilm_nsp"
    c.data.name = "bbc_nsp"
    c.data.sop_pairs = 2
    return c
