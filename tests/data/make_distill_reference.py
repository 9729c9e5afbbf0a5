"""Writes tests/data/distill_reference.npz: the losses of Patient KD and TinyBERT on seeded tensors,
computed by the references' own code (copied verbatim below), for tests/test_distill_layers.py.

- intersun/PKD-for-BERT-Model-Compression src/KD_loss.py: distillation_loss, patience_loss (the
  patience of layer outputs' [CLS] states: NLI_KD_training.py, `torch.stack(full_output[:-1])` of the
  student, the teacher's fc_layer_idx layers).
- huawei-noah/Pretrained-Language-Model TinyBERT/task_distill.py: soft_cross_entropy and the
  att_loss / rep_loss loop of the intermediate-layer stage (`not args.pred_distill`).

Run once with torch:  python tests/data/make_distill_reference.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import MSELoss


# ----- intersun/PKD-for-BERT-Model-Compression src/KD_loss.py (verbatim) -----
def distillation_loss(y, labels, teacher_scores, T, alpha, reduction_kd='mean', reduction_nll='mean'):
    if teacher_scores is not None:
        d_loss = nn.KLDivLoss(reduction=reduction_kd)(F.log_softmax(y / T, dim=1),
                                                      F.softmax(teacher_scores / T, dim=1)) * T * T
    else:
        assert alpha == 0, 'alpha cannot be {} when teacher scores are not provided'.format(alpha)
        d_loss = 0.0
    nll_loss = F.cross_entropy(y, labels, reduction=reduction_nll)
    tol_loss = alpha * d_loss + (1.0 - alpha) * nll_loss
    return tol_loss, d_loss, nll_loss


def patience_loss(teacher_patience, student_patience, normalized_patience=False):
    if normalized_patience:
        teacher_patience = F.normalize(teacher_patience, p=2, dim=2)
        student_patience = F.normalize(student_patience, p=2, dim=2)
    return F.mse_loss(teacher_patience.float(), student_patience.float())   # (the reference adds .half())


# ----- huawei-noah/Pretrained-Language-Model TinyBERT/task_distill.py (verbatim) -----
def soft_cross_entropy(predicts, targets):
    student_likelihood = torch.nn.functional.log_softmax(predicts, dim=-1)
    targets_prob = torch.nn.functional.softmax(targets, dim=-1)
    return (- targets_prob * student_likelihood).mean()


def tinybert_intermediate(student_atts, teacher_atts, student_reps, teacher_reps):
    att_loss = 0.
    rep_loss = 0.
    loss_mse = MSELoss()
    device = "cpu"
    teacher_layer_num = len(teacher_atts)
    student_layer_num = len(student_atts)
    assert teacher_layer_num % student_layer_num == 0
    layers_per_block = int(teacher_layer_num / student_layer_num)
    new_teacher_atts = [teacher_atts[i * layers_per_block + layers_per_block - 1]
                        for i in range(student_layer_num)]

    for student_att, teacher_att in zip(student_atts, new_teacher_atts):
        student_att = torch.where(student_att <= -1e2, torch.zeros_like(student_att).to(device),
                                  student_att)
        teacher_att = torch.where(teacher_att <= -1e2, torch.zeros_like(teacher_att).to(device),
                                  teacher_att)

        tmp_loss = loss_mse(student_att, teacher_att)
        att_loss += tmp_loss

    new_teacher_reps = [teacher_reps[i * layers_per_block] for i in range(student_layer_num + 1)]
    new_student_reps = student_reps
    for student_rep, teacher_rep in zip(new_student_reps, new_teacher_reps):
        tmp_loss = loss_mse(student_rep, teacher_rep)
        rep_loss += tmp_loss
    return rep_loss + att_loss


rng = np.random.default_rng(0)
B, C, T, H, A, LS, LT = 4, 3, 5, 8, 2, 2, 4
f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
out = {"s_logits": f(B, C), "t_logits": f(B, C), "labels": rng.integers(0, C, B).astype(np.int32)}
out["s_hidden"] = f(LS + 1, B, T, H)
out["t_hidden"] = f(LT + 1, B, T, H)
out["s_fit"] = f(LS + 1, B, T, H)          # the student's reps after its fit_dense
mask = np.ones((B, 1, 1, T), np.float32)
mask[:, ..., 3:] = 0                        # two padded positions: -10000 added, as BertModel does
out["s_scores"] = f(LS, B, A, T, T) + (1 - mask) * -10000.0
out["t_scores"] = f(LT, B, A, T, T) + (1 - mask) * -10000.0
t = {k: torch.tensor(v) for k, v in out.items()}
layers_per_block = LT // LS
fc_layer_idx = [(j + 1) * layers_per_block - 1 for j in range(LS - 1)]           # PKD-skip's teacher layers
s_patience = torch.stack([t["s_hidden"][1 + j][:, 0] for j in range(LS)][:-1]).transpose(0, 1)
t_patience = torch.stack([t["t_hidden"][1 + i][:, 0] for i in fc_layer_idx]).transpose(0, 1)
for normalize in (True, False):
    kd, _, _ = distillation_loss(t["s_logits"], t["labels"].long(), t["t_logits"], T=4.0, alpha=0.7)
    out[f"pkd_{normalize}"] = np.float32((kd + 100.0 * patience_loss(t_patience, s_patience, normalize)).item())
out["tinybert_layers"] = np.float32(tinybert_intermediate(list(t["s_scores"]), list(t["t_scores"]),
                                                          list(t["s_fit"]), list(t["t_hidden"])).item())
out["tinybert_pred"] = np.float32(soft_cross_entropy(t["s_logits"] / 2.0, t["t_logits"] / 2.0).item())
np.savez_compressed(os.path.join(os.path.dirname(__file__), "distill_reference.npz"), **out)
print({k: v for k, v in out.items() if np.ndim(v) == 0})
