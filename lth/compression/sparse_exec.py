"""`lth bench --sparse`: does executing a pruned dense layer as an unstructured sparse matrix
(jax.experimental.sparse.BCSR) beat the dense matmul on this device? Break-even densities for
MiniLM-L6's FFN kernels; then the same kernels N:M-pruned (2:4, 4:8) run from their compressed form
(values + indices, lth.compression.nm) against dense and masked dense. (`lth bench --sparse` runs it.)"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from lth.compression import nm as NM
from lth.compression import speed
from lth.surgeons.layer import nm_keep

MINILM_FFN = ((384, 1536), (1536, 384))     # MiniLM-L6 FFN kernels, (in, out)
DENSITIES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)

# The BCSR products tried, all with W.T ([out, in]) stored as BCSR, since jax only implements
# BCSR-lhs × dense-rhs (`x @ bcsr` raises NotImplementedError):
#   "bcsr@x.T": (Wt @ x.T).T — on CPU lowers to the cpu_csr_sparse_dense_ffi kernel;
#   "dot_general": bcsr_dot_general(Wt, x) contracting both last dims, no transpose of x — lowers to
#                  jax's generic gather / scatter-add implementation;
#   "bcsr@x.T pad8": "bcsr@x.T" with x zero-padded to 8 rows (only tried for batch < 8): that CPU kernel
#                  takes ~3.5× longer for a dense operand of 1-4 columns than for 8 or more (jax 0.10.2).
PAD = 8
FORMS = {
    "bcsr@x.T": lambda x, wt: (wt @ x.T).T,
    "dot_general": lambda x, wt: sparse.bcsr_dot_general(wt, x, dimension_numbers=(([1], [1]), ([], []))).T,
    "bcsr@x.T pad8": lambda x, wt: (wt @ jnp.pad(x, ((0, PAD - x.shape[0]), (0, 0))).T).T[:x.shape[0]],
}


NM_PATTERNS = ((2, 4), (4, 8))
NM_MAX_BATCH = 64            # N:M rows only up to 64 rows of x (the gather form reads [rows, in·N/M, out])
# The N:M products timed (lth.compression.nm.nm_matmul): "gather" (x's columns gathered per output
# and contracted with the values, no dense kernel) and "densify" (the kernel rebuilt from values and
# indices by a one-hot sum, then the dense matmul).
NM_FORMS = ("gather", "densify")


def _weight(shape, density: float, rng) -> tuple[np.ndarray, int]:
    """Normal weights with exactly round(density·size) nonzeros at uniformly random positions."""
    size = int(np.prod(shape))
    nnz = max(1, int(round(density * size)))
    w = np.zeros(size, np.float32)
    w[rng.permutation(size)[:nnz]] = rng.normal(size=nnz).astype(np.float32)
    return w.reshape(shape), nnz


def break_even_density(wins) -> float | None:
    """The largest density at which sparse wins there and at every sparser density tested, from
    (density, sparse won) pairs: one noisy win above a loss does not count. None: it loses at the lowest."""
    best = None
    for density, won in sorted(wins):
        if not won:
            break
        best = density
    return best


def sparse_break_even(shapes=MINILM_FFN, densities=DENSITIES, batches=(1, 64), repeats=20, seed=0,
                      nm_patterns=NM_PATTERNS) -> dict:
    """Time x @ W, x: [batch, in], W: [in, out] with a random unstructured mask of each density,
    dense (jit(x @ W), W a dense array with zeros) against sparse (W.T stored as BCSR, jit-compiled).
    Every sparse form in FORMS (the pad8 one only for batch < 8) is checked against the dense result
    (rtol 1e-4; ValueError if it differs) and timed; sparse_ms is the fastest ("form" names it;
    measured on a 2-core CPU with jax 0.10.2: "bcsr@x.T pad8" at batch 1 and "bcsr@x.T" at batch 64,
    i.e. W.T as BCSR @ x.T through the cpu_csr_sparse_dense_ffi kernel, then transposed; the generic
    "dot_general" form is 5-50× slower at batch 64). Times: median of `repeats` calls after 3 warm-up
    calls, each ending in .block_until_ready(), dense and the forms interleaved (lth.speed.compare).
    ratio = sparse_ms / dense_ms (< 1: sparse faster).
    break_even["{in}x{out}@b{batch}"]: the largest density d with sparse_ms <= dense_ms at d and at
    every lower density tested, or None if sparse loses at the lowest.
    nm_rows: nm_speed's rows for `nm_patterns` at the batches up to NM_MAX_BATCH (none: nm_patterns=())."""
    rng = np.random.default_rng(seed)
    dense_f = jax.jit(lambda x, w: x @ w)
    forms = {name: jax.jit(f) for name, f in FORMS.items()}
    rows, break_even = [], {}
    for shape in shapes:
        d_in, d_out = (int(s) for s in shape)
        for batch in batches:
            x = jnp.asarray(rng.normal(size=(batch, d_in)).astype(np.float32))
            # pad8 only helps below 8 rows; the generic dot_general form was 5-50× slower than
            # "bcsr@x.T" at 64 rows in every measurement, so it is timed only for small batches
            tried = {name: f for name, f in forms.items()
                     if batch < PAD or not (name.endswith("pad8") or (name == "dot_general" and batch > 64))}
            key, wins = f"{d_in}x{d_out}@b{batch}", []
            for density in densities:
                w, nnz = _weight((d_in, d_out), density, rng)
                wd = jnp.asarray(w)
                wt = sparse.BCSR.fromdense(jnp.asarray(w.T), nse=nnz)
                ref = np.asarray(dense_f(x, wd))
                scale = max(float(np.abs(ref).max()), 1e-30)
                for name, f in tried.items():
                    got = np.asarray(f(x, wt))
                    if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-4 * scale):
                        raise ValueError(f"sparse form {name} disagrees with dense at {key}, density {density}: "
                                         f"max |diff| {np.abs(got - ref).max():.3g} (max |dense| {scale:.3g})")
                # dense and every form timed side by side in interleaved rounds (lth.speed.compare)
                entries = {"dense": (lambda w, xb: dense_f(xb, w), wd),
                           **{name: (lambda w, xb, f=f: f(xb, w), wt) for name, f in tried.items()}}
                ms = {name: t[f"latency_ms_b{batch}"] for name, t in
                      speed.compare(entries, x, repeats, warmup=3, batches=(batch,), min_seconds=0.0).items()}
                dense_ms = ms.pop("dense")
                form_ms = ms
                form = min(form_ms, key=form_ms.get)
                row = {"shape": [d_in, d_out], "batch": batch, "density": density, "nnz": nnz,
                       "dense_ms": dense_ms, "sparse_ms": form_ms[form], "ratio": form_ms[form] / dense_ms,
                       "form": form, "form_ms": form_ms}
                rows.append(row)
                wins.append((density, row["sparse_ms"] <= dense_ms))
            break_even[key] = break_even_density(wins)
    nm = nm_speed(shapes, nm_patterns, tuple(b for b in batches if b <= NM_MAX_BATCH), repeats, seed)
    return {"rows": rows, "break_even": break_even, "nm_rows": nm["rows"], "jax": jax.__version__,
            "repeats": repeats, "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})"}


def nm_speed(shapes=MINILM_FFN, patterns=NM_PATTERNS, batches=(1, 64), repeats=20, seed=0) -> dict:
    """Time x @ W, x: [batch, in], W: [in, out] N:M-pruned along its input axis (the n largest |w| of
    every m consecutive inputs, lth.surgeons.layer.nm_keep), three ways side by side (lth.speed.compare,
    median of `repeats` calls after 3 warm-up calls): "dense" (jit(x @ W), W dense with its zeros),
    "masked" (jit(x @ (W ⊙ mask)), the mask applied in every call as lth's masked training does) and
    N:M, W compressed to values [in·n/m, out] + uint8 indices (lth.compression.nm.compress_nm) and
    multiplied by each form in NM_FORMS (nm_matmul; each checked against dense, rtol 1e-4, ValueError
    if it differs); nm_ms is the fastest form ("form" names it). ratio = nm_ms / dense_ms,
    masked_ratio = masked_ms / dense_ms (< 1: faster than dense). bytes: f32 bytes dense (4·in·out)
    and N:M (nm_bytes). A shape whose input dimension m does not divide is skipped."""
    rng = np.random.default_rng(seed)
    dense_f = jax.jit(lambda x, w: x @ w)
    rows = []
    for shape in shapes:
        d_in, d_out = (int(s) for s in shape)
        w = rng.normal(size=(d_in, d_out)).astype(np.float32)
        for n, m in patterns:
            if d_in % m:
                continue
            mask = nm_keep(jnp.abs(jnp.asarray(w)), n, m)
            wd = jnp.where(mask, jnp.asarray(w), 0.0)
            values, indices = NM.compress_nm(wd, n, m)
            for batch in batches:
                x = jnp.asarray(rng.normal(size=(batch, d_in)).astype(np.float32))
                ref = np.asarray(dense_f(x, wd))
                scale = max(float(np.abs(ref).max()), 1e-30)
                forms = {f: (lambda v, xb, f=f: NM.nm_matmul(xb, v[0], v[1], n, m, f)) for f in NM_FORMS}
                for name, f in forms.items():
                    got = np.asarray(jax.jit(f)((values, indices), x))
                    if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-4 * scale):
                        raise ValueError(f"N:M form {name} disagrees with dense at {d_in}x{d_out} {n}:{m}, batch "
                                         f"{batch}: max |diff| {np.abs(got - ref).max():.3g} (max |dense| {scale:.3g})")
                entries = {"dense": (lambda v, xb: dense_f(xb, v), wd),
                           "masked": (lambda v, xb: xb @ jnp.where(v[1], v[0], 0.0), (jnp.asarray(w), mask)),
                           **{name: (f, (values, indices)) for name, f in forms.items()}}
                ms = {name: t[f"latency_ms_b{batch}"] for name, t in
                      speed.compare(entries, x, repeats, warmup=3, batches=(batch,), min_seconds=0.0).items()}
                dense_ms, masked_ms = ms.pop("dense"), ms.pop("masked")
                form = min(ms, key=ms.get)
                rows.append({"shape": [d_in, d_out], "batch": batch, "pattern": f"{n}:{m}", "dense_ms": dense_ms,
                             "masked_ms": masked_ms, "nm_ms": ms[form], "form": form, "form_ms": ms,
                             "ratio": ms[form] / dense_ms, "masked_ratio": masked_ms / dense_ms,
                             "dense_bytes": 4 * d_in * d_out, "nm_bytes": NM.nm_bytes(d_in * d_out, n, m, 4)})
    return {"rows": rows, "jax": jax.__version__, "repeats": repeats,
            "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})"}


def nm_table(rows) -> str:
    """Markdown table of nm_speed's rows."""
    lines = ["| pattern | shape (in×out) | batch | dense ms | masked ms | N:M ms | N:M / dense | masked / dense | "
             "faster form | " + " | ".join(f"{f} ms" for f in NM_FORMS) + " | f32 bytes N:M / dense |",
             "|" + "---|" * (10 + len(NM_FORMS))]
    for r in rows:
        lines.append(f"| {r['pattern']} | {r['shape'][0]}×{r['shape'][1]} | {r['batch']} | {r['dense_ms']:.4f} | "
                     f"{r['masked_ms']:.4f} | {r['nm_ms']:.4f} | {r['ratio']:.2f}× | {r['masked_ratio']:.2f}× | "
                     f"{r['form']} | " + " | ".join(f"{r['form_ms'][f]:.4f}" for f in NM_FORMS)
                     + f" | {r['nm_bytes'] / r['dense_bytes']:.3f} |")
    return "\n".join(lines)


def sparse_table(result: dict) -> str:
    """Markdown table of sparse_break_even's rows, then one break-even line per shape and batch."""
    forms = list(FORMS)
    lines = ["| shape (in×out) | batch | density | dense ms | sparse ms | sparse / dense | faster form | "
             + " | ".join(f"{f} ms" for f in forms) + " |", "|" + "---|" * (7 + len(forms))]
    for r in result["rows"]:
        lines.append(f"| {r['shape'][0]}×{r['shape'][1]} | {r['batch']} | {r['density']:g} | {r['dense_ms']:.4f} "
                     f"| {r['sparse_ms']:.4f} | {r['ratio']:.2f}× | {r['form']} | "
                     + " | ".join(f"{r['form_ms'][f]:.4f}" if f in r["form_ms"] else "-" for f in forms) + " |")
    lowest = min((r["density"] for r in result["rows"]), default=0.0)
    lines.append("")
    for key, d in result["break_even"].items():
        shape, batch = key.split("@b")
        what = f"density {d:g} (sparse ms <= dense ms there and at every lower density tested)" if d is not None \
            else f"never (at densities down to {100 * lowest:g}%)"
        lines.append(f"break-even {shape.replace('x', '×')}, batch {batch}: {what}")
    if result.get("nm_rows"):
        lines += ["", "N:M (values + uint8 indices, lth.compression.nm) vs dense x @ W and masked dense "
                  "x @ (W ⊙ mask), same timing:", nm_table(result["nm_rows"])]
    return "\n".join(lines)
