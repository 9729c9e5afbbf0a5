"""Task-agnostic BERT tickets (Chen et al. 2020, "The Lottery Ticket Hypothesis for Pre-trained BERT
Networks"; Gordon et al. 2020): IMP on the masked-language-model objective, from the pretrained
MiniLM-L6 (rewinding to the pretrained weights), on BBC News article text without labels.

The data are `bbc_news_mlm`: every article cut into 64-token windows, BERT's dynamic 15 % masking
(80 % [MASK], 10 % random, 10 % unchanged; lth/training/objective.py), bbc_news's test articles held
out. The decoder over the 30,522-token vocabulary runs at the selected tokens only (at most 20 a
window, Google BERT's max_predictions_per_seq; over 20 of 62 at 15 % is rarer than 1 in 1,000).
all-MiniLM-L6-v2 ships no MLM head, so the head (dense + LayerNorm, decoder tied to the word
embeddings) starts fresh and is trained with the encoder; a checkpoint with `cls.predictions.*`
(any HF BertForMaskedLM) loads its own. The metric is MLM accuracy on the masked test tokens; the
summary's test_loss is log perplexity.

Sized for a 2-core CPU: 200 iterations of batch 32 per level (~6,400 windows, under half an epoch),
20 % of the original weights per level down to 40 %. Chen et al.'s MLM IMP rate: prune.fraction=0.1.
"""
from lth.harness.config import base
from lth.models.bert import PRUNABLE


def get_config():
    c = base()
    c.name = "bert_mlm_bbc"
    c.model.name = "minilm_l6"
    c.model.pretrained = "minilm_l6"
    c.data.name = "bbc_news_mlm"
    c.data.tokenizer = "minilm_l6"
    c.data.max_length = 64
    c.data.mlm_predictions = 20              # the decoder at <= 20 selected tokens a window (Google BERT's gather)
    c.data.validation_size = 500
    c.train.optimizer = "adamw"
    c.train.lr = 5e-5
    c.train.weight_decay = 0.01
    c.train.clip_norm = 1.0
    c.train.batch_size = 32
    c.train.duration = "200it"
    c.train.schedule = "linear"
    c.train.warmup = "20it"
    c.train.eval_every = "100it"
    c.train.eval_batch_size = 128
    c.prune.score = "magnitude"
    c.prune.prunable = PRUNABLE
    c.prune.fraction = 0.2
    c.prune.of = "original"
    c.prune.scope = "global"
    c.prune.layer_fractions = "pooler=0.2"   # the pooler is unused by the MLM: ranked on its own (as the classifier's)
    c.lottery.levels = 3
    c.lottery.rewind = "0it"                 # the pretrained weights (and the MLM head where the checkpoint has one)
    c.lottery.controls = "random_prune"
    c.run.checkpoint_every = "50it"
    return c
