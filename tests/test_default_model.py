"""The embedded models: integrity, metadata, and accuracy on data they never saw.

The default (hybrid_mnv2) was chosen on the leave-one-source-out table, which its metadata
carries (metrics['loso'], with a second seed of the recipe in metrics['loso']['replicates']). NUAA subjects 0008, 0009 and 0014 are the trainer's held-out test
subjects for every embedded model, and gc535/test was never used for training or threshold
choice, so these slices measure generalisation to unseen people, not memory. The default is
not trained on gc535 at all (its shortcut hurt every other domain), and, like every model
trained elsewhere, ranks it backwards: the gc535 figures are checked on the model trained
for it (edgenet).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import sample_files
from spoofsdk import LivenessChecker, metrics
from spoofsdk.model import ASSETS_DIR, EMBEDDED_MODELS, SpoofModel, _sha256, loso_runs, loso_tables

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
        for replicate in figures["loso"].get("replicates", []):  # the same recipe, another seed
            assert set(replicate["auc"]) == set(domains)
            assert np.mean([replicate["auc"][d] for d in WEBCAM_SOURCES]) > MINIFASNET_PAIR_WEBCAM_MEAN_AUC
    elif str(figures.get("split", "")).startswith("random"):  # SpoofNet: every domain, one random split
        domains = {k for k, v in figures.items() if isinstance(v, dict) and k != "all_test_sets"}
        assert domains == set(WEBCAM_SOURCES) | {"nuaa", "gc535", "viguardieiro"}
        assert figures["all_test_sets"]["n"] == sum(figures[d]["n"] for d in domains)
    else:
        assert figures["nuaa"]["auc"] >= 0.99 and figures["gc535"]["auc"] >= 0.97


def test_default_is_int8():
    assert LivenessChecker().info.precision == "int8"


def test_default_is_the_edge_model_with_the_best_leave_one_source_out_table():
    """Issue 13's rule, on the tables the files carry: among embedded edge models (<= 1 M parameters,
    <= 100 M MACs) with a leave-one-source-out table, the default has the best mean AUC over the same
    domains (averaged over the recipe's seeds where there are several), and a better worst domain too."""
    def table(name):
        info = SpoofModel(name).info
        loso = info.metrics.get("loso")
        if loso is None or int(info.extra["params"]) > 1_000_000 or int(info.extra["macs"]) > 100_000_000:
            return None
        return loso_runs(info.metrics)

    tables = {name: t for name in EMBEDDED_MODELS if name != "default" and (t := table(name)) is not None}
    assert len(tables) >= 2  # a choice was made between candidates
    default = SpoofModel("default").info.name
    domains = set.intersection(*(set(run) for runs in tables.values() for run in runs))
    mean = {n: np.mean([np.mean([run[d] for d in domains]) for run in runs]) for n, runs in tables.items()}
    worst = {n: np.mean([min(run[d] for d in domains) for run in runs]) for n, runs in tables.items()}
    assert mean[default] == max(mean.values()) and worst[default] == max(worst.values())


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
    # Measured 0.975 on these 36 frames (the previous default, without SSDG: 0.923; undistilled: 0.997).
    assert metrics.roc_auc(labels, scores) >= 0.95
    rates = metrics.error_rates(labels, scores, checker.info.threshold)
    # The threshold is the EER point pooled over the training domains' validation crops. Measured on these
    # frames: APCER 0 %, BPCER 27.8 % (5 of 18 live frames refused, subject 0008's: on a camera like his, calibrate).
    # The default errs towards refusing a live face rather than admitting a photo (previous default 22.2 % /
    # 11.1 %; undistilled 11.1 % / 0 %; mnv2probe 5.6 % / 44 %). One frame is 5.6 %.
    assert rates.apcer <= 0.12 and rates.bpcer <= 0.40


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
    assert d.max() < 0.2 and np.median(d) < 0.05  # measured: max 0.13, median 0.015


def test_cli_info_shows_the_default(capsys):
    from click.testing import CliRunner

    from spoofsdk.cli import main

    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0
    assert "hybrid_mnv2" in result.output and "int8" in result.output
    # The figures it carries, as tables: its own test splits, then the leave-one-source-out table it was chosen on.
    info = SpoofModel("default").info
    own, loso = result.output.split("\nleave-one-source-out (", 1)
    nuaa = next(line.split() for line in own.splitlines() if line.strip().startswith("nuaa "))
    assert int(nuaa[1]) == info.metrics["nuaa"]["n"] and float(nuaa[2]) == pytest.approx(info.metrics["nuaa"]["auc"], abs=5e-4)
    rows = {line.split()[0]: line.split() for line in loso.splitlines()[2:] if line.startswith("  ") and not line.strip().startswith("mean")}
    assert set(rows) == set(info.metrics["loso"]["domains"])
    seeds = 1 + len(info.metrics["loso"].get("replicates", []))
    assert seeds == 2 and "2 seeds" in loso.splitlines()[0]
    mean_line = next(line for line in loso.splitlines() if line.strip().startswith("mean "))
    assert mean_line.split()[1].rstrip(",") == "0.856"  # the model card's 11-domain mean (README)


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


def test_model_card_table_is_the_one_the_default_carries():
    """README's leave-one-source-out table (seed columns and their mean) is the table in the default's
    metadata, to the printed digit: the figures users read cannot drift from the file they load."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("| held-out domain | seed 42 (shipped) | seed 7 | **mean of 2 seeds** |")
    rows = {}
    for line in readme[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:4]
    seeds = loso_runs(SpoofModel("default").info.metrics)
    assert len(seeds) == 2  # the card's two seed columns
    names = {d: d for d in seeds[0]} | {"nuaa": "NUAA (all subjects)", "gc535": "gc535 (never trained on)"}
    for domain, label in names.items():
        expected = [f"{seeds[0][domain]:.3f}", f"{seeds[1][domain]:.3f}", f"{(seeds[0][domain] + seeds[1][domain]) / 2:.3f}"]
        assert rows[label] == expected, domain
    means = [np.mean(list(run.values())) for run in seeds]
    assert rows["mean, 11 domains"] == [f"{means[0]:.3f}", f"{means[1]:.3f}", f"{np.mean(means):.3f}"]
    bpcer = [np.mean([v["bpcer_at_apcer_5"] for v in run.values()]) for run in loso_tables(SpoofModel("default").info.metrics)]
    assert rows["mean BPCER@APCER5"] == [f"{bpcer[0]:.2f}", f"{bpcer[1]:.2f}", f"{np.mean(bpcer):.2f}"]
