"""Accuracy of the same run's models: AUC, EER, ACER (at the model's threshold), BPCER@APCER 5 %.

Sets: the held-out NUAA subjects and gc535 test. From the trainer's manifests in cache/ when
present (their ``test`` split, so the subjects are those the trainer held out); otherwise
gc535/test crops and the NUAA test subjects of the trainer's default split (spoofsdk_train.data,
seed 42), cut with the runtime's detector and crop. Only trained models are scored (untrained
weights give meaningless figures); the quick mode scores its untrained model only to exercise the code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.models import cache_dir, data_root

_SETS: dict = {}
_FP32_SCORES: dict = {}  # (model, dataset) -> FP32 scores, for max |Δscore| of the other precisions


def _eval_sets(info, quick: bool) -> dict[str, dict]:
    """name -> {samples, source, subjects} for this model's input size/crop policy (cached per policy)."""
    from spoofsdk_train.quantize import collect_samples, find_manifests

    key = (info.input_size, info.crop_scale, quick)
    if key in _SETS:
        return _SETS[key]
    limit = 40 if quick else None
    sets: dict[str, dict] = {}
    manifests = [] if quick else find_manifests(cache_dir(), info)
    for head in manifests:
        m = Path(head["_dir"]) / "manifest.json"
        name = head.get("dataset", m.parent.name)
        samples = collect_samples(m, info, splits=("test",), limit=limit)
        subjects = (head.get("split") or {}).get("subjects", {}).get("test")
        if samples:
            sets[name] = {"samples": samples, "source": f"trainer manifest {m.relative_to(cache_dir().parent) if m.is_relative_to(cache_dir().parent) else m} (test split)", "subjects": subjects}
    if "gc535" not in sets and (data_root() / "gc535" / "test").is_dir():
        sets["gc535"] = {"samples": collect_samples(data_root() / "gc535" / "test", info, kind="crops", limit=limit),
                         "source": "data/gc535/test (centre square + resize)", "subjects": None}
    if "nuaa" not in sets and (data_root() / "nuaa").is_dir():
        from spoofsdk_train.data import assign_splits, scan

        root = data_root() / "nuaa"
        _, items = scan(root)
        splits, split_info = assign_splits(items)
        test = [s for s, sp in zip(items, splits) if sp == "test"]
        subjects = split_info.get("subjects", {}).get("test")
        step = max(1, len(test) // (20 if quick else 400))
        chosen = {str(root / s.source) for s in test[::step]}
        all_files = {str(p) for p in root.rglob("*.jpg")}
        samples = collect_samples(root, info, kind="frames", exclude=all_files - chosen)
        sets["nuaa"] = {"samples": samples, "source": "data/nuaa, trainer's default subject split (seed 42): test subjects, detector + crop_face",
                        "subjects": subjects}
    _SETS[key] = sets
    return sets


def test_accuracy(bench, model_key, precision):
    from spoofsdk.crop import to_tensor
    from spoofsdk.metrics import summary

    entry = bench.entries[model_key]
    if not entry.scored and not bench.quick:
        pytest.skip(f"{model_key}: {entry.kind} weights, accuracy not meaningful")
    model = bench.session(model_key, precision, 2)
    if model is None:
        pytest.skip(f"{model_key}: no {precision} variant")
    sets = _eval_sets(model.info, bench.quick)
    if not sets:
        pytest.skip("no evaluation data")
    for name, s in sets.items():
        samples = [x for x in s["samples"] if x.label is not None]
        if not samples:
            continue
        x = to_tensor([c.crop for c in samples], model.info.color_order, model.info.mean, model.info.std)
        scores = np.concatenate([model.predict(x[i : i + 32]) for i in range(0, len(x), 32)])
        labels = np.array([c.label for c in samples])
        m = summary(labels, scores, model.threshold)
        if precision == "fp32":
            _FP32_SCORES[(model_key, name)] = scores
        ref = _FP32_SCORES.get((model_key, name))
        dmax = float(np.abs(scores - ref).max()) if ref is not None and precision != "fp32" and len(ref) == len(scores) else None
        agree = float(((scores >= model.threshold) == (ref >= model.threshold)).mean()) if dmax is not None else None
        bench.results["accuracy"].append({
            "model": model_key, "precision": precision, "dataset": name, "scored": entry.scored,
            "source": s["source"], "subjects": s["subjects"], "threshold": model.threshold,
            **{k: m.get(k) for k in ("n", "n_real", "n_attack", "auc", "eer", "apcer", "bpcer", "acer", "bpcer_at_apcer_5")},
            "max_abs_dscore_vs_fp32": dmax, "decision_agreement_vs_fp32": agree,
        })
