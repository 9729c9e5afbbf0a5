"""Model registry (parameter counts, shapes) and data loaders (MNIST-1D, tfds under mock_data)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lth import data as D
from lth.errors import UserError
from lth.models import zoo
from lth.pruning import masks as M


def init(name, shape, classes=10):
    model = zoo.build(name, classes, "glorot_normal", shape)
    return model, jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, *shape)))


def test_lenet_300_100_parameter_count_on_mnist():
    _, v = init("lenet_300_100", (28, 28, 1))
    assert M.num_params(v["params"]) == 266_610


def test_any_hidden_widths_and_lenet5_shapes():
    model, v = init("lenet_7_5_3", (40,))
    assert [v["params"][k]["kernel"].shape for k in ("fc_0", "fc_1", "fc_2", "out")] == [(40, 7), (7, 5), (5, 3),
                                                                                         (3, 10)]
    model, v = init("lenet5", (28, 28, 1))
    assert M.num_params(v["params"]) == 156 + 2416 + 48120 + 10164 + 850


@pytest.mark.slow
def test_lenet5_learns_real_digits_through_the_public_api():
    """The conv path on real images (mnist_5k, offline): a 50% magnitude ticket of LeNet-5 trained
    100 steps by lth.train_masked classifies held-out digits far above chance (10%)."""
    import lth

    data = lth.load_data("mnist_5k", validation_size=500, normalize="0.1307/0.3081")
    model = lth.build_model("lenet5", 10, data.input_shape, init=lth.models.Init("glorot_normal", conv_impl="xla"))
    v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(data.x_train[:2]))
    assert model.apply(v, jnp.asarray(data.x_test[:3])).shape == (3, 10)
    ticket = lth.prune.prune(lth.score("magnitude", None, v), M.ones_like(v["params"]),
                             M.prunable_tree(v["params"], ".*kernel"), fraction=0.5)
    trained, row = lth.train_masked(model, v, ticket, data, optimizer="adam", lr=1.2e-3, batch_size=60,
                                    duration="100it", eval_every="100it")
    assert row["test_accuracy"] > 0.85, row
    w, m = np.asarray(trained["params"]["conv_1"]["kernel"]), np.asarray(ticket["conv_1"]["kernel"])
    assert np.all(w[~m] == 0) and 0.4 < m.mean() < 0.6


def test_bad_model_names():
    with pytest.raises(UserError, match="resnet999.*allowed"):
        zoo.build("resnet999", 10, "glorot_normal", (40,))
    with pytest.raises(UserError, match="lenet5"):
        zoo.build("lenet5", 10, "glorot_normal", (40,))
    with pytest.raises(UserError, match="model.init 'zeros'"):
        zoo.build("lenet_10", 10, "zeros", (40,))


def data_cfg(name, **kw):
    c = ml_collections.ConfigDict(dict(name=name, data_dir="", validation_size=500, split_seed=0))
    c.update(kw)
    return c


def test_mnist1d_splits_and_normalization():
    ds = D.load(data_cfg("mnist1d"))
    assert ds.x_train.shape == (3500, 40) and ds.x_val.shape == (500, 40) and ds.x_test.shape == (1000, 40)
    assert ds.num_classes == 10 and set(np.unique(ds.y_train)) == set(range(10))
    assert abs(ds.x_train.mean()) < 1e-4 and abs(ds.x_train.std() - 1) < 1e-3
    again = D.load(data_cfg("mnist1d"))
    np.testing.assert_array_equal(ds.x_val, again.x_val)  # fixed carve


def test_tfds_loader_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=64):
        ds = D.load(data_cfg("mnist", data_dir=str(tmp_path), validation_size=14))
    assert ds.x_train.shape == (50, 28, 28, 1) and ds.x_val.shape == (14, 28, 28, 1)
    assert ds.x_test.shape[1:] == (28, 28, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert abs(float(ds.x_train.mean())) < 1e-3


def test_tfds_not_prepared_says_how(tmp_path):
    with pytest.raises(UserError, match=r"'mnist'.*not prepared.*lth data prepare mnist"):
        D.load(data_cfg("mnist", data_dir=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or written


def test_unknown_dataset_and_bad_validation_size():
    with pytest.raises(UserError, match="'cifar7'.*allowed"):
        D.load(data_cfg("cifar7"))
    with pytest.raises(UserError, match="validation_size 4000"):
        D.load(data_cfg("mnist1d", validation_size=4000))


GEMM_SLOW = [(3, 1, 1, 8), (3, 2, 1, 9), (5, 1, 2, 7)]   # `make test-all`; the 1×1 strided case stays in the fast tier


@pytest.mark.parametrize("kernel,stride,pad,hw", [(1, 2, 0, 8)] + [pytest.param(*c, marks=pytest.mark.slow)
                                                                   for c in GEMM_SLOW])
def test_gemm_convolution_equals_xla_forward_and_gradients(kernel, stride, pad, hw):
    """lth.models.conv: im2col + GEMM equals XLA's convolution (strides, padding, 1×1 shortcuts),
    and so do both gradients; chunked batches give the same result (on the strided case)."""
    from lth.models import conv

    x = jax.random.normal(jax.random.PRNGKey(0), (6, hw, hw, 5))
    w = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 5, 7)) * 0.2
    dy = jax.random.normal(jax.random.PRNGKey(2), conv.conv_xla(x, w, stride, pad).shape)
    outs = {}
    for impl in ("xla", "gemm"):
        def fwd_bwd(x, w, dy, impl=impl):   # under jit: one compile, not one per op
            y, vjp = jax.vjp(lambda x, w: conv.conv2d(x, w, stride, pad, impl), x, w)
            return (y, *vjp(dy))
        outs[impl] = jax.jit(fwd_bwd)(x, w, dy)
    for a, b in zip(outs["xla"], outs["gemm"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(a))))
    if (kernel, stride) != (3, 2):   # chunking is one code path: checked on the strided case only (~1 s a compile)
        return
    small = conv.MAX_PATCH_BYTES
    try:
        conv.MAX_PATCH_BYTES = 1   # one example per chunk
        chunked = jax.jit(lambda x, w: conv.conv_gemm(x, w, stride, pad))(x, w)
        np.testing.assert_allclose(np.asarray(chunked), np.asarray(outs["gemm"][0]), rtol=1e-5, atol=1e-5)
    finally:
        conv.MAX_PATCH_BYTES = small
    assert conv.resolve("auto") == ("gemm" if jax.default_backend() == "cpu" else "xla")


def test_auto_convolution_choice_per_layer():
    """`auto` on CPU: im2col + GEMM, except XLA's convolution for few input channels over large maps."""
    from lth.models.conv import choose
    assert choose("auto", (128, 32, 32, 16), (3, 3, 16, 16), 1) == "xla"     # ResNet-20 stage 0 (75 MB of patches)
    assert choose("auto", (128, 32, 32, 64), (3, 3, 64, 64), 1) == "gemm"    # VGG's 64-channel layers
    assert choose("auto", (60, 14, 14, 6), (5, 5, 6, 16), 1) == "gemm"       # LeNet-5 (3.6 MB)
    assert choose("auto", (128, 32, 32, 16), (3, 3, 16, 32), 2) == "gemm"    # strided into stage 1 (19 MB)
    assert choose("gemm", (128, 32, 32, 16), (3, 3, 16, 16), 1) == "gemm"    # explicit choices stand
    assert choose("xla", (128, 32, 32, 64), (3, 3, 64, 64), 1) == "xla"


def test_flat_drawn_initializers_equal_jax_variance_scaling_bit_for_bit():
    """lth draws kernels flat and reshapes (fast to compile on CPU); the values must be exactly
    jax.nn.initializers' for every kernel init, conv and linear shapes alike."""
    from jax.nn import initializers as I

    from lth.models.inits import KERNEL

    ref = {"kaiming_normal": I.variance_scaling(2.0, "fan_in", "normal"),
           "kaiming_normal_fan_out": I.variance_scaling(2.0, "fan_out", "normal"),
           "kaiming_uniform": I.variance_scaling(2.0, "fan_in", "uniform"),
           "xavier_normal": I.variance_scaling(1.0, "fan_avg", "normal"),
           "xavier_uniform": I.variance_scaling(1.0, "fan_avg", "uniform"),
           "torch_default": I.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
           "kaiming_truncated_normal": I.he_normal(), "glorot_truncated_normal": I.glorot_normal(),
           "lecun_normal": I.lecun_normal()}
    assert set(ref) == set(KERNEL)
    key = jax.random.PRNGKey(7)
    conv = {"xavier_uniform"}   # a conv kernel's fans (fan_avg: both); every distribution is drawn flat in 2-D too
    for name, (fn, _) in KERNEL.items():
        for shape in [(7, 5)] + [(2, 2, 3, 2)] * (name in conv):   # few 4-D draws: jax's own are slow to compile
            assert np.array_equal(np.asarray(fn(key, shape)), np.asarray(ref[name](key, shape))), (name, shape)


def test_family_traits_are_declared_not_guessed_from_names():
    """The traits the studies and `lth bench` read come from each family's registration: residual
    (smart_ratio's ResNet formula), the inputs it is made for, the SynFlow code's init; a module's
    own shrink rule is its SHRINK attribute."""
    from lth.models.inits import Init

    assert [zoo.family(n).residual for n in ("resnet20", "resnet18", "vgg16", "lenet_300_100", "bert_tiny")] == \
        [True, True, False, False, False]
    assert zoo.family("lenet5").inputs == ((28, 28, 1), 10, 60) and zoo.family("vgg11").inputs[0] == (32, 32, 3)
    assert zoo.synflow_init("resnet18") == Init("kaiming_normal_fan_out", "torch_default", "ones", out="torch_default")
    assert zoo.synflow_init("vgg16") == zoo.synflow_init("resnet20") == Init("kaiming_normal", "zeros", "ones")
    assert zoo.synflow_init("lenet_300_100") == Init("torch_default", "torch_default", "ones")
    assert [getattr(zoo.build(n, 10, "kaiming_normal", s), "SHRINK", "") for n, s in
            (("lenet_8", (40,)), ("lenet5", (28, 28, 1)), ("vgg11", (32, 32, 3)))] == ["units", "units", ""]
