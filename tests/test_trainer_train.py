"""spoofsdk_train.train: reproducibility, resume, weights-only checkpoints, sampling, and a 2-process DDP run."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

import torch

from conftest import train_in_two_processes
from spoofsdk_train.data import CropSet, load_crops, prepare
from spoofsdk_train.recipe import Recipe, load_recipe
from spoofsdk_train.synthetic import make_synthetic
from spoofsdk_train.train import BalancedSampler, TrainDataset, load_checkpoint, train


TINY = [
    "model.input_size=32",
    "data.epoch_size=32",
    "train.epochs=1",
    "train.batch_size=8",
    "train.threads=1",
    "train.num_workers=0",
    "train.log_every=0",
    "train.warmup_epochs=0",
    "train.patience=0",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tiny")
    root = make_synthetic(base / "syn", "class_subject", n_subjects=7, per_subject=4, size=40)
    return prepare(root, base / "cache", size=32, faces="crop", progress=False).parent


def tiny_recipe(data: Path, *extra: str) -> Recipe:
    r = load_recipe("edgenet", TINY + list(extra))
    r.data.manifests = [str(data)]
    return r


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_runs_of_one_recipe_give_identical_weights(tiny_data, tmp_path):
    recipe = tiny_recipe(tiny_data)
    train(recipe, tmp_path / "a", progress=False)
    train(recipe, tmp_path / "b", progress=False)
    wa, wb = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert _same(wa, wb)
    other = tiny_recipe(tiny_data, "train.seed=7")
    train(other, tmp_path / "c", progress=False)
    assert not _same(wa, _weights(tmp_path / "c" / "last.pt"))


# The CPU speed switches (bf16 autocast, channels-last) must keep resume exact, like fp32.
CPU_FAST = ["train.cpu_bf16=true", "train.channels_last=true"]


@pytest.mark.slow
@pytest.mark.parametrize("switches", [[], CPU_FAST, ["train.swa_start=0.25"]], ids=["fp32", "bf16-channels-last", "weight-averaging"])
def test_resume_from_first_epoch_matches_uninterrupted_run(tiny_data, tmp_path, monkeypatch, switches):
    recipe = tiny_recipe(tiny_data, "train.epochs=2", *switches)
    train(recipe, tmp_path / "full", progress=False)
    # interrupt after the first epoch: the checkpoint is written, then the process dies
    import spoofsdk_train.train as tt

    real_validate = tt.validate
    calls = {"n": 0}

    def dying_validate(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*a, **k)

    monkeypatch.setattr(tt, "validate", dying_validate)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "cut", progress=False)
    monkeypatch.setattr(tt, "validate", real_validate)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 0
    train(recipe, tmp_path / "cut", progress=False)  # resumes at epoch 2
    assert _same(_weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "cut" / "last.pt"))
    # best.pt too: with weight averaging it is the running mean, which must survive the interruption
    assert _same(_weights(tmp_path / "full" / "best.pt"), _weights(tmp_path / "cut" / "best.pt"))


def test_weight_averaging_saves_the_mean_of_the_late_steps(tiny_data, tmp_path, monkeypatch):
    """train.swa_start=0.5: best.pt holds the mean of the weights after each step of the second half, not any one epoch's."""
    seen = []
    real_update = torch.optim.swa_utils.AveragedModel.update_parameters

    def recording_update(self, model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_update(self, model)

    monkeypatch.setattr(torch.optim.swa_utils.AveragedModel, "update_parameters", recording_update)
    # On CUDA torch averages with foreach kernels, which refuse BatchNorm's integer step counter;
    # claiming the CPU supports them reproduces that path here.
    monkeypatch.setattr(torch.optim.swa_utils, "_get_foreach_kernels_supported_devices", lambda: ["cpu", "cuda"])
    recipe = tiny_recipe(tiny_data, "train.epochs=2", "train.swa_start=0.5")
    train(recipe, tmp_path / "avg", progress=False)
    steps_per_epoch = recipe.data.epoch_size // recipe.train.batch_size
    assert len(seen) == steps_per_epoch  # the second of two epochs
    best, last = load_checkpoint(tmp_path / "avg" / "best.pt"), load_checkpoint(tmp_path / "avg" / "last.pt")
    assert best["averaged_steps"] == len(seen) and best["epoch"] == 1
    floats = [k for k, v in best["model"].items() if v.is_floating_point()]
    for k in floats:
        torch.testing.assert_close(best["model"][k], torch.stack([w[k] for w in seen]).mean(0), rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in floats)  # not the last step's weights
    # A run without averaging keeps the training hash it had before swa_start existed (runs on disk are
    # resumed and crossval folds read back by it): this value is hybrid_mnv2's hash from the code of
    # 2026-11-30 before the field was added. One with averaging gets a new hash.
    before = ["train.distill_alpha=0", "train.domain_adv=0", "train.triplet_weight=0"]  # the recipe before it distilled (and before SSDG)
    assert load_recipe("hybrid_mnv2", before).training_hash() == "fcedf11cb448b5a8"
    assert load_recipe("hybrid_mnv2", ["train.swa_start=0.5"]).training_hash() != "fcedf11cb448b5a8"
    # Same for the distillation gate (added later), at its default.
    assert load_recipe("hybrid_mnv2", before + ["train.distill_gate=none"]).training_hash() == "fcedf11cb448b5a8"
    with pytest.raises(ValueError, match="swa_start"):
        train(tiny_recipe(tiny_data, "train.swa_start=1.0"), tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="--extend"):
        train(tiny_recipe(tiny_data, "train.epochs=3", "train.swa_start=0.5"), tmp_path / "avg", progress=False, extend=True)


@pytest.mark.slow
def test_bf16_autocast_trains_on_cpu_and_resumes(tiny_data, tmp_path):
    """cpu_bf16: the forward pass runs in bf16 (the weights differ from fp32's), the loss stays finite,
    no GradScaler state is written (CUDA fp16 only), and the checkpoint resumes into a longer run."""
    fast = tiny_recipe(tiny_data, *CPU_FAST)
    train(fast, tmp_path / "bf16", progress=False)
    assert "autocast bfloat16, channels_last True" in (tmp_path / "bf16" / "train.log").read_text()
    ck = load_checkpoint(tmp_path / "bf16" / "last.pt")
    row = ck["history"][0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    assert ck["scaler"] == {}
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    train(tiny_recipe(tiny_data), tmp_path / "fp32", progress=False)
    assert not _same(ck["model"], _weights(tmp_path / "fp32" / "last.pt"))
    # the bf16 checkpoint resumes: one more epoch under the extended recipe
    longer = tiny_recipe(tiny_data, *CPU_FAST, "train.epochs=2")
    summary = train(longer, tmp_path / "bf16", progress=False, extend=True)
    ck2 = load_checkpoint(tmp_path / "bf16" / "last.pt")
    assert ck2["epoch"] == 1 and summary["epochs_run"] == 2 and np.isfinite(ck2["history"][1]["train_loss"])
    assert not _same(ck["model"], ck2["model"])


def test_checkpoints_load_weights_only(tiny_data, tmp_path):
    train(tiny_recipe(tiny_data), tmp_path / "r", progress=False)
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / "r" / name, map_location="cpu", weights_only=True)
        assert "model" in ck and ck["recipe"]["model"]["architecture"] == "edgenet"
    assert (tmp_path / "r" / "history.json").exists() and (tmp_path / "r" / "train.log").exists()


def test_balanced_sampler_shards_and_encodes_repeats(tiny_data):
    crops = load_crops([tiny_data], "train")
    full = list(BalancedSampler(crops, "balanced", 400, 1, 0, seed=1))
    s0 = list(BalancedSampler(crops, "balanced", 400, 2, 0, seed=1))
    s1 = list(BalancedSampler(crops, "balanced", 400, 2, 1, seed=1))
    assert len(s0) == len(s1) == 200
    assert sorted(s0 + s1) == sorted(full)
    assert len(set(full)) == len(full)  # repeats are encoded, so each draw gets its own augmentation


# Two domains of very different sizes, neither balanced: uniform draws would give the four (domain, class)
# groups 78 %, 16 %, 1.3 % and 5.2 % of the draws, and the two classes 79 % and 21 %.
UNEVEN_GROUPS = {("big", 1): 300, ("big", 0): 60, ("small", 1): 5, ("small", 0): 20}


def _uneven_crops() -> CropSet:
    """Crops of UNEVEN_GROUPS; the sampler and the probe weights read only their domains and labels."""
    sets = [domain for (domain, _), n in UNEVEN_GROUPS.items() for _ in range(n)]
    labels = np.asarray([label for (_, label), n in UNEVEN_GROUPS.items() for _ in range(n)], np.int64)
    return CropSet(np.zeros((len(labels), 1, 1, 3), np.uint8), labels, sets, [f"{s}/{i}.png" for i, s in enumerate(sets)])


# Each group's share of DRAWS independent draws at p = 1/4 has a standard deviation of
# sqrt(0.25 * 0.75 / 20000) = 0.0031 (0.0035 for a class at p = 1/2), so 0.02 is more than five of them; the
# seed is fixed, so the draws are the same on every run. Uniform draws miss every share by 0.09 or more.
DRAWS, SHARE_TOLERANCE = 20000, 0.02


def test_balanced_sampler_draws_every_domain_and_class_group_equally():
    crops = _uneven_crops()
    drawn = np.asarray(list(BalancedSampler(crops, "balanced", DRAWS, 1, 0, seed=3))) % len(crops)
    assert len(drawn) == DRAWS
    for domain, label in UNEVEN_GROUPS:
        in_group = np.asarray([crops.sets[i] == domain and crops.labels[i] == label for i in drawn])
        assert abs(in_group.mean() - 1 / len(UNEVEN_GROUPS)) < SHARE_TOLERANCE, (domain, label)
    # sampling = "class": each class half the draws, whatever its domains
    drawn = np.asarray(list(BalancedSampler(crops, "class", DRAWS, 1, 0, seed=3))) % len(crops)
    assert abs(crops.labels[drawn].mean() - 0.5) < SHARE_TOLERANCE


def test_probe_group_weights_give_every_domain_and_class_group_the_same_total():
    """Probe mode weighs its samples instead of drawing them (the loss is the weighted mean over all
    samples), so a group's share of the loss is its share of the total weight: exact, no tolerance."""
    from spoofsdk_train.probe import group_weights

    crops = _uneven_crops()
    weights = group_weights(crops.sets, crops.labels, "balanced")
    for domain, label in UNEVEN_GROUPS:
        in_group = np.asarray([s == domain and l == label for s, l in zip(crops.sets, crops.labels)])
        assert weights[in_group].sum() / weights.sum() == pytest.approx(1 / len(UNEVEN_GROUPS), rel=1e-9), (domain, label)
    weights = group_weights(crops.sets, crops.labels, "class")
    assert weights[crops.labels == 1].sum() / weights.sum() == pytest.approx(0.5, rel=1e-9)
    assert np.array_equal(group_weights(crops.sets, crops.labels, "uniform"), np.ones(len(crops)))


def test_augmented_items_are_reproducible(tiny_data):
    recipe = tiny_recipe(tiny_data)
    crops = load_crops([tiny_data], "train")
    from spoofsdk_train.augment import Augmenter

    m = recipe.model
    ds = TrainDataset(crops, Augmenter(recipe.augment), 32, m.color_order, m.mean, m.std, seed=5)
    a, la, sa, da = ds[3]
    b, lb, _, db = ds[3]
    assert torch.equal(a, b) and la == lb and a.shape == (3, 32, 32) and sa is False and da == db == ds.domains.index(crops.sets[3])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[3][0])


def test_synthesis_relabels_live_crops_as_the_recipe_says(tiny_data):
    """[synth] p_synth=1, apply_to=real_only: every live crop comes out a (synthesized) attack, attacks untouched."""
    from spoofsdk_train.augment import Augmenter
    from spoofsdk_train.synth import AttackSynthesizer

    crops = load_crops([tiny_data], "train")
    m = tiny_recipe(tiny_data).model
    plain = TrainDataset(crops, Augmenter({}), 32, m.color_order, m.mean, m.std, seed=5)
    off = TrainDataset(crops, Augmenter({}), 32, m.color_order, m.mean, m.std, seed=5, synth=AttackSynthesizer({"p_synth": 0.0}))
    on = TrainDataset(crops, Augmenter({}), 32, m.color_order, m.mean, m.std, seed=5,
                      synth=AttackSynthesizer({"p_synth": 1.0, "apply_to": "real_only"}))
    for i in range(len(crops)):
        x0, l0, s0, _ = plain[i]
        x1, l1, s1, _ = off[i]
        x2, l2, s2, _ = on[i]
        assert l0 == int(crops.labels[i]) and torch.equal(x0, x1) and l1 == l0  # off: bit-identical to no synthesis
        assert l2 == 0
        assert not s0 and not s1 and s2 == (l0 == 1)  # only a live crop made into an attack is flagged synthesized
        assert torch.equal(x2, x0) == (l0 == 0)  # attacks untouched, live crops changed


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    train_in_two_processes(out, [tiny_data], TINY + ["train.epochs=2"])
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 1
    log = (out / "train.log").read_text()
    assert "world 2" in log and "x2 processes" in log


# --- online distillation (train.distill_alpha in the full loop) ---------------------------------------
def test_distill_targets_mix_label_and_teacher_but_keep_synthesized_attacks_at_their_label():
    from spoofsdk_train.train import distill_targets

    labels = torch.tensor([1, 0, 0, 1])
    teacher = torch.tensor([0.2, 0.9, 0.6, 1.0])
    synthesized = torch.tensor([False, False, True, False])
    got = distill_targets(labels, teacher, synthesized, 0.5)
    torch.testing.assert_close(got, torch.tensor([0.6, 0.45, 0.0, 1.0]))
    torch.testing.assert_close(distill_targets(labels, teacher, synthesized, 0.0), labels.float())
    # Gated: the teacher is heard only on the label's side of 0.5 (live 0.2 and attack 0.9 fall back to the label).
    gated = distill_targets(labels, teacher, synthesized, 0.5, gate="agree")
    torch.testing.assert_close(gated, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(distill_targets(labels, torch.tensor([0.8, 0.3, 0.6, 0.7]), synthesized, 0.5, "agree"),
                               torch.tensor([0.9, 0.15, 0.0, 0.85]))
    with pytest.raises(ValueError, match="distill_gate"):
        distill_targets(labels, teacher, synthesized, 0.5, gate="sometimes")


class _ConstantTeacher(torch.nn.Module):
    """Says 0.5 of every crop and records the batches it saw."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        return torch.full((len(x),), 0.5)


def _register_teacher(monkeypatch, module, files) -> None:
    """Stand a module in for the MiniFASNet pair in the teacher registry (no checkpoints needed)."""
    from spoofsdk_train import teachers

    fake = teachers.Teacher(name="minifasnet_pair", card="a test teacher", checkpoint_files=lambda: list(files),
                            build_batch_module=lambda *args: module, build_crop_scorer=lambda: None)
    monkeypatch.setitem(teachers.TEACHERS, "minifasnet_pair", fake)


def test_a_missing_teacher_stops_training_before_the_data_is_read(tiny_data, tmp_path, monkeypatch):
    import spoofsdk_train.train as train_mod

    monkeypatch.setenv("SPOOFSDK_MINIFASNET_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(train_mod, "_load_data", lambda d: pytest.fail("data read before the teacher was checked"))
    with pytest.raises(FileNotFoundError, match="teacher minifasnet_pair.*2.7_80x80_MiniFASNetV2.pth"):
        train(tiny_recipe(tiny_data, "train.distill_alpha=0.5"), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="unknown teacher 'nobody'; known: minifasnet_pair"):
        train(tiny_recipe(tiny_data, "train.distill_alpha=0.5", "train.teacher=nobody"), tmp_path / "y", progress=False)


def test_full_loop_trains_on_the_teachers_view_of_every_augmented_batch(tiny_data, tmp_path, monkeypatch):
    """The loss sees (1 - alpha) * label + alpha * teacher for every draw; the teacher sees every batch."""
    import spoofsdk_train.train as train_mod

    teacher, targets = _ConstantTeacher(), []
    real_make_loss = train_mod.make_loss

    def recording_loss(recipe, output):
        loss = real_make_loss(recipe, output)

        def fn(logits, y):
            if logits.requires_grad:  # training steps, not validation
                targets.append(y.detach().clone())
            return loss(logits, y)

        return fn

    weights = tmp_path / "teacher.pth"
    weights.write_bytes(b"teacher weights")
    _register_teacher(monkeypatch, teacher, [weights])
    monkeypatch.setattr(train_mod, "make_loss", recording_loss)
    train(tiny_recipe(tiny_data, "train.epochs=2", "train.distill_alpha=0.25"), tmp_path / "d", progress=False)
    assert len(teacher.batches) == 2 * 32 // 8 == len(targets) and all(s == (8, 3, 32, 32) for s in teacher.batches)
    # The checkpoint records which weights taught it (the export names them in the metadata).
    record = load_checkpoint(tmp_path / "d" / "best.pt")["teacher"]
    assert record == {"name": "minifasnet_pair", "alpha": 0.25, "checkpoints": {"teacher.pth": hashlib.sha256(b"teacher weights").hexdigest()}}
    every = torch.cat(targets)
    assert every.is_floating_point()
    # label 1 -> 0.75 + 0.125, label 0 -> 0.125: both classes drawn, nothing else.
    assert set(every.tolist()) == {0.125, 0.875}
    targets.clear()
    train(tiny_recipe(tiny_data, "train.epochs=2"), tmp_path / "l", progress=False)
    assert not torch.cat(targets).is_floating_point() and len(teacher.batches) == 8  # alpha 0: no teacher, class indices
    # Every live crop synthesized into an attack: its target is the label (0), not the teacher's 0.5 mixed in.
    targets.clear()
    train(tiny_recipe(tiny_data, "train.epochs=1", "train.distill_alpha=0.25", "synth.p_synth=1.0", "synth.apply_to=\"real_only\""),
          tmp_path / "s", progress=False)
    assert set(torch.cat(targets).tolist()) == {0.0, 0.125}  # synthesized attacks 0, real attacks 0.75 * 0 + 0.25 * 0.5
    # The run's log says its attacks were partly made here; a run without synthesis says nothing of it.
    assert "attack synthesis: p_synth 1.00 (replay 0.50 / print 0.50) on real crops" in (tmp_path / "s" / "train.log").read_text()
    assert "attack synthesis" not in (tmp_path / "l" / "train.log").read_text()


def test_distill_alpha_outside_zero_to_one_and_unknown_gates_are_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="distill_alpha"):
        train(tiny_recipe(tiny_data, "train.distill_alpha=1.5"), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="distill_gate must be one of none, agree"):
        train(tiny_recipe(tiny_data, "train.distill_alpha=0.5", "train.distill_gate=often"), tmp_path / "y", progress=False)


def test_each_run_logs_to_its_own_file_only(tiny_data, tmp_path):
    """Two runs in one process (crossval's folds share a worker): the second run's lines stay out of the first's train.log."""
    import logging

    train(tiny_recipe(tiny_data), tmp_path / "one", progress=False)
    train(tiny_recipe(tiny_data, "train.seed=3"), tmp_path / "two", progress=False)
    first, second = (tmp_path / "one" / "train.log").read_text(), (tmp_path / "two" / "train.log").read_text()
    assert str(tmp_path / "one") in first and str(tmp_path / "two") not in first
    assert str(tmp_path / "two") in second and str(tmp_path / "one") not in second
    assert not [h for h in logging.getLogger("spoofsdk_train").handlers if isinstance(h, logging.FileHandler)
                and str(tmp_path) in h.baseFilename]
