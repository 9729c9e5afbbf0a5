"""The quantization stages of `lth compress` (lth/studies/compress.py): int8 PTQ of every replicate of
a ticket (accuracy, zero-stays-zero, sizes) and the setup of its quantization-aware fine-tuning."""
from __future__ import annotations

import jax
import numpy as np
import qwix

from lth.compression import quantize as Q
from lth.errors import UserError
from lth.pruning import masks as M


def ptq_stage(s, quantizer, params, model_state, masks, calib, split) -> dict:
    """PTQ of every replicate: test accuracy, zero-stays-zero check, sizes (means over replicates)."""
    accs, size_rows, zeros_kept = [], [], True
    for r in range(s.replicates):
        p, ms, m = M.index(params, r), M.index(model_state, r), M.index(masks, r)
        qp = quantizer(p, ms, calib)
        q = Q.quantized_leaves(qp)
        if not q:
            raise UserError(f"qwix quantized no layer of model {s.cfg.model.name!r}; allowed: models whose layers are "
                            f"matmuls (MLPs, BERTs)")
        mask_of = dict(zip(M.leaf_paths(m), jax.tree.leaves(m)))
        for path, leaf in q.items():
            zeros_kept &= not np.any(np.asarray(leaf.qvalue)[~np.asarray(mask_of[path])])
        accs.append(quantizer.accuracy(qp, ms, split))
        size_rows.append(Q.sizes(p, m, s.prunable, q, ms))
    keys = ("dense_f32", "sparse_f32", "sparse_int8")
    return {"test_accuracy": accs, "zeros_kept": bool(zeros_kept), "quantized_layers": sorted(q),
            **{k: float(np.mean([row[k] for row in size_rows])) for k in keys}, "leaves": size_rows[0]["leaves"]}


def qat_setup(s, model):
    """A Setup whose trainer runs qwix's QAT model for compress.qat_duration at compress.qat_lr."""
    cfg = s.cfg
    qat = qwix.quantize_model(model, qwix.QtProvider(Q.rules(cfg, for_qat=True)))
    return s.finetuning(qat, cfg.compress.qat_duration, cfg.compress.qat_lr or cfg.train.lr / 10,
                        "compress.qat_duration")
