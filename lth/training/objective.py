"""What a network is trained to predict: the loss and the metric of the one training loop.

`Classification` (the default): logits [B, classes], labels [B]; the loss is the mean softmax cross
entropy over the examples, the metric accuracy.

`MaskedLM` (BERT's masked-language-model objective, Devlin et al. 2019): the inputs are token ids
[B, T] and so are the labels (the original tokens). Each batch is masked afresh inside the step, as
HF's `DataCollatorForLanguageModeling` (transformers/data/data_collator.py, `torch_mask_tokens`):
every token that is not special ([PAD], [CLS], [SEP], [UNK], [MASK]: the tokenizer's
`all_special_ids`) is selected with probability `rate` (0.15); of the
selected, 80 % become [MASK], 10 % a token drawn uniformly from the whole vocabulary, 10 % stay as
they are; the labels are the original ids at the selected positions and IGNORE (-100) elsewhere. The
loss is HF `BertForMaskedLM`'s: cross entropy over the logits [B, T, V] averaged over the selected
tokens of the batch (CrossEntropyLoss with ignore_index=-100); the metric is the accuracy on them,
and the evaluation's mean loss is the log of the perplexity. Evaluation masks each chunk with a fixed
key (the same positions at every evaluation, for every replicate), so numbers are comparable across
levels and arms.

With `predictions` K > 0 (data.mlm_predictions; Google BERT's `max_predictions_per_seq`,
run_pretraining.py `gather_indexes`): a sequence keeps at most its first K selected tokens (the rest
are neither changed nor predicted), and the decoder over the vocabulary runs at those K positions
only. `prepare` then returns the inputs [B, T + K] — the masked ids, then the K positions (selected
first, in order; unused slots point at position 0 and are ignored) — and the labels [B, K]; the
BERT's MLM head (`Bert.mlm_predictions`) splits them. Where no sequence has more than K selected
tokens the loss and metric equal the ungathered ones; the decoder's cost falls by T / K.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from lth.training.losses import weighted_mean

IGNORE = -100
EVAL_KEY = 20190604   # the fixed key of the evaluation masks


@dataclasses.dataclass(frozen=True)
class Classification:
    name = "classification"
    prepares = False

    def prepare(self, key, x, y):
        return x, y

    def loss(self, logits, y, weight=None):
        return weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, y), weight)

    def sums(self, logits, y, w):
        """(summed loss, summed correct, count) over a chunk whose examples weigh `w`."""
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(loss * w), jnp.sum((jnp.argmax(logits, -1) == y) * w), jnp.sum(w)


@dataclasses.dataclass(frozen=True)
class MaskedLM:
    mask_id: int
    vocab_size: int
    special: tuple            # ids never selected: [PAD], [CLS], [SEP], [UNK], [MASK]
    rate: float = 0.15
    predictions: int = 0      # K > 0: at most K predicted tokens per sequence, gathered before the decoder
    name = "mlm"
    prepares = True

    def prepare(self, key, x, y):
        """(masked ids, labels): `y` holds the original ids [B, T]."""
        ids = jnp.asarray(y, jnp.int32)
        k_sel, k_mask, k_rand, k_tok = jax.random.split(key, 4)
        candidate = ~jnp.isin(ids, jnp.asarray(self.special, jnp.int32))
        selected = (jax.random.uniform(k_sel, ids.shape) < self.rate) & candidate
        if self.predictions:   # the first K selected of each sequence
            selected &= jnp.cumsum(selected, axis=-1) <= self.predictions
        to_mask = selected & (jax.random.uniform(k_mask, ids.shape) < 0.8)
        to_random = selected & ~to_mask & (jax.random.uniform(k_rand, ids.shape) < 0.5)
        random_ids = jax.random.randint(k_tok, ids.shape, 0, self.vocab_size, jnp.int32)
        masked = jnp.where(to_mask, self.mask_id, jnp.where(to_random, random_ids, ids))
        labels = jnp.where(selected, ids, IGNORE)
        if not self.predictions:
            return masked.astype(jnp.asarray(x).dtype), labels
        k = self.predictions
        order = jnp.argsort(~selected, axis=-1, stable=True)[:, :k]     # the selected positions first, in order
        used = jnp.take_along_axis(selected, order, axis=-1)
        positions = jnp.where(used, order, 0).astype(jnp.int32)
        packed = jnp.concatenate([masked, positions], axis=-1)
        return packed.astype(jnp.asarray(x).dtype), jnp.where(used, jnp.take_along_axis(ids, order, axis=-1), IGNORE)

    @staticmethod
    def _token_losses(logits, labels):
        valid = labels != IGNORE
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
        return loss, valid

    def loss(self, logits, labels, weight=None):
        loss, valid = self._token_losses(logits, labels)
        v = valid.astype(loss.dtype) * (1.0 if weight is None else weight[:, None])
        return jnp.sum(loss * v) / jnp.maximum(jnp.sum(v), 1.0)

    def sums(self, logits, labels, w):
        loss, valid = self._token_losses(logits, labels)
        v = valid.astype(loss.dtype) * w[:, None]
        return jnp.sum(loss * v), jnp.sum((jnp.argmax(logits, -1) == labels) * v), jnp.sum(v)


CLASSIFICATION = Classification()


def of_meta(meta: dict):
    """The objective a dataset's `meta` asks for (`objective: mlm` with its token ids), else classification."""
    if meta.get("objective") == "mlm":
        return MaskedLM(meta["mask_id"], meta["vocab_size"], tuple(meta["special_ids"]),
                        float(meta.get("mlm_rate", 0.15)), int(meta.get("mlm_predictions", 0)))
    return CLASSIFICATION
