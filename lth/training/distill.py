"""Knowledge distillation (Hinton, Vinyals & Dean 2015) in the one training loop.

loss = α·CE(y, student) + (1 − α)·T²·KL(softmax(teacher / T) ‖ softmax(student / T)).

The teacher is a trained level of a run (`train.distill.teacher`): `level_0` of the run being
trained (the dense network: every IMP level L ≥ 1 is distilled from it; level 0 itself trains on
labels alone, there is nothing to distill from yet), or `RUN_DIR/level_L` of another run, whose own
config.json gives the teacher's model (e.g. MiniLM-L6 teaching `bert_mini`). Replicate r learns from
the teacher's replicate r (a teacher run with one replicate teaches them all). The teacher runs in
eval mode (no dropout, BatchNorm statistics), its logits under stop_gradient. At α = 1 the loss is
α·CE + 0·KL: plain training, bit for bit.

Intermediate layers (`train.distill.kind`, BERT student and teacher; a student with fewer layers
distils from every k-th teacher layer, k = L_teacher / L_student):

- `patient` — Patient KD (Sun et al. 2019, PKD-skip), as intersun/PKD-for-BERT-Model-Compression
  src/KD_loss.py: (1 − a)·CE + a·T²·KLDivLoss(reduction='mean': averaged over batch × classes) with
  a = 1 − train.distill.alpha, plus β·MSE between the [CLS] hidden states of the student's layers
  but its last and the teacher's layers (j + 1)·k − 1 (its fc_layer_idx 1,3,5,7,9 for 6 of 12), each
  L2-normalized (`normalize`). (The reference rounds the patience term to half precision; lth does not.)
- `tinybert_layers` — TinyBERT's intermediate-layer distillation (Jiao et al. 2020), as
  huawei-noah/Pretrained-Language-Model TinyBERT/task_distill.py: Σ MSE over the attention scores of
  student layer i and teacher layer i·k + k − 1 (entries ≤ −100, the masked ones, set to 0 in both)
  plus Σ MSE over the hidden states (embeddings and layers) i and i·k, the student's through its
  `fit_dense` (model.fit_size) when it has one; no label loss.
- `tinybert_pred` — TinyBERT's prediction-layer distillation: soft cross entropy
  (−softmax(teacher / T) · log_softmax(student / T)), averaged over batch × classes as the
  reference's `.mean()`.

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
    kind=("logits", "logits (Hinton) | patient (Patient KD: + beta·MSE of normalized [CLS] states) | tinybert_layers "
                    "(attention scores + hidden states) | tinybert_pred (TinyBERT's soft cross entropy); BERT for all "
                    "but logits"),
    beta=(100.0, "patient: the weight β of the patience term (Sun et al. 2019 sweep 10–1000)"),
    normalize=(True, "patient: L2-normalize the [CLS] states before their MSE (PKD's normalize_patience)"),
)
KINDS = ("logits", "patient", "tinybert_layers", "tinybert_pred")
INTERMEDIATE = ("patient", "tinybert_layers")


def validate(d) -> None:
    """Checks of `train.distill` that need no files."""
    if not d.teacher:
        return
    if not 0.0 <= d.alpha <= 1.0:
        raise UserError(f"train.distill.alpha {d.alpha} out of range; allowed: 0 <= alpha <= 1")
    if not d.temperature > 0:
        raise UserError(f"train.distill.temperature {d.temperature} out of range; allowed: a positive temperature")
    kind = d.get("kind", "logits")
    if kind not in KINDS:
        raise UserError(f"unknown train.distill.kind {kind!r}; allowed: {', '.join(KINDS)}")
    if not d.get("beta", 0.0) >= 0:
        raise UserError(f"train.distill.beta {d.beta} out of range; allowed: 0 or more")


def layers_per_block(student_layers: int, teacher_layers: int) -> int:
    """k = L_teacher / L_student (TinyBERT asserts it divides; PKD-skip takes every k-th layer)."""
    if student_layers < 1 or teacher_layers % student_layers:
        raise UserError(f"a student of {student_layers} layers cannot distil from a teacher of {teacher_layers} "
                        f"layers; allowed: a number of student layers that divides the teacher's")
    return teacher_layers // student_layers


def check_models(kind: str, student, teacher) -> None:
    """UserError when `kind` cannot pair these models (BERTs; layers, heads and widths that fit)."""
    if kind == "logits" or kind == "tinybert_pred":
        return
    s, t = getattr(student, "cfg", None), getattr(teacher, "cfg", None)
    if not (hasattr(s, "layer_heads") and hasattr(t, "layer_heads")):
        raise UserError(f"train.distill.kind {kind!r} distils BERT layers; allowed for other models: logits")
    layers_per_block(s.layers, t.layers)
    if kind == "patient" and s.hidden != t.hidden:
        raise UserError(f"train.distill.kind 'patient' compares [CLS] states of width {s.hidden} and {t.hidden}; "
                        f"allowed: a student as wide as its teacher")
    if kind == "tinybert_layers":
        if s.heads != t.heads:
            raise UserError(f"train.distill.kind 'tinybert_layers' compares attention maps of {s.heads} and {t.heads} "
                            f"heads; allowed: as many heads as the teacher")
        if (s.fit_size or s.hidden) != t.hidden:
            raise UserError(f"train.distill.kind 'tinybert_layers': student hidden states of width "
                            f"{s.fit_size or s.hidden}, the teacher's {t.hidden}; allowed: model.fit_size={t.hidden}")


def _mse(a, b, weight):
    """nn.MSELoss (the mean over every element), over the examples weighing 1 given `weight`."""
    per = jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)).reshape(a.shape[0], -1), axis=1)
    return weighted_mean(per, weight)


def patient_loss(student: dict, teacher: dict, y, alpha: float, temperature: float, beta: float, normalize: bool,
                 weight=None):
    """Patient KD (PKD-skip): the reference's distillation_loss plus β·patience_loss (module docstring)."""
    t, a = temperature, 1.0 - alpha
    s_logits, t_logits = student["logits"].astype(jnp.float32), jax.lax.stop_gradient(teacher["logits"])
    target = jax.nn.softmax(t_logits.astype(jnp.float32) / t)
    kl = jnp.mean(target * (jnp.log(jnp.maximum(target, 1e-38)) - jax.nn.log_softmax(s_logits / t)), axis=-1)
    ce = optax.softmax_cross_entropy_with_integer_labels(s_logits, y)
    total = a * t * t * weighted_mean(kl, weight) + (1.0 - a) * weighted_mean(ce, weight)
    ls, lt = len(student["hidden"]) - 1, len(teacher["hidden"]) - 1
    k = layers_per_block(ls, lt)
    if ls < 2:   # a one-layer student: no layer but its last, no patience term (plain KD)
        return total
    sp = jnp.stack([student["hidden"][j + 1][:, 0] for j in range(ls - 1)], axis=1)
    tp = jnp.stack([jax.lax.stop_gradient(teacher["hidden"][(j + 1) * k])[:, 0] for j in range(ls - 1)], axis=1)
    if normalize:   # F.normalize(p=2, dim=2): x / max(‖x‖, 1e-12)
        sp = sp / jnp.maximum(jnp.linalg.norm(sp, axis=2, keepdims=True), 1e-12)
        tp = tp / jnp.maximum(jnp.linalg.norm(tp, axis=2, keepdims=True), 1e-12)
    return total + beta * _mse(tp, sp, weight)


def tinybert_layers_loss(student: dict, teacher: dict, weight=None):
    """TinyBERT's att_loss + rep_loss (module docstring)."""
    ls, lt = len(student["scores"]), len(teacher["scores"])
    k = layers_per_block(ls, lt)
    zero = lambda a: jnp.where(a <= -1e2, 0.0, a)  # noqa: E731
    att = sum(_mse(zero(student["scores"][i]), zero(jax.lax.stop_gradient(teacher["scores"][i * k + k - 1])), weight)
              for i in range(ls))
    reps = student["fit"] if student.get("fit") is not None else student["hidden"]
    rep = sum(_mse(reps[i], jax.lax.stop_gradient(teacher["hidden"][i * k]), weight) for i in range(ls + 1))
    return att + rep


def tinybert_pred_loss(student_logits, teacher_logits, temperature: float, weight=None):
    """TinyBERT's soft_cross_entropy(student / T, teacher / T): the mean over batch × classes."""
    t = temperature
    target = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t)
    per = jnp.mean(-target * jax.nn.log_softmax(student_logits.astype(jnp.float32) / t), axis=-1)
    return weighted_mean(per, weight)


def loss_of(kind: str, student, teacher, y, alpha: float, temperature: float, beta: float = 0.0,
            normalize: bool = True, weight=None):
    """The distillation loss of `kind` (student / teacher: logits, or features="all" dicts)."""
    if kind == "patient":
        return patient_loss(student, teacher, y, alpha, temperature, beta, normalize, weight)
    if kind == "tinybert_layers":
        return tinybert_layers_loss(student, teacher, weight)
    if kind == "tinybert_pred":
        return tinybert_pred_loss(student, teacher, temperature, weight)
    return loss(student, teacher, y, alpha, temperature, weight)


def loss(student_logits, teacher_logits, y, alpha: float, temperature: float, weight=None):
    """Mean over the batch (the examples weighing 1, given `weight`) of α·CE + (1 − α)·T²·KL(teacher ‖ student)
    at temperature T."""
    ce = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(student_logits, y), weight)
    t = temperature
    target = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t)
    kl = weighted_mean(optax.kl_divergence(jax.nn.log_softmax(student_logits.astype(jnp.float32) / t), target), weight)
    return alpha * ce + (1.0 - alpha) * t * t * kl


