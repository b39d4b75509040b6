"""The embedded models: integrity, metadata, and accuracy on data they never saw.

The default (mnv2probe) was chosen on the leave-one-source-out table, which its metadata
carries (metrics['loso']). NUAA subjects 0008, 0009 and 0014 are the trainer's held-out test
subjects for every embedded model, and gc535/test was never used for training or threshold
choice, so these slices measure generalisation to unseen people, not memory. The default is
not trained on gc535 at all (its shortcut hurt every other domain), and, like every model
trained elsewhere, ranks it backwards: the gc535 figures are checked on the model trained
for it (edgenet).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import sample_files
from spoofsdk import LivenessChecker, metrics
from spoofsdk.model import ASSETS_DIR, EMBEDDED_MODELS, SpoofModel, _sha256

HELD_OUT_NUAA_SUBJECTS = ("0008", "0009", "0014")
WEBCAM_SOURCES = ("AksultanMukhanbet", "BalveerSinghYT", "Krzysiek354", "ShubhamLala", "VishalkrishnaBlaze", "jtboing", "lestari15",
                  "neonipun", "nuredinali")
MINIFASNET_PAIR_WEBCAM_MEAN_AUC = 0.768  # issue #13 / model card: the published pair on the 9 webcam sources


EMBEDDED = [(name, precision) for name in sorted(EMBEDDED_MODELS) for precision in sorted(EMBEDDED_MODELS[name])]


@pytest.mark.parametrize("name,precision", EMBEDDED)
def test_embedded_files_match_their_hashes_and_metadata(name, precision):
    filename, sha = EMBEDDED_MODELS[name][precision]
    data = (ASSETS_DIR / filename).read_bytes()
    assert _sha256(data) == sha
    # the package stays small; SpoofNet INT8 (4.95 MB, 4.9 M parameters) is the one large model issue 11 accepts
    assert len(data) < (5_200_000 if name == "spoofnet" else 4_000_000)
    model = SpoofModel(name, precision=precision)
    same_files = [n for n, v in EMBEDDED_MODELS.items() if n != "default" and v == EMBEDDED_MODELS["default"]]
    assert model.info.precision == precision and model.info.name == (same_files[0] if name == "default" else name)
    assert 0.05 < model.info.threshold < 0.95
    assert "research and evaluation" in model.info.extra["training_data"]
    figures = model.info.metrics
    if "loso" in figures:  # chosen on leave-one-source-out: the table travels with the file
        domains = figures["loso"]["domains"]
        assert set(WEBCAM_SOURCES) | {"nuaa", "gc535"} == set(domains)
        webcam = [domains[d]["auc"] for d in WEBCAM_SOURCES]
        assert np.mean(webcam) > MINIFASNET_PAIR_WEBCAM_MEAN_AUC  # the reference to beat, on cameras never seen
        assert figures["nuaa"]["auc"] >= 0.93
    elif str(figures.get("split", "")).startswith("random"):  # SpoofNet: every domain, one random split
        domains = {k for k, v in figures.items() if isinstance(v, dict) and k != "all_test_sets"}
        assert domains == set(WEBCAM_SOURCES) | {"nuaa", "gc535", "viguardieiro"}
        assert figures["all_test_sets"]["n"] == sum(figures[d]["n"] for d in domains)
    else:
        assert figures["nuaa"]["auc"] >= 0.99 and figures["gc535"]["auc"] >= 0.97


def test_default_is_int8():
    assert LivenessChecker().info.precision == "int8"


@pytest.fixture(scope="module")
def checker():
    return LivenessChecker()


def test_held_out_nuaa_frames(checker, nuaa_dir):
    labels, scores = [], []
    for subject in HELD_OUT_NUAA_SUBJECTS:
        for label, cls in ((1, "real"), (0, "attack")):
            for path in sample_files(nuaa_dir / cls / subject, 6):
                result = checker.check(path)
                if result.score is not None:
                    labels.append(label)
                    scores.append(result.score)
    assert len(scores) >= 30  # faces found and scored in nearly every frame
    assert metrics.roc_auc(labels, scores) >= 0.9
    rates = metrics.error_rates(labels, scores, checker.info.threshold)
    # The threshold is the EER point pooled over 11 domains' validation crops; on NUAA it errs
    # towards refusing live faces (measured on these frames: APCER 5.6 %, BPCER 44 %).
    assert rates.apcer <= 0.15 and rates.bpcer <= 0.6


def test_gc535_test_crops(gc535_dir):
    checker = LivenessChecker("edgenet")
    labels, scores = [], []
    for label, cls in ((1, "real"), (0, "attack")):
        for path in sample_files(gc535_dir / "test" / cls, 25):
            face = checker.check_face(path)
            assert face.score is not None, face.message
            labels.append(label)
            scores.append(face.score)
    assert metrics.roc_auc(labels, scores) >= 0.95
    # At the model's own threshold too: a crop preprocessed unlike training (e.g. squashed
    # instead of centre-squared) keeps a fair AUC but lets ~30 % of these attacks through.
    rates = metrics.error_rates(labels, scores, checker.info.threshold)
    assert rates.apcer <= 0.12 and rates.bpcer <= 0.12


def test_int8_matches_fp32_on_real_crops(gc535_dir):
    import cv2

    crops = [cv2.imread(str(p)) for p in sample_files(gc535_dir / "test", 32)]
    int8, fp32 = SpoofModel(precision="int8"), SpoofModel(precision="fp32")
    from spoofsdk.crop import resize_square

    batch = [resize_square(c, int8.info.input_size) for c in crops]
    d = np.abs(int8.score_crops(batch) - fp32.score_crops(batch))
    assert d.max() < 0.15 and np.median(d) < 0.05  # measured: max 0.10, median 0.022


def test_cli_info_shows_the_default(capsys):
    from click.testing import CliRunner

    from spoofsdk.cli import main

    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0
    assert "mnv2probe" in result.output and "int8" in result.output
    shown = json.loads(result.output.split("metrics: ", 1)[1].splitlines()[0])
    assert shown["nuaa"]["n"] > 0 and "loso" in shown


def test_spoofnet_int8_loads_by_name_with_its_figures():
    """The seed's SpoofNet as a named model: INT8, 224 px, its parameter count, and the random-split
    figures it is compared on (pooled and per domain), said to be a random split."""
    model = SpoofModel("spoofnet")
    info = model.info
    assert (info.name, info.architecture, info.precision, info.input_size, info.output) == ("spoofnet", "spoofnet", "int8", 224, "logits2")
    assert info.extra["params"] == "4881442" and info.crop_scale == 1.0
    assert "random 70/15/15 split" in info.extra["training_data"]
    figures = info.metrics
    assert figures["split"].startswith("random stratified") and "INT8" in figures["how"].upper()
    pooled = figures["all_test_sets"]
    assert pooled["n"] > 2000 and 0.0 <= pooled["accuracy"] <= 1.0 and pooled["auc"] > 0.85  # measured 0.902
    # one camera can fail where the pool does not: every two-class domain carries its own AUC
    for domain in WEBCAM_SOURCES + ("nuaa", "gc535"):
        assert 0.0 <= figures[domain]["auc"] <= 1.0 and figures[domain]["n"] > 0
    assert "auc" not in figures["viguardieiro"]  # live faces only: error rates, no AUC
    crops = np.zeros((2, 224, 224, 3), np.uint8)
    scores = model.score_crops(list(crops))
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))


def test_spoofnet_file_is_sha256_checked(tmp_path, monkeypatch):
    import spoofsdk.model as model_mod
    from spoofsdk.errors import ModelError

    filename, _ = EMBEDDED_MODELS["spoofnet"]["int8"]
    data = bytearray((ASSETS_DIR / filename).read_bytes())
    data[-1] ^= 0x01  # one bit of the last initializer
    (tmp_path / filename).write_bytes(bytes(data))
    monkeypatch.setattr(model_mod, "ASSETS_DIR", tmp_path)
    with pytest.raises(ModelError, match="SHA-256"):
        SpoofModel("spoofnet")
