"""spoofsdk_train.minifasnet_reference.score_domains on tiny synthetic domains and tiny models (no checkpoints needed)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from spoofsdk.crop import fit_face_crop
from spoofsdk.metrics import roc_auc
from spoofsdk.model import load_model

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

from spoofsdk_train.minifasnet_reference import list_domains, markdown_table, report_markdown, score_domains

from conftest import build_tiny_model


def _write(folder, n, bright, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.clip(rng.normal(bright, 30, size=(70, 50, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), img)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    for k, src in enumerate(("camA", "camB")):
        _write(root / "webcam" / src / "real", 5, 90, k)
        _write(root / "webcam" / src / "attack", 4, 170, 10 + k)
    _write(root / "webcam" / "realonly" / "real", 3, 90, 20)  # no attacks: not a domain
    _write(root / "gc535" / "test" / "real", 3, 100, 30)
    _write(root / "gc535" / "test" / "attack", 3, 150, 31)
    return root


def test_domains_need_both_classes(data):
    names = [d.name for d in list_domains(data)]
    assert names == ["webcam/camA", "webcam/camB", "gc535/test"]


def test_scores_each_model_by_its_metadata_and_averages(data):
    a = build_tiny_model(input_size=32, seed=1)
    b = build_tiny_model(input_size=40, output="logitsN", seed=2, metadata={"crop_policy": "shift_cap", "name": "other"})
    result = score_domains([a, b], data, threads=1)
    dom = result["domains"]["webcam/camA"]
    assert result["models"] == ["tiny", "other"] and set(dom) >= {"pair", "tiny", "other"}
    assert (dom["pair"]["n_real"], dom["pair"]["n_attack"]) == (5, 4)
    # by hand: each model fits the crops by its own policy; the pair averages P(live)
    d = next(x for x in list_domains(data) if x.name == "webcam/camA")
    imgs = [cv2.imread(str(f)) for f in d.files]
    ma, mb = load_model(a), load_model(b)
    pa = ma.score_crops([fit_face_crop(i, 32) for i in imgs])
    pb = mb.score_crops([fit_face_crop(i, 40, "shift_cap") for i in imgs])
    assert dom["tiny"]["auc"] == pytest.approx(roc_auc(d.labels, pa))
    assert dom["other"]["auc"] == pytest.approx(roc_auc(d.labels, pb))
    assert dom["pair"]["auc"] == pytest.approx(roc_auc(d.labels, (pa + pb) / 2))
    s = result["summary"]["pair"]
    aucs = [result["domains"][n]["pair"]["auc"] for n in ("webcam/camA", "webcam/camB")]
    assert s["webcam"]["mean_auc"] == pytest.approx(np.mean(aucs)) and s["webcam"]["worst_auc"] == pytest.approx(min(aucs))
    assert s["all"]["domains"] == 3
    table = markdown_table(result)
    assert table.count("\n| webcam/") == 2 and "| gc535/test | 3 / 3 |" in table and "mean (webcam sources)" in table
    assert report_markdown(result).startswith("# Reference: tiny, other")


def test_one_model_has_only_the_ensemble_column(data):
    result = score_domains([build_tiny_model(input_size=32)], data, domains=["gc535/test"], threads=1)
    assert list(result["domains"]) == ["gc535/test"]
    assert set(result["domains"]["gc535/test"]) == {"kind", "no_face", "seconds", "pair"}
