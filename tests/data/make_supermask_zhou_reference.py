"""Writes tests/data/supermask_zhou_reference.npz: Zhou et al.'s Bernoulli supermask computed by the
reference's own code, uber-research/deconstructing-lottery-tickets (commit dbad201)
masked_networks.py — `get_effective_mask`, `make_signed_consts` and `MaskedDense.call`, their source
read from the file and run as written — for tests/test_supermask.py.

The reference needs TensorFlow 1.10 and Keras 2.2.4 (no wheels for Python 3.11), so its functions run
on TensorFlow 2 through tf.compat.v1 with eager execution: `learning_phase()` is True (training),
`gen_math_ops.round` is tf.round, and `tf.distributions.Bernoulli(...).sample()` returns the stored
draws `b` (so lth's test can use the same ones). A two-layer net of MaskedDense layers (12 → 16 ReLU →
5, with biases) with signed-constant kernels and dynamic scaling (its --signed_constant
--dynamic_scaling) runs on a seeded batch; the loss is the mean softmax cross entropy, and the
gradients of it with respect to each layer's mask scores S (seeded, not all at the --sigmoid_bias
init, so that σ'(S) varies) are taken with tf.GradientTape. Cases: dynamic scaling on and off.

Run once, in a scratch venv with tensorflow (2.21 here):
    python tests/data/make_supermask_zhou_reference.py /path/to/a/checkout/of/deconstructing-lottery-tickets
"""
import ast
import os
import sys
import types

import numpy as np
import tensorflow as tf

SRC = open(os.path.join(sys.argv[1], "masked_networks.py")).read()
TREE = ast.parse(SRC)


def source_of(name, cls=None):
    """The source of a top-level function, or of a method of a top-level class, as written."""
    for node in TREE.body:
        if cls is None and isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(SRC, node)
        if cls is not None and isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return "\n".join(line[4:] for line in ast.get_source_segment(SRC, item, padded=True)
                                     .splitlines())
    raise KeyError(name)


DRAWS = []   # the Bernoulli samples handed out, in order


class Bernoulli:
    def __init__(self, probs):
        self.probs = probs

    def sample(self):
        return DRAWS.pop(0)


tf1 = types.SimpleNamespace(**{k: getattr(tf.compat.v1, k) for k in dir(tf.compat.v1) if not k.startswith("_")})
tf1.distributions = types.SimpleNamespace(Bernoulli=Bernoulli)
tf1.div = tf.math.divide
tf1.to_float = lambda x: tf.cast(x, tf.float32)
env = {"tf": tf1, "gen_math_ops": types.SimpleNamespace(round=tf.round, mat_mul=tf.matmul),
       "learning_phase": lambda: tf.constant(True), "ops": types.SimpleNamespace(convert_to_tensor=tf.convert_to_tensor)}
for name in ("get_effective_mask", "make_signed_consts"):
    exec(source_of(name), env)
exec(source_of("call", "MaskedDense"), env)
call = env["call"]


class Layer:
    """What MaskedDense.call reads of `self`."""

    def __init__(self, kernel, bias, scores, activation, dynamic):
        self.kernel, self.bias = tf.constant(kernel), tf.constant(bias)
        self.kernel_mask = tf.Variable(scores)
        self.activation = activation
        self.use_bias = True
        self.round_mask = False
        self.signed_constant, self.const_multiplier, self.dynamic_scaling = True, 1.0, dynamic


def case(seed, dynamic):
    rng = np.random.default_rng(seed)
    shapes = [(12, 16), (16, 5)]
    kernels = [rng.normal(0, np.sqrt(2 / (i + o)), (i, o)).astype(np.float32) for i, o in shapes]
    biases = [rng.normal(0, 0.1, o).astype(np.float32) for _, o in shapes]
    scores = [rng.normal(0.0, 1.5, s).astype(np.float32) for s in shapes]
    draws = [(rng.uniform(size=s) < 1 / (1 + np.exp(-sc))).astype(np.float32) for s, sc in zip(shapes, scores)]
    draws[1][:, 0] = 0.0   # a column with no kept weight
    x = rng.normal(size=(8, 12)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    layers = [Layer(kernels[0], biases[0], scores[0], tf.nn.relu, dynamic),
              Layer(kernels[1], biases[1], scores[1], None, dynamic)]
    DRAWS[:] = [tf.constant(d) for d in draws]
    with tf.GradientTape() as tape:
        h = call(layers[0], tf.constant(x))
        logits = call(layers[1], h)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(y), logits=logits))
    grads = tape.gradient(loss, [la.kernel_mask for la in layers])
    signed = [la.kernel.numpy() for la in layers]   # call replaced each kernel by its signed constant
    out = {"x": x, "y": y, "loss": loss.numpy(), "logits": logits.numpy()}
    for i in range(2):
        out.update({f"kernel{i}": kernels[i], f"bias{i}": biases[i], f"scores{i}": scores[i], f"draw{i}": draws[i],
                    f"signed{i}": signed[i], f"grad{i}": grads[i].numpy()})
    return out


if __name__ == "__main__":
    stored = {}
    for name, seed, dynamic in (("rescaled", 0, True), ("plain", 1, False)):
        stored.update({f"{name}/{k}": v for k, v in case(seed, dynamic).items()})
    np.savez(os.path.join(os.path.dirname(os.path.abspath(__file__)), "supermask_zhou_reference.npz"), **stored)
    print("wrote", len(stored), "arrays; losses", stored["rescaled/loss"], stored["plain/loss"])
