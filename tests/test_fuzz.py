"""Property-based fuzzing (hypothesis) of every study's declared options and of the public API's
building blocks: each random input gives a valid run plan (or result), or a one-line UserError that
names the key (or the value) at fault — never another exception.

- Config options: for each study, 1-4 of the declared keys of the sections it reads (sometimes any
  declared key: options of several studies together) get values of the declared type, out-of-range
  values (negative, zero, huge, NaN / inf, empty, junk text, other types) as `--set KEY=VALUE`
  strings (the CLI's path, through load_config / apply_overrides) or assigned to the ConfigDict as
  Python values (the API's path); then `api.prepare` (validation, data, model, trainer: no training).
  A plan that is accepted must hold up: at least one training step, keys for every replicate, the
  data in device chunks, a non-empty score batch.
- Building blocks: build_model (model names, classes, input shapes, inits, widths), load_data
  (dataset names and data.* options), score and prune_at_init (score names, densities in and out of
  (0, 1], NaN, rounds, schedules, scopes, prunable regexes, input shapes, pai options).

Every test prints the number of examples it tried (pytest -s shows them) and asserts a floor on it;
the slow tier runs many more examples, and `lth compress`'s options on a finished run.
"""
from __future__ import annotations

import math
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DEMO, TINY
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lth import api
from lth.errors import UserError
from lth.harness import run as R
from lth.harness.config import declarations, load_config
from lth.options import split_list
from lth.pruning import masks as M
from lth.registry import DATASETS, DISTRIBUTIONS, SCORES, SPARSE_METHODS, STUDIES
from lth.training.loop import device_data

FAST, SLOW = 0.5, 3   # example-count multipliers of the two tiers (the fast tier: ~6 minutes in all)


def fuzz_settings(n: int):
    """Reproducible (derandomized, no example database), no deadline (a first call compiles)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ----- the declared options ------------------------------------------------------------------------
DECLARED = {}
for _section, _declared in declarations():
    for _key, _opt in _declared.items():
        DECLARED.setdefault(f"{_section}.{_key}" if _section else _key, _opt.default)
SKIP = {"run.out"}   # api.prepare(out=...) sets it
BASE_SECTIONS = ("", "model", "data", "train", "train.distill", "prune", "run")
READS = {   # the sections each study reads beyond the base ones
    "lottery": ("lottery", "pai"), "heads": ("lottery", "heads", "pai"), "pai": ("pai",),
    "stability": ("lottery", "stability", "pai"), "collapse": ("pai", "collapse"), "sparse": ("sparse",),
    "compare": ("lottery", "pai", "sparse", "compare"), "compress": ("lottery", "compress"),
}
# per-study settings on top of TINY that make the unfuzzed config valid for the tiny MLP
BASES = {"stability": ["stability.rewind_points=0it,10it"],
         "collapse": ["collapse.max_log10=2", "collapse.methods=synflow,magnitude,random"],
         "compare": ["compare.densities=0.5,0.2"]}
CONFIG_STUDIES = [s for s in STUDIES.names() if not getattr(STUDIES.get(s), "FROM_RUN", False)]


def section_of(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def keys_of(study: str) -> list[str]:
    sections = BASE_SECTIONS + READS.get(study, (study,))
    return [k for k in DECLARED if k not in SKIP and section_of(k) in sections]


ALL_KEYS = [k for k in DECLARED if k not in SKIP]


def focus_keys(study: str) -> list[str]:
    """The keys an example of `study` fuzzes first: its own sections' (lottery: the base sections'
    too, which every study reads); other keys join as extras."""
    own = [k for k in keys_of(study) if section_of(k) not in BASE_SECTIONS]
    return keys_of(study) if study == "lottery" else own


# examples per study in the fast tier (x SLOW in the slow one): the base sections' options are fuzzed first
# by `lottery` only; an accepted collapse / pai plan binds its scores (SynFlow's precision check), dearer
EXAMPLES = {"lottery": 180, "collapse": 50, "pai": 70, "stability": 80, "heads": 80, "compare": 80}
NAMES = sorted({*SCORES.names(), *DISTRIBUTIONS.names(), *SPARSE_METHODS.names(), *DATASETS.names(), *STUDIES.names()})
WORDS = NAMES + [
    "lenet_24_12", "lenet_300_100", "lenet5", "resnet20", "vgg16", "bert_tiny", "kaiming_normal", "glorot_uniform",
    "zeros", "ones", "torch_default", "xla", "gemm", "auto", "float64", "scaled32", "exact", "hutchinson", "fisher",
    "global", "layerwise", "weights", "units", "remaining", "original", "lr", "reinit", "random_prune", "shuffle",
    "invert", "recompute", "interpolate", "absmax", "minmax", "rms,2", "dynamic", "static", "none", "train", "sgd",
    "adam", "adamw", "constant", "step", "cosine", "linear", "exponential", "vmap", "unroll", "sequential", "data",
    "replicates", "level_0", "synflow", "model", ".*kernel", ".*", "fc_0.*", "out=0.1", "fc_0=0.5", "out=1",
    "(", "[", "*", "a)", "x=", "=0.5", "(=0.5", "0.1307/0.3081", "nan/1", "0/0", "1/inf", "10^1", "10^2.5",
    "10^-1", "10^x", "10^400", "1e9", "", " ", ",", ",,", "None", "True", "[1]", "{}", "'a'", "0x10", "1_0", "é",
    "../x", "/", "a/b", "\n", "\x00",
]
DURATIONS = ["0it", "1it", "5it", "10it", "20it", "59it", "60it", "61it", "1000000it", "0ep", "0.5ep", "1ep",
             "1.5ep", "1e3ep", "-1it", "it", "ep", "10", "0", "50%", "0%", "100%", "200%", "nan%", "2 ep", "3.7it"]
NUMBERS = ["0", "1", "-1", "2", "0.5", "1.0", "0.0", "-0.0", "1e-300", "1e300", "1e999", "-1e999", "nan", "inf",
           "2147483647", "2147483648", "4294967296", "9223372036854775808", "1" + "0" * 400, "-" + "9" * 30]

texts = st.text(max_size=10)
words = st.sampled_from(WORDS)
word_lists = st.lists(st.one_of(words, st.sampled_from(DURATIONS), st.sampled_from(NUMBERS)),
                      min_size=0, max_size=4).map(",".join)
junk = st.one_of(words, texts, st.sampled_from(NUMBERS), st.sampled_from(DURATIONS))
ints = st.one_of(st.integers(-3, 70), st.sampled_from([0, -1, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63, 10 ** 30,
                                                       -10 ** 30]))
floats = st.one_of(st.floats(-2, 2), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]))


def text_value(key: str):
    """A `--set KEY=VALUE` value for `key`: of its declared type, out of range, or junk."""
    default = DECLARED[key]
    if isinstance(default, bool):
        return st.one_of(st.sampled_from(["True", "False", "true", "false", "0", "1", "yes", ""]), junk)
    if isinstance(default, int):
        return st.one_of(ints.map(str), ints.map(str), floats.map(repr), junk)
    if isinstance(default, float):
        return st.one_of(floats.map(repr), floats.map(repr), ints.map(str), junk)
    return st.one_of(junk, word_lists, st.sampled_from(DURATIONS), st.just(default),
                     st.sampled_from([p.strip() for p in default.split(",") if p.strip()] or [""]))


def plausible(key: str):
    """A sensible `--set` value for `key`: its default, an item of it, or a small value of its type."""
    default = DECLARED[key]
    if isinstance(default, bool):
        return st.sampled_from(["True", "False"])
    if isinstance(default, int):
        return st.sampled_from([str(default), "1", "2", "5"])
    if isinstance(default, float):
        return st.sampled_from([repr(default), "0.1", "0.5"])
    return st.sampled_from([default, *[p.strip() for p in default.split(",") if p.strip()]])


def typed_value(key: str):
    """A Python value for `key` assigned to the ConfigDict: mostly of its type, sometimes another one."""
    default = DECLARED[key]
    if isinstance(default, bool):
        own = st.booleans()
    elif isinstance(default, int):
        own = ints
    elif isinstance(default, float):
        own = st.one_of(floats, ints)
    else:
        own = st.one_of(junk, word_lists)
    return st.one_of(own, own, own, st.sampled_from([None, "", "x", 1, 1.5, True, (1,), [1]]))


@st.composite
def overrides(draw, study: str):
    """(['key=value', ...], [(key, python value), ...]): 1-4 keys of the study's sections (now and
    then of any section: several studies' options together), each as --set text or a Python value."""
    pool = keys_of(study)
    first = draw(st.sampled_from(focus_keys(study)))
    more = draw(st.lists(st.sampled_from(pool) | st.sampled_from(ALL_KEYS), max_size=3, unique=True))
    sets, typed = [], []
    for i, key in enumerate(dict.fromkeys([first, *more])):
        if i and draw(st.booleans()):   # an extra key often gets a sensible value: the first one's is checked
            sets.append(f"{key}={draw(plausible(key))}")
        elif draw(st.integers(0, 3)):
            sets.append(f"{key}={draw(text_value(key))}")
        else:
            typed.append((key, draw(typed_value(key))))
    return sets, typed


# ----- the oracle ----------------------------------------------------------------------------------
def candidates(key: str, value) -> list[str]:
    """Substrings of which one names this input in a refusal: the key (dotted or its last part) or
    the value (as written, each comma-list item, its repr / str)."""
    out = [key]
    if len(key.rsplit(".", 1)[-1]) >= 3:
        out.append(key.rsplit(".", 1)[-1])
    if isinstance(value, str):
        out += [value.strip(), repr(value.strip()), repr(value)]
        out += [p.strip() for p in value.split(",")] + [p.strip().split("=")[0] for p in value.split(",")]
    else:
        out += [repr(value), str(value)]
    return [c for c in out if c]


def assert_one_line_naming(e: UserError, inputs) -> None:
    """`e` is one line (what the CLI prints) and names one of `inputs` [(key, value)]."""
    msg = str(e)
    assert msg.strip() and len(msg.strip().splitlines()) == 1 and "\n" not in msg, f"not one line: {msg!r}"
    names = [c for key, value in inputs for c in candidates(key, value)]
    assert any(c in msg for c in names), f"names none of {[k for k, _ in inputs]}: {msg!r}"


def assign(cfg, key: str, value) -> None:
    """cfg[key] = value as the Python API allows it (ml_collections' own type check is a refusal the
    caller sees as its TypeError: the config is never built)."""
    *head, last = key.split(".")
    node = cfg
    for h in head:
        node = node[h]
    node[last] = value


_BASE_CFGS: dict = {}


def base_config(study: str):
    """The study's unfuzzed config (TINY + BASES), loaded once (load_config of a file costs ~60 ms)."""
    if study not in _BASE_CFGS:
        _BASE_CFGS[study] = load_config(DEMO, TINY + BASES.get(study, []))
    return _BASE_CFGS[study]


_BASELINE: dict = {}


def baseline_refusal(study: str) -> str | None:
    """The refusal of the unfuzzed config (`lth heads` refuses the MLP: it has no attention heads):
    a fuzzed config refused the same way is refused for a reason that is not the fuzzed input's."""
    if study not in _BASELINE:
        try:
            api.prepare(study, load_config(base_config(study)), out=tempfile.mkdtemp(prefix="lth-fuzz-"))
            _BASELINE[study] = None
        except UserError as e:
            _BASELINE[study] = str(e)
    return _BASELINE[study]


def check_plan(study: str, s) -> None:
    """An accepted run plan holds up: what the first steps of any run compute works."""
    assert s.total >= 1 and s.eval_every >= 0 and s.checkpoint_every >= 0
    assert s.trainer.steps_per_epoch >= 1 and 1 <= s.trainer.batch_size <= len(s.dataset.y_train)
    ks = R.keys(s, "init")
    assert ks.shape[0] == s.replicates
    assert np.all(np.isfinite(s.dataset.x_train))
    device_data(s.trainer, s.dataset)
    imp_data = study in ("lottery", "heads") and SCORES.get(s.cfg.prune.score).needs_data   # IMP by snip, ...
    if study in ("pai", "collapse", "compare") or imp_data:
        x, y = s.score_batch()   # the data-dependent scores' batch
        assert len(y) >= 1 and len(x) == len(y)
    if study in ("pai", "collapse"):   # every score of the plan binds its pai options
        methods = split_list(s.cfg.pai.methods if study == "pai" else s.cfg.collapse.methods)
        params, ms = R.init_variables(s, ks)
        variables = {"params": M.index(params, 0), **M.index(ms, 0)}
        for m in methods:
            s.scorer(m, variables)


def prepare_or_refuse(study: str, sets, typed, out: str, tried: dict) -> None:
    """The property: a valid plan or a one-line UserError naming a fuzzed (or base) input."""
    tried[study] = tried.get(study, 0) + 1
    inputs = [tuple(item.split("=", 1)) for item in sets] + list(typed)
    base = [tuple(item.split("=", 1)) for item in TINY + BASES.get(study, [])]
    try:
        cfg = load_config(base_config(study), sets)   # the --set path (a ConfigDict is copied)
        for key, value in typed:
            try:
                assign(cfg, key, value)
            except TypeError:   # ml_collections refused the Python value: no config to check
                return
        s, _ = api.prepare(study, cfg, out=out)
    except UserError as e:
        if str(e) == baseline_refusal(study):
            return
        # a fuzzed value can make an unfuzzed setting wrong (train.duration=5it: the rewind point 10it is late)
        assert_one_line_naming(e, inputs + [(k, v) for k, v in base if len(v) >= 3])
        return
    check_plan(study, s)


# The crashes the fuzzer found (each was a traceback, or a plan that crashed once run), replayed on every
# run before the random examples: (['key=value' --set], [(key, Python value)]).
FOUND = {
    "lottery": [([], [("lottery.controls", "\x1b")]),
                (["seed=9223372036854775808"], []), ([], [("seed", None)]), ([], [("replicates", None)]),
                ([], [("seed", 2 ** 40)]), (["data.split_seed=-1"], []), (["prune.prunable=("], []),
                (["lottery.reinit=("], []), (["train.eval_batch_size=0"], []), ([], [("train.lr", math.nan)]),
                ([], [("train.momentum", math.inf)]), (["train.lr=1" + "0" * 400], []),
                (["data.normalize=nan/1"], []), (["prune.score=obd", "pai.obd_probes=0"], []),
                (["train.lr=-1"], []), (["lottery.rewind=1" + "0" * 400], []), (["train.duration=1e13"], [])],
    "pai": [([], [("pai.methods", "\x1b")]), ([], [("pai.sanity", "\x1b")]),
            (["pai.batch_size=0"], []), (["pai.batches=-1"], []), (["pai.synflow_precision=x"], []),
            (["pai.methods=obd", "pai.obd_method=x"], []), (["pai.methods=grasp", "pai.grasp_temperature=0"], []),
            (["pai.methods=obd", "pai.obd_probes=0"], [])],
    "collapse": [([], [("collapse.methods", "\x1b")]),
                 (["collapse.step=1e-300"], []), ([], [("collapse.max_log10", 1e308)]),
                 ([], [("collapse.step", math.nan)]),
                 (["pai.batch_size=2147483647", "data.validation_size=-1"], [])],
    "sparse": [(["sparse.custom=(=0.5"], []), ([], [("sparse.methods", ",\x1b")]),
               ([], [("sparse.distributions", "\x1b")])],
    "compare": [(["prune.fraction=1e-300"], []), (["prune.fraction=0.999999"], []),
                (["lottery.rewind=1" + "0" * 400], []), (["lottery.rewind=0it", "model.width=0.1"], [])],
    "stability": [(["stability.eval_examples=-1"], [])],
    "transfer": [([], [("transfer.sources", "out=0.1")])],
}


def fuzz_study(study: str, n: int) -> int:
    out = tempfile.mkdtemp(prefix="lth-fuzz-")
    tried: dict = {}

    def prop(ov):
        prepare_or_refuse(study, *ov, out, tried)

    prop = given(overrides(study))(prop)
    for ov in FOUND.get(study, []):
        prop = example(ov)(prop)
    fuzz_settings(n)(prop)()
    assert not os.listdir(out), "prepare wrote into the runs folder"
    return tried.get(study, 0)


@pytest.mark.parametrize("study", CONFIG_STUDIES)
def test_fuzz_study_options(study):
    n = fuzz_study(study, int(EXAMPLES.get(study, 100) * FAST))
    print(f"fuzz {study}: {n} configs tried")
    assert n >= EXAMPLES.get(study, 100) * FAST + len(FOUND.get(study, []))


@pytest.mark.slow
@pytest.mark.parametrize("study", CONFIG_STUDIES)
def test_fuzz_study_options_many(study):
    n = fuzz_study(study, EXAMPLES.get(study, 100) * SLOW)
    print(f"fuzz {study}: {n} configs tried")
    assert n >= EXAMPLES.get(study, 100) * SLOW + len(FOUND.get(study, []))


# ----- studies of a finished run (compress, ...): their --set keys on the run's config -----------------
FROM_RUN_STUDIES = [s for s in STUDIES.names() if getattr(STUDIES.get(s), "FROM_RUN", False)]
FROM_RUN_BASES = {"oneshot": ["oneshot.patterns=2:4"]}   # the tiny MLP's 12 inputs of its last layer: no 4:8


def settable_keys(study: str) -> list[str]:
    """The keys `--set` may change on a finished run (the study's SETTABLE prefixes)."""
    prefixes = tuple(getattr(STUDIES.get(study), "SETTABLE", (f"{study}.", "run.")))
    return [k for k in ALL_KEYS if k.startswith(prefixes)]


@st.composite
def settable_overrides(draw, study: str):
    keys = settable_keys(study)
    first = draw(st.sampled_from(keys))
    more = draw(st.lists(st.sampled_from(keys), max_size=2, unique=True))
    return [f"{k}={draw(text_value(k) if not i or draw(st.booleans()) else plausible(k))}"
            for i, k in enumerate(dict.fromkeys([first, *more]))]


@pytest.mark.parametrize("study", FROM_RUN_STUDIES)
def test_fuzz_from_run_validation(study):
    """A finished-run study's keys through the harness's validation of that study (cheap: no run;
    the slow tier runs the whole from_run on a finished one)."""
    command = STUDIES.get(study).COMMAND
    tried = [0]

    @fuzz_settings(int(150 * FAST))
    @given(settable_overrides(study))
    def prop(sets):
        tried[0] += 1
        try:
            cfg = load_config(base_config("lottery"), sets)
            R.validate(cfg, command)
        except UserError as e:
            assert_one_line_naming(e, [tuple(item.split("=", 1)) for item in sets])

    prop()
    print(f"fuzz {study} validation: {tried[0]} configs tried")
    assert tried[0] >= 150 * FAST


@pytest.mark.slow
@pytest.mark.parametrize("study", FROM_RUN_STUDIES)
def test_fuzz_from_run(study, finished_run):
    """A finished-run study's --set keys on a tiny finished lottery run: a plan (job) or a one-line
    refusal (timing every stage, compress.speed, is left off: it measures, it does not check)."""
    tried = [0]
    base = FROM_RUN_BASES.get(study, [])
    api.prepare_from_run(study, finished_run, overrides=base)   # the unfuzzed plan is valid

    @fuzz_settings(40 * SLOW)
    @given(settable_overrides(study))
    def prop(sets):
        tried[0] += 1
        sets = base + [s for s in sets if not s.startswith("compress.speed=")]
        try:
            api.prepare_from_run(study, finished_run, overrides=sets)
        except UserError as e:
            assert_one_line_naming(e, [tuple(item.split("=", 1)) for item in sets])

    prop()
    print(f"fuzz {study} from_run: {tried[0]} configs tried")
    assert tried[0] >= 40 * SLOW


# ----- building blocks -----------------------------------------------------------------------------
MODEL_NAMES = ["lenet_24_12", "lenet_8", "lenet5", "resnet20", "vgg11", "bert_tiny", "nope", "", "lenet_", "lenet_0",
               "lenet_-1", "resnet", None, 3]
shapes = st.one_of(
    st.lists(st.integers(-2, 40), min_size=0, max_size=3).map(tuple),
    st.lists(st.sampled_from([1, 8, 16, 32]), min_size=1, max_size=3).map(tuple),
    st.sampled_from([None, 40, "40", (40.0,), (True,), ("a",), (2 ** 40,), [40]]))


@st.composite
def model_args(draw):
    return dict(name=draw(st.sampled_from(MODEL_NAMES) | texts),
                num_classes=draw(st.sampled_from([0, -1, 1, 2, 10, 10.5, None, "10", True]) | st.integers(-5, 100)),
                input_shape=draw(shapes),
                init=draw(st.sampled_from(["kaiming_normal", "glorot_uniform", "foo", "", None, 3])),
                width=draw(st.sampled_from([1.0, 0.5, 0.0, -1.0, 65.0, 1e-9, math.nan, math.inf, "1", None, 2])))


def test_fuzz_build_model():
    """build_model: a model that initializes on inputs of the shape it was built for, or a UserError."""
    tried = [0]

    @fuzz_settings(int(200 * FAST))
    @given(model_args())
    def prop(a):
        tried[0] += 1
        try:
            model = api.build_model(**a)
        except UserError as e:
            assert_one_line_naming(e, list(a.items()) + [("model", a["name"])])
            return
        k = jax.random.PRNGKey(0)
        dtype = jnp.int32 if getattr(model, "cfg", None) is not None else jnp.float32
        out = jax.eval_shape(lambda: model.apply(model.init({"params": k, "dropout": k},
                                                            jnp.zeros((1, *a["input_shape"]), dtype), train=False),
                                                 jnp.zeros((2, *a["input_shape"]), dtype), train=False))
        assert out.shape == (2, a["num_classes"])

    prop()
    print(f"fuzz build_model: {tried[0]} calls tried")
    assert tried[0] >= 200 * FAST


DATA_VALUES = {
    "validation_size": st.sampled_from([0, 1, 500, -1, 3999, 4000, 10 ** 9, 1.5, "x", None]),
    "split_seed": st.sampled_from([0, 1, -1, 2 ** 40, 1.0, "0"]),
    "normalize": st.sampled_from(["train", "0.5/0.25", "nan/1", "0/0", "1/inf", "x", "", "1,2/3", "0.1/-1"]),
    "augment": st.sampled_from(["none", "flip_crop", "x", ""]),
    "drop_last": st.sampled_from([True, False, 1, "yes"]),
    "bogus": st.just(1),
}


@st.composite
def data_args(draw):
    name = draw(st.sampled_from(["mnist1d", "mnist1d", "mnist1d", "arrays", "nope", "", "MNIST1D", None, 3]) | texts)
    keys = draw(st.lists(st.sampled_from(sorted(DATA_VALUES)), max_size=2, unique=True))
    return name, {k: draw(DATA_VALUES[k]) for k in keys}


def test_fuzz_load_data():
    """load_data: a Dataset or a UserError naming the dataset or the option."""
    tried = [0]

    @fuzz_settings(int(100 * FAST))
    @given(data_args())
    def prop(a):
        tried[0] += 1
        name, options = a
        try:
            ds = api.load_data(name, **options)
        except UserError as e:
            assert_one_line_naming(e, [("name", name), ("dataset", name)] + list(options.items()))
            return
        assert len(ds.y_train) >= 1 and len(ds.x_train) == len(ds.y_train)
        assert np.all(np.isfinite(ds.x_train))

    prop()
    print(f"fuzz load_data: {tried[0]} calls tried")
    assert tried[0] >= 100 * FAST


_MLP: dict = {}


def mlp():
    """(apply_fn, variables, batch) of a tiny MLP on 8 inputs (built once)."""
    if not _MLP:
        model = api.build_model("lenet_6", 3, (8,))
        k = jax.random.PRNGKey(0)
        v = model.init({"params": k, "dropout": k}, jnp.zeros((1, 8)), train=False)
        x = jax.random.normal(k, (6, 8))
        _MLP.update(apply=lambda var, xx: model.apply(var, xx, train=False), variables=v,
                    batch=(x, jnp.arange(6, dtype=jnp.int32) % 3))
    return _MLP["apply"], _MLP["variables"], _MLP["batch"]


PAI_VALUES = {   # keyword options of score / prune_at_init: the config's pai.* fields
    "grasp_temperature": st.sampled_from([200.0, 1.0, 0.0, -1.0, math.nan, "x"]),
    "obd_method": st.sampled_from(["exact", "fisher", "x", ""]),
    "obd_probes": st.sampled_from([1, 2, 0, -1, 1.5]),
    "synflow_precision": st.sampled_from(["float64", "scaled32", "auto", "x"]),
    "prospr_steps": st.sampled_from([1, 0, -2]),
    "prospr_lr": st.sampled_from([0.1, 0.0, -1.0, math.inf]),
    "batches": st.sampled_from([1, 2, 0, -1]),
    "nope": st.just(1),
}


def block_scores(everything: bool):
    # the fast tier draws the scores that compile quickly; OBD's Hessian probes and ProsPr's inner
    # steps take seconds to compile
    cheap = ["magnitude", "random", "synflow", "snip"]
    return st.sampled_from(SCORES.names() if everything else cheap) | st.sampled_from(["nope", "", None, "SNIP"])


@st.composite
def pai_args(draw, everything: bool):
    opts = draw(st.lists(st.sampled_from(sorted(PAI_VALUES)), max_size=2, unique=True))
    return dict(name=draw(block_scores(everything)),
                density=draw(st.sampled_from([0.5, 0.1, 1.0, 0.0, -0.1, 1.5, math.nan, math.inf, 1e-9, "0.5", None])
                             | st.floats(0, 1)),
                rounds=draw(st.sampled_from([0, 1, 2, -1, 2.5, "2"])),
                schedule=draw(st.sampled_from(["exponential", "linear", "x"])),
                scope=draw(st.sampled_from(["global", "layerwise", "erk", "uniform", "x", ""])),
                prunable=draw(st.sampled_from([".*kernel", ".*", "fc_0/kernel", "nothing", "(", "[a-"])),
                data=draw(st.sampled_from(["batch", "shape", "shape", "wrong_shape", "none", "int_shape"])),
                options={k: draw(PAI_VALUES[k]) for k in opts})


def fuzz_pai_blocks(n: int, everything: bool) -> int:
    apply_fn, variables, batch = mlp()
    tried = [0]
    data = {"batch": {"batch": batch}, "shape": {"input_shape": (8,)}, "wrong_shape": {"input_shape": (5,)},
            "none": {}, "int_shape": {"input_shape": 8}}

    @fuzz_settings(n)
    @given(pai_args(everything))
    def prop(a):
        tried[0] += 1
        kw = {**data[a["data"]], **a["options"]}
        inputs = [(k, v) for k, v in a.items() if k not in ("options", "data")] + list(a["options"].items())
        inputs += [("input_shape", kw.get("input_shape")), ("batch", None)]
        try:   # the score itself
            scores = api.score(a["name"], apply_fn, variables, prunable=a["prunable"], **kw)
            assert jax.tree.structure(scores) == jax.tree.structure(variables["params"])
        except UserError as e:
            assert_one_line_naming(e, inputs + [("score", a["name"])])
        try:   # and score-and-prune to a density
            masks = api.prune_at_init(a["name"], apply_fn, variables, a["density"], rounds=a["rounds"],
                                      schedule=a["schedule"], scope=a["scope"], prunable=a["prunable"], **kw)
        except UserError as e:
            assert_one_line_naming(e, inputs + [("score", a["name"])])
            return
        d = a["density"]
        assert isinstance(d, float) and 0 < d <= 1
        assert jax.tree.structure(masks) == jax.tree.structure(variables["params"])
        kept = sum(int(np.sum(m)) for m in jax.tree.leaves(masks))
        assert 0 <= kept <= sum(int(np.size(m)) for m in jax.tree.leaves(masks))

    prop()
    return tried[0]


def test_fuzz_score_and_prune_at_init():
    n = fuzz_pai_blocks(int(30 * FAST), everything=False)
    print(f"fuzz score / prune_at_init: {n} calls tried")
    assert n >= 30 * FAST


@pytest.mark.slow
def test_fuzz_score_and_prune_at_init_every_score():
    n = fuzz_pai_blocks(40 * SLOW, everything=True)
    print(f"fuzz score / prune_at_init (every score): {n} calls tried")
    assert n >= 40 * SLOW
