"""spoofsdk_train.evaluate: threshold choice and figures on hand-computed cases, and the report + plots of a tiny run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

from spoofsdk_train.evaluate import choose_threshold, evaluate, score_report

# 4 real, 4 attacks. Sorted by score: 0.9 R, 0.8 R, 0.7 A, 0.6 R, 0.3 R, 0.2 A, 0.1 A, 0.05 A
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.05])


def test_figures_at_a_threshold_by_hand():
    r = score_report(LABELS, SCORES, 0.5)
    # accepted as real: 0.9, 0.8, 0.6 (real) and 0.7 (attack)
    assert r["apcer"] == pytest.approx(0.25)  # 1 of 4 attacks accepted
    assert r["bpcer"] == pytest.approx(0.25)  # 1 of 4 reals rejected (0.3)
    assert r["acer"] == pytest.approx(0.25)
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["confusion_matrix"] == [[3, 1], [1, 3]]  # rows truth (attack, real), columns decision
    assert r["per_class"]["spoof"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    assert r["per_class"]["real"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    # AUC: pairs (real > attack): 0.9 -> 4, 0.8 -> 4, 0.6 -> 3, 0.3 -> 3 = 14 of 16
    assert r["auc"] == pytest.approx(14 / 16)
    assert r["eer"] == pytest.approx(0.25)
    # APCER <= 5 % of 4 attacks = none accepted: threshold just above 0.7 accepts 0.9 and 0.8 only
    assert r["bpcer_at_apcer_5"] == pytest.approx(0.5)
    assert r["bpcer_at_apcer_1"] == pytest.approx(0.5)


def test_threshold_rules_by_hand():
    thr, how = choose_threshold(LABELS, SCORES, "eer")
    assert thr == pytest.approx(0.6) and "EER" in how
    thr, _ = choose_threshold(LABELS, SCORES, "apcer:0.25")  # one attack may pass: just above the 2nd attack (0.2)
    assert 0.2 < thr <= 0.2 + 1e-9
    thr, _ = choose_threshold(LABELS, SCORES, "apcer:0")
    assert 0.7 < thr <= 0.7 + 1e-9
    assert choose_threshold(LABELS, SCORES, 0.42)[0] == pytest.approx(0.42)
    assert choose_threshold(LABELS, SCORES, "0.42")[0] == pytest.approx(0.42)
    with pytest.raises(ValueError):
        choose_threshold(LABELS, SCORES, "median")


def test_threshold_stays_inside_the_open_interval():
    thr, _ = choose_threshold(np.array([1, 0]), np.array([1.0, 1.0]), "apcer:0")
    assert 0.0 < thr < 1.0


def test_perfect_and_inverted_rankings():
    perfect = score_report(LABELS, np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]), 0.5)
    assert perfect["auc"] == 1.0 and perfect["eer"] == 0.0 and perfect["acer"] == 0.0
    inverted = score_report(LABELS, np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]), 0.5)
    assert inverted["auc"] == 0.0 and inverted["apcer"] == 1.0 and inverted["bpcer"] == 1.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from spoofsdk_train.data import prepare
    from spoofsdk_train.recipe import load_recipe
    from spoofsdk_train.synthetic import make_synthetic
    from spoofsdk_train.train import train

    base = tmp_path_factory.mktemp("evalrun")
    root = make_synthetic(base / "syn", "class_subject", n_subjects=7, per_subject=4, size=40)
    data = prepare(root, base / "cache", size=32, faces="crop", progress=False).parent
    r = load_recipe("edgenet", ["model.input_size=32", "data.epoch_size=32", "train.epochs=2", "train.batch_size=8",
                                "train.threads=1", "train.log_every=0", "train.warmup_epochs=0"])
    r.data.manifests = [str(data)]
    train(r, base / "run", progress=False)
    return base / "run"


@pytest.mark.slow
def test_evaluate_writes_report_and_plots(tiny_run, tmp_path):
    from spoofsdk_train.data import load_crops
    from spoofsdk_train.train import model_from_checkpoint, predict_scores

    report = evaluate(tiny_run / "best.pt", out_dir=tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["threshold"]["value"] == pytest.approx(report["threshold"]["value"])
    for name in ("curves.png", "roc_det.png", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 5000
    # the threshold comes from the validation split only, and test figures are metrics.summary at it
    model, recipe, _ = model_from_checkpoint(tiny_run / "best.pt")
    val = load_crops(recipe.data.manifests, "val")
    expected, _ = choose_threshold(val.labels, predict_scores(model, val, recipe), "eer")
    assert report["threshold"]["value"] == pytest.approx(expected)
    test = load_crops(recipe.data.manifests, "test")
    s = score_report(test.labels, predict_scores(model, test, recipe), expected)
    (name,) = report["test"]
    for key in ("auc", "eer", "apcer", "bpcer", "acer", "bpcer_at_apcer_5", "bpcer_at_apcer_1", "accuracy"):
        assert report["test"][name][key] == pytest.approx(s[key])
    assert report["splits"][name]["method"] == "subject-disjoint"


@pytest.mark.slow
def test_evaluate_with_apcer_rule(tiny_run, tmp_path):
    report = evaluate(tiny_run / "best.pt", out_dir=tmp_path, threshold="apcer:0.05", plots=False)
    assert report["val"]["all"]["apcer"] <= 0.05 + 1e-12
    assert "plots" not in report


@pytest.mark.slow
def test_pooled_random_split_figures_reach_the_report_and_the_export(tiny_run, tmp_path):
    """Several test sets: the report adds every set pooled (the figure a random split of everything gives,
    as the seed reported); the export carries it with the split method, and names the random split."""
    from spoofsdk.model import SpoofModel
    from spoofsdk_train.data import load_crops, prepare, resplit_random
    from spoofsdk_train.export import export, training_data_text
    from spoofsdk_train.recipe import load_recipe
    from spoofsdk_train.synthetic import make_synthetic
    from spoofsdk_train.train import model_from_checkpoint, predict_scores

    other = prepare(make_synthetic(tmp_path / "other", "class_flat", n_subjects=1, per_subject=24, size=40, seed=3),
                    tmp_path / "cache", size=32, faces="crop", progress=False).parent
    model, recipe, _ = model_from_checkpoint(tiny_run / "best.pt")
    random_sets = [str(resplit_random(p, tmp_path / "random").parent) for p in (recipe.data.manifests[0], other)]
    report = evaluate(tiny_run / "best.pt", out_dir=tmp_path / "ev", test=random_sets, plots=False)
    assert set(report["test"]) == {"syn", "other"}
    crops = load_crops(random_sets, "test")
    pooled = score_report(crops.labels, predict_scores(model, crops, recipe), report["threshold"]["value"])
    assert report["test_all"]["n"] == len(crops) == sum(report["test"][k]["n"] for k in ("syn", "other"))
    for key in ("auc", "accuracy", "apcer", "bpcer"):
        assert report["test_all"][key] == pytest.approx(pooled[key])
    figures = SpoofModel(export(tiny_run / "best.pt", tmp_path / "m.onnx", report=report)).info.metrics
    assert figures["all_test_sets"]["accuracy"] == pytest.approx(pooled["accuracy"])
    assert figures["split"].startswith("random stratified by class")
    text = training_data_text(load_recipe(recipe, ["data.manifests=" + json.dumps(random_sets)]))
    assert "syn random 70/15/15 split, train part" in text and "other random 70/15/15 split" in text
    assert "Distilled" not in text and "Apache" not in text
    # A distilled model names its teacher and the teacher's licence.
    taught = training_data_text(load_recipe(recipe, ["data.manifests=" + json.dumps(random_sets), "train.distill_alpha=0.5"]))
    assert "Distilled from the MiniFASNet pair" in taught and "Apache-2.0" in taught and "weight 0.5" in taught
    assert "sha256" not in taught  # no record of the weights: nothing claimed
    record = {"name": "minifasnet_pair", "alpha": 0.5, "checkpoints": {"b.pth": "ab" * 32, "a.pth": "cd" * 32}}
    taught = training_data_text(load_recipe(recipe, ["data.manifests=" + json.dumps(random_sets), "train.distill_alpha=0.5"]), record)
    assert "weight 0.5; teacher weights a.pth sha256 cdcdcdcdcdcdcdcd, b.pth sha256 abababababababab)." in taught
    assert "SSDG" not in taught
    # Domain generalisation in training is named with its settings (the shipped recipe's: critic 0.1, triplet 2).
    sets = ["data.manifests=" + json.dumps(random_sets)]
    both = training_data_text(load_recipe(recipe, sets + ["train.domain_adv=0.1", "train.triplet_weight=2"]))
    assert ("SSDG, Jia et al. 2020): a domain critic on the live crops' features behind a gradient reversal, weight 0.1; "
            "an asymmetric triplet loss, weight 2, margin 0.1.") in both
    dann = training_data_text(load_recipe(recipe, sets + ["train.domain_adv=0.3", 'train.domain_adv_side="all"']))
    assert "critic on the live and attack crops' features" in dann and "triplet" not in dann and "SSDG" not in dann
    assert "Domain-adversarial training (DANN, both classes): a domain critic" in dann
