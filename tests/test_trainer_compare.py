"""spoofsdk_train.compare and ``spoofsdk-train compare``: leave-one-source-out runs side by side."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("spoofsdk_train", reason="the trainer (pip install -e ./trainer) is not installed")

from spoofsdk_train.cli import main
from spoofsdk_train.compare import CompareError, compare, parse_variants, read_run, render_compare
from spoofsdk_train.evaluate import score_report

from spoofsdk import metrics


def _scores(auc_target: float, seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores whose AUC is close to ``auc_target`` (a shifted Gaussian per class)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(np.int64)
    from statistics import NormalDist

    shift = NormalDist().inv_cdf(min(max(auc_target, 1e-3), 1 - 1e-3)) * np.sqrt(2)
    scores = rng.normal(size=n) + shift * labels
    return labels, 1 / (1 + np.exp(-scores))


def _finished_run(root: Path, aucs: dict[str, float], test_only=("gc535",)) -> Path:
    rows = [{"domain": d, "n_real": 10, "n_attack": 10, "threshold": 0.5, "auc": a, "eer": 0.1, "apcer": 0.1,
             "bpcer": 0.2, "acer": 0.15, "bpcer_at_apcer_5": 1 - a, "train_domains": [], "seconds": 1.0} for d, a in aucs.items()]
    root.mkdir(parents=True)
    (root / "crossval.json").write_text(json.dumps({"recipe": "r", "test_only": list(test_only), "domains": rows}))
    return root


def _partial_run(root: Path, folds: dict[str, float], all_domains: list[str]) -> Path:
    for i, (held, auc) in enumerate(folds.items()):
        fold = root / "folds" / held
        fold.mkdir(parents=True)
        labels, scores = _scores(auc, seed=i)
        np.savez(fold / "held_out_scores.npz", labels=labels, scores=scores)
        trained = [d for d in all_domains if d != held and d != "gc535"]
        (fold / "fold.json").write_text(json.dumps({"held_out": held, "train_domains": trained, "threshold": 0.5, "seconds": 1.0}))
    # A fold being scored: its scores are written, its fold.json (written last) not yet; skipped.
    (root / "folds" / "scoring").mkdir()
    np.savez(root / "folds" / "scoring" / "held_out_scores.npz", labels=np.array([0, 1]), scores=np.array([0.9, 0.1]))
    return root


def test_seeds_are_averaged_per_domain_and_summaries_cover_the_common_domains(tmp_path):
    a1 = _finished_run(tmp_path / "a1", {"camA": 0.9, "camB": 0.7, "gc535": 0.3})
    a2 = _finished_run(tmp_path / "a2", {"camA": 0.8, "camB": 0.9, "gc535": 0.1})
    b = _finished_run(tmp_path / "b", {"camA": 1.0, "camB": 0.6, "gc535": 0.5})
    result = compare({"A": [a1, a2], "B": [b]})
    assert result["common"] == ["camA", "camB", "gc535"] and result["test_only"] == ["gc535"]
    A = result["variants"]["A"]
    assert A["per_domain"]["camA"]["auc"] == pytest.approx(0.85) and A["per_domain"]["camA"]["auc_runs"] == [0.9, 0.8]
    assert A["summary"]["auc_mean"] == pytest.approx((0.85 + 0.8 + 0.2) / 3)
    assert A["summary"]["auc_worst"] == pytest.approx(0.2)
    assert A["summary"]["auc_mean_trained_domains"] == pytest.approx((0.85 + 0.8) / 2)
    assert A["summary"]["auc_worst_trained_domains"] == pytest.approx(0.8)
    assert A["summary"]["auc_mean_per_run"] == pytest.approx([(0.9 + 0.7 + 0.3) / 3, (0.8 + 0.9 + 0.1) / 3])
    assert A["summary"]["bpcer_at_apcer_5_mean"] == pytest.approx(1 - (0.85 + 0.8 + 0.2) / 3)
    table = render_compare(result)
    assert "| camA | 0.850 (0.900 / 0.800) | 1.000 |" in table
    assert "| mean without never-trained domains | 0.825 | 0.800 |" in table
    assert "interrupted" not in table and f"- A: `{a1}`, `{a2}`" in table


def test_a_partial_run_is_read_from_its_scored_folds_and_compared_on_the_same_folds_only(tmp_path):
    domains = ["camA", "camB", "camC", "gc535"]
    full = _finished_run(tmp_path / "full", {"camA": 0.9, "camB": 0.5, "camC": 0.95, "gc535": 0.2})
    partial = _partial_run(tmp_path / "partial", {"camA": 0.8, "camC": 0.7, "gc535": 0.4}, domains)
    run = read_run(partial)
    assert not run["complete"] and set(run["domains"]) == {"camA", "camC", "gc535"}
    assert run["test_only"] == ["gc535"]  # held out, and no scored fold trained on it
    saved = np.load(partial / "folds" / "camA" / "held_out_scores.npz")
    assert run["domains"]["camA"]["auc"] == pytest.approx(metrics.roc_auc(saved["labels"], saved["scores"]))
    expected = score_report(saved["labels"], saved["scores"], 0.5)
    assert run["domains"]["camA"]["bpcer_at_apcer_5"] == pytest.approx(expected["bpcer_at_apcer_5"])

    result = compare({"full": [full], "partial": [partial]})
    assert result["common"] == ["camA", "camC", "gc535"]  # camB, which the full run finds hard, is left out of BOTH
    assert result["variants"]["full"]["summary"]["auc_mean"] == pytest.approx((0.9 + 0.95 + 0.2) / 3)
    own = [run["domains"][d]["auc"] for d in ("camA", "camC", "gc535")]
    assert result["variants"]["partial"]["summary"]["auc_mean"] == pytest.approx(np.mean(own))
    assert result["variants"]["partial"]["summary"]["auc_mean_trained_domains"] == pytest.approx(np.mean(own[:2]))
    assert own[0] == pytest.approx(0.8, abs=0.08) and own[2] == pytest.approx(0.4, abs=0.08)
    table = render_compare(result)
    assert "| camB * | 0.500 | – |" in table
    assert f"- partial: `{partial}` (interrupted: read from its scored folds)" in table


def test_unreadable_variants_are_refused_with_a_reason(tmp_path):
    assert parse_variants(["x=r1+r2", str(tmp_path / "runs" / "r3")]) == {"x": ["r1", "r2"], "r3": [str(tmp_path / "runs" / "r3")]}
    for bad in (["x="], ["=r1"], ["x=r1", "x=r2"]):
        with pytest.raises(CompareError):
            parse_variants(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no scored fold"):
        read_run(tmp_path / "empty")
    with pytest.raises(CompareError, match="a run given twice"):
        parse_variants([f"x={tmp_path / 'r'}+{tmp_path / 'q' / '..' / 'r'}"])
    assert parse_variants(["two=r1+r2", "one=r1"]) == {"two": ["r1", "r2"], "one": ["r1"]}  # one seed beside the mean
    cut = _finished_run(tmp_path / "cut", {"camA": 0.9})
    (cut / "crossval.json").write_text('{"domains": [{"dom')
    with pytest.raises(CompareError, match="not a crossval table"):
        read_run(cut)
    (cut / "crossval.json").write_text('{"recipe": "r"}')
    with pytest.raises(CompareError, match="not a crossval table"):
        read_run(cut)
    half = _partial_run(tmp_path / "half", {"camA": 0.8}, ["camA", "camB"])
    (half / "folds" / "camA" / "fold.json").write_text('{"held_out": "ca')
    with pytest.raises(CompareError, match="unreadable fold"):
        read_run(half)
    one = _finished_run(tmp_path / "one", {"camA": 0.9})
    other = _finished_run(tmp_path / "other", {"camB": 0.9})
    with pytest.raises(CompareError, match="in common"):
        compare({"one": [one], "other": [other]})
    with pytest.raises(CompareError):
        compare({})


def test_cli_prints_the_table_and_writes_it_and_fails_in_one_line(tmp_path, capsys):
    a = _finished_run(tmp_path / "a", {"camA": 0.9, "gc535": 0.3})
    b = _finished_run(tmp_path / "b", {"camA": 0.7, "gc535": 0.6})
    assert main(["compare", f"mine={a}+{b}", "--out", str(tmp_path / "t.json")]) == 0
    printed = capsys.readouterr().out
    assert "| camA | 0.800 (0.900 / 0.700) |" in printed
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["variants"]["mine"]["summary"]["auc_mean"] == pytest.approx(0.625)
    assert main(["compare", f"mine={a}", "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text().startswith("# Leave-one-source-out, side by side")
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no crossval.json" in err
    (b / "crossval.json").write_text("{")
    assert main(["compare", f"mine={a}+{b}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a crossval table" in err


def _model_with_table(path: Path, table: dict | None) -> Path:
    """An embedded model's bytes with ``metrics['loso']`` replaced (None: no table at all)."""
    from spoofsdk.model import ASSETS_DIR, write_metadata_props

    metrics_json = json.dumps({} if table is None else {"loso": table})
    path.write_bytes(write_metadata_props((ASSETS_DIR / "mnv2probe-int8.onnx").read_bytes(), {"metrics": metrics_json}))
    return path


def test_a_model_file_stands_for_the_runs_of_its_embedded_table(tmp_path):
    """`compare default=<model.onnx> new=<runs>`: the embedded model's table and its replicates are its seeds,
    so a candidate is compared with the default on a machine where the default's runs were never made."""
    rows = {"camA": {"auc": 0.9, "eer": 0.1, "apcer": 0.1, "bpcer": 0.2, "bpcer_at_apcer_5": 0.3},
            "gc535": {"auc": 0.3, "eer": 0.6, "apcer": 0.9, "bpcer": 0.2, "bpcer_at_apcer_5": 0.9}}
    table = {"recipe": "r", "recipe_hash": "abc", "domains": rows, "test_only": ["gc535"],
             "replicates": [{"auc": {"camA": 0.7, "gc535": 0.1}},  # embedded before session 10: AUC only
                            {"auc": {"camA": 0.8, "gc535": 0.2},
                             "domains": {d: dict(v, auc=a, bpcer_at_apcer_5=0.5) for (d, v), a in zip(rows.items(), (0.8, 0.2))}}]}
    model = _model_with_table(tmp_path / "default.onnx", table)
    new = _finished_run(tmp_path / "new", {"camA": 1.0, "gc535": 0.5})
    result = compare({"default": [model], "new": [new]})
    d = result["variants"]["default"]
    assert d["per_domain"]["camA"]["auc_runs"] == [0.9, 0.7, 0.8] and d["per_domain"]["camA"]["auc"] == pytest.approx(0.8)
    # BPCER@APCER5 of camA: the two seeds that carry it (0.3, 0.5), not a zero for the one that does not
    assert d["per_domain"]["camA"]["bpcer_at_apcer_5"] == pytest.approx(0.4)
    assert d["summary"]["auc_mean_per_run"] == pytest.approx([0.6, 0.4, 0.5]) and result["test_only"] == ["gc535"]
    table_md = render_compare(result)
    assert "| camA | 0.800 (0.900 / 0.700 / 0.800) | 1.000 |" in table_md
    assert f"`{model} (r abc)`, `{model} (replicate 1)`, `{model} (replicate 2)`" in table_md
    # the embedded default itself carries a two-seed table
    from spoofsdk.model import ASSETS_DIR

    shipped = compare({"default": [ASSETS_DIR / "hybrid_mnv2-fp32.onnx"]})["variants"]["default"]
    assert len(shipped["runs"]) == 2 and len(shipped["per_domain"]) == 11
    # a model without a table, and a file that is not a model, are refused with the reason
    with pytest.raises(CompareError, match="carries no leave-one-source-out table"):
        compare({"x": [_model_with_table(tmp_path / "bare.onnx", None)]})
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CompareError, match="not a readable spoofsdk model"):
        compare({"x": [tmp_path / "junk.onnx"]})


def test_a_kept_crossval_table_is_a_run():
    """The candidate's tables kept in docs/loso/ (crossval.json as written) are read as runs, as their folders would be."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "loso"
    result = compare({"ssdg": [docs / "hybrid_mnv2_ssdg_s42.json", docs / "hybrid_mnv2_ssdg_s7.json"]})
    v = result["variants"]["ssdg"]
    assert result["test_only"] == ["gc535"] and len(v["per_domain"]) == 11
    assert v["summary"]["auc_mean_per_run"] == pytest.approx([0.8540, 0.8585], abs=1e-4)
    assert v["per_domain"]["AksultanMukhanbet"]["auc_runs"] == pytest.approx([0.9803, 0.9660], abs=1e-4)
