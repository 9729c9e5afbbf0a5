"""`lth bench --sparse` (lth/sparse_exec.py): BCSR and N:M against dense matmul timing on a tiny kernel."""
import functools
import json

from lth import cli
from lth.compression import sparse_exec

TINY = dict(shapes=((32, 16),), densities=(1.0, 0.1), batches=(1,), repeats=2, nm_patterns=((2, 4),))


def test_sparse_break_even_tiny():
    r = sparse_exec.sparse_break_even(**TINY)          # raises ValueError if a sparse form disagrees with dense
    assert len(r["rows"]) == 2 and set(r["break_even"]) == {"32x16@b1"}
    for row, density in zip(r["rows"], (1.0, 0.1)):
        assert row["shape"] == [32, 16] and row["batch"] == 1 and row["density"] == density
        assert row["dense_ms"] > 0 and row["sparse_ms"] > 0 and row["ratio"] > 0
        assert row["form"] in sparse_exec.FORMS and row["sparse_ms"] == min(row["form_ms"].values())
    assert r["rows"][0]["nnz"] == 32 * 16 and r["rows"][1]["nnz"] == round(0.1 * 32 * 16)
    assert r["break_even"]["32x16@b1"] in (None, 1.0, 0.1)
    text = sparse_exec.sparse_table(r)
    assert text.count("\n| 32×16 | 1 |") == 2 and "break-even 32×16, batch 1: " in text
    assert [(row["shape"], row["batch"], row["pattern"]) for row in r["nm_rows"]] == [([32, 16], 1, "2:4")]
    assert "\n| 2:4 | 32×16 | 1 |" in text                                  # the N:M table after the BCSR one


def test_cli_bench_sparse(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sparse_exec, "sparse_break_even", functools.partial(sparse_exec.sparse_break_even, **{
        k: v for k, v in TINY.items() if k not in ("repeats", "batches")}))
    out = tmp_path / "sparse.json"
    assert cli.main(["bench", "--sparse", "--sparse-repeats", "2", "--sparse-rows", "1", "--save", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "break-even 32×16, batch 1: " in printed and "| sparse ms |" in printed
    saved = json.loads(out.read_text())
    assert saved["kind"] == "sparse" and saved["repeats"] == 2 and len(saved["rows"]) == 2
    assert len(saved["nm_rows"]) == 1 and "| N:M / dense |" in printed


def test_break_even_is_the_largest_density_below_which_sparse_always_wins():
    wins = [(0.01, True), (0.02, True), (0.05, True), (0.1, False), (0.2, True), (1.0, False)]
    assert sparse_exec.break_even_density(wins) == 0.05          # the noisy win at 0.2 above a loss does not count
    assert sparse_exec.break_even_density([(0.01, False), (0.5, True)]) is None
    assert sparse_exec.break_even_density([(0.01, True), (1.0, True)]) == 1.0
