"""scripts/threshold_rules_loso.py: threshold rules read on the saved scores of leave-one-source-out folds."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("spoofsdk_train", reason="the trainer (pip install -e ./trainer) is not installed")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "threshold_rules_loso.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("threshold_rules_loso", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _domain(name: str, n: int, live_mean: float, attack_mean: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.r_[np.ones(n), np.zeros(n)].astype(np.int64)
    scores = np.clip(np.r_[rng.normal(live_mean, 0.05, n), rng.normal(attack_mean, 0.05, n)], 0.001, 0.999)
    return labels, scores, np.full(2 * n, name)


def test_eer_by_domain_weighs_every_camera_the_same(script):
    rng = np.random.default_rng(0)
    # A big camera whose classes cross at 0.3 and a small one whose classes cross at 0.7: pooled EER follows the
    # big one; the per-domain mean balances the two (each domain's APCER and BPCER count once).
    parts = [_domain("big", 900, 0.4, 0.2, rng), _domain("small", 30, 0.8, 0.6, rng)]
    y, s, d = (np.concatenate(p) for p in zip(*parts))
    pooled = script.threshold("eer", {"labels": y, "scores": s, "domains": d})
    balanced = script.threshold("eer_by_domain", {"labels": y, "scores": s, "domains": d})
    median = script.threshold("median_domain_eer", {"labels": y, "scores": s, "domains": d})
    assert 0.25 < pooled < 0.36 and 0.4 < balanced < 0.6 and 0.4 < median < 0.6

    def rates(t, dom):
        m = d == dom
        return np.mean(s[m & (y == 0)] >= t), np.mean(s[m & (y == 1)] < t)

    (a_big, b_big), (a_small, b_small) = rates(balanced, "big"), rates(balanced, "small")
    assert abs((a_big + a_small) / 2 - (b_big + b_small) / 2) < 0.02  # the rule's own definition
    strict = script.threshold("apcer:0.01", {"labels": y, "scores": s, "domains": d})
    assert np.mean(s[y == 0] >= strict) <= 0.01 and strict > pooled


def test_the_table_reads_every_fold_and_averages_the_runs(script, tmp_path):
    rng = np.random.default_rng(1)
    runs = []
    for r in range(2):
        run = tmp_path / f"run{r}"
        for held in ("camA", "camB"):
            fold = run / "folds" / held
            fold.mkdir(parents=True)
            y, s, d = (np.concatenate(p) for p in zip(_domain("camC", 50, 0.7, 0.3, rng), _domain("camD", 50, 0.7, 0.3, rng)))
            np.savez(fold / "val_scores.npz", labels=y, scores=s, domains=d)
            ty, ts, _ = _domain(held, 40, 0.9 if held == "camA" else 0.45, 0.4, rng)  # camB: live scores just above its attacks
            np.savez(fold / "held_out_scores.npz", labels=ty, scores=ts)
            (fold / "fold.json").write_text(json.dumps({"held_out": held}))
        runs.append(str(run))
    (tmp_path / "run1" / "folds" / "stopped").mkdir()  # a fold without fold.json is not read
    res = CliRunner().invoke(script.cli, runs + ["--rule", "eer", "--rule", "apcer:0.05"])
    assert res.exit_code == 0, res.output
    assert "2 run(s), 2 held-out domains" in res.output
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in res.output.splitlines() if line.startswith("| ")}
    assert row["camA"][0] == "0.00 / 0.00"  # well apart: no errors at either rule's threshold
    apcer_b, bpcer_b = (float(x) for x in row["camB"][0].split(" / "))
    assert apcer_b < 0.2 and bpcer_b > 0.5  # the threshold sits between the validation classes: camB's live faces refused
    # apcer:R takes the LOWEST threshold meeting R on validation: with the validation classes far apart it sits just
    # above the validation attacks (0.3), below both held-out cameras' attacks (0.4): each lets most of them through.
    assert row["**domains with APCER > 0.20**"] == ["0", "2"]
    assert float(row["camA"][1].split(" / ")[0]) > 0.5
