"""Knowledge distillation (Hinton, Vinyals & Dean 2015) in the one training loop.

loss = α·CE(y, student) + (1 − α)·T²·KL(softmax(teacher / T) ‖ softmax(student / T)).

The teacher is a trained level of a run (`train.distill.teacher`): `level_0` of the run being
trained (the dense network: every IMP level L ≥ 1 is distilled from it; level 0 itself trains on
labels alone, there is nothing to distill from yet), or `RUN_DIR/level_L` of another run, whose own
config.json gives the teacher's model (e.g. MiniLM-L6 teaching `bert_mini`). Replicate r learns from
the teacher's replicate r (a teacher run with one replicate teaches them all). The teacher runs in
eval mode (no dropout, BatchNorm statistics), its logits under stop_gradient. At α = 1 the loss is
α·CE + 0·KL: plain training, bit for bit.

This module is the library part (the loss, the option checks); finding and loading a teacher from a
run directory is the harness's (lth/harness/teacher.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lth.errors import UserError
from lth.options import options
from lth.training.losses import weighted_mean

# The `train.distill` section of the config.
OPTIONS = options(
    teacher=("", "a trained level: 'level_0' of this run, or a path RUN_DIR/level_L of another run"),
    temperature=(4.0, "T: both softmaxes at logits / T"),
    alpha=(0.5, "loss = alpha·CE + (1 − alpha)·T²·KL(teacher ‖ student)"),
)


def validate(d) -> None:
    """Checks of `train.distill` that need no files."""
    if not d.teacher:
        return
    if not 0.0 <= d.alpha <= 1.0:
        raise UserError(f"train.distill.alpha {d.alpha} out of range; allowed: 0 <= alpha <= 1")
    if not d.temperature > 0:
        raise UserError(f"train.distill.temperature {d.temperature} out of range; allowed: a positive temperature")


def loss(student_logits, teacher_logits, y, alpha: float, temperature: float, weight=None):
    """Mean over the batch (the examples weighing 1, given `weight`) of α·CE + (1 − α)·T²·KL(teacher ‖ student)
    at temperature T."""
    ce = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(student_logits, y), weight)
    t = temperature
    target = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t)
    kl = weighted_mean(optax.kl_divergence(jax.nn.log_softmax(student_logits.astype(jnp.float32) / t), target), weight)
    return alpha * ce + (1.0 - alpha) * t * t * kl


