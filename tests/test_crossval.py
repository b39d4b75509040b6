"""spoofsdk_train.crossval: leave-one-source-out end to end on tiny synthetic domains."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

from spoofsdk_train.crossval import crossval, fold_plan
from spoofsdk_train.data import prepare, read_manifest
from spoofsdk_train.evaluate import choose_threshold
from spoofsdk_train.recipe import load_recipe
from spoofsdk_train.synthetic import make_synthetic
from spoofsdk_train.train import load_checkpoint

PROBE = ["model.input_size=32", "model.kwargs={pretrained = false, hidden = 0, dropout = 0.0}", "train.epochs=3", "train.batch_size=16",
         "train.threads=1", "train.probe_views=2", "train.lr=0.01"]


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("domains")
    out = []
    for i, name in enumerate(("camA", "camB", "camC")):
        root = make_synthetic(base / "raw" / name, "class_flat", n_subjects=4, per_subject=3, size=40, seed=i)
        out.append(prepare(root, base / "cache", size=32, faces="crop", progress=False).parent)
    live_only = base / "raw" / "liveonly" / "real"
    live_only.mkdir(parents=True)
    for f in sorted((base / "raw" / "camA" / "live").iterdir())[:6]:
        (live_only / f.name).write_bytes(f.read_bytes())
    out.append(prepare(base / "raw" / "liveonly", base / "cache", size=32, faces="crop", progress=False).parent)
    return out


def test_fold_plan_holds_out_each_two_class_domain_and_never_trains_on_it(domains):
    manifests = [read_manifest(d) for d in domains]
    plan = fold_plan(manifests)
    assert [f["held_out"] for f in plan] == ["camA", "camB", "camC"]  # liveonly has one class: trains, never held out
    for fold in plan:
        trained = [read_manifest(p)["dataset"] for p in fold["train"]]
        assert fold["held_out"] not in trained and "liveonly" in trained and len(trained) == 3
    # A test-only domain is held out in its own fold and never trains in any fold.
    plan = fold_plan(manifests[1:], None, test_only=manifests[:1])
    assert [f["held_out"] for f in plan] == ["camB", "camC", "camA"]
    assert all("camA" not in [read_manifest(p)["dataset"] for p in f["train"]] for f in plan)
    with pytest.raises(ValueError, match="lack one class"):
        fold_plan(manifests, ["liveonly"])
    with pytest.raises(ValueError, match="not among"):
        fold_plan(manifests, ["nowhere"])


def test_crossval_end_to_end_probe(domains, tmp_path, monkeypatch):
    recipe = load_recipe("probe", PROBE + [f"train.probe_cache={json.dumps(str(tmp_path / 'cache'))}",
                                           "data.manifests=" + json.dumps([str(d) for d in domains])])
    result = crossval(recipe, tmp_path / "loso", held_out=["camA", "camB"])
    rows = result["domains"]
    assert [r["domain"] for r in rows] == ["camA", "camB"]
    for r in rows:
        fold = json.loads((tmp_path / "loso" / "folds" / r["domain"] / "fold.json").read_text())
        assert fold["held_out"] == r["domain"] and r["domain"] not in fold["train_domains"]
        assert sorted(fold["train_domains"]) == sorted({"camA", "camB", "camC", "liveonly"} - {r["domain"]})
        # The record is what the trainer loaded (the recipe it saved beside the weights), not the fold's plan.
        assert fold["train_manifests"] == load_checkpoint(tmp_path / "loso" / "folds" / r["domain"] / "best.pt")["recipe"]["data"]["manifests"]
        assert r["n_real"] == 12 and r["n_attack"] == 12  # every split of the held-out domain is scored
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 < r["threshold"] < 1.0
        scores = np.load(tmp_path / "loso" / "folds" / r["domain"] / "held_out_scores.npz")
        assert len(scores["scores"]) == 24
        # the validation scores the frozen threshold was chosen on: the training domains' val crops only
        val = np.load(tmp_path / "loso" / "folds" / r["domain"] / "val_scores.npz")
        assert len(val["scores"]) == len(val["labels"]) == len(val["domains"]) == fold["n_val"] > 0
        assert set(val["domains"]) <= set(fold["train_domains"]) and r["domain"] not in set(val["domains"])
        assert choose_threshold(val["labels"], val["scores"], recipe.eval.threshold)[0] == pytest.approx(r["threshold"])
    s = result["summary"]["auc"]
    assert s["mean"] == pytest.approx(np.mean([r["auc"] for r in rows])) and s["worst"] == min(r["auc"] for r in rows)
    md = (tmp_path / "loso" / "crossval.md").read_text()
    assert md.count("\n| cam") == 2 and "**mean**" in md and "**worst**" in md
    assert (tmp_path / "loso" / "crossval.png").stat().st_size > 1000
    assert json.loads((tmp_path / "loso" / "crossval.json").read_text())["summary"] == json.loads(json.dumps(result["summary"]))
    # The trunk statistics were computed once and shared: the cache holds one file per crop and view.
    n_crops = sum(read_manifest(d)["n_items"] for d in domains)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) <= n_crops * 2

    # Run again: finished folds (same training hash, same threshold rule) are read back, not retrained.
    first_hash = json.loads((tmp_path / "loso" / "folds" / "camA" / "fold.json").read_text())["recipe_hash"]
    stamps = {r["domain"]: (tmp_path / "loso" / "folds" / r["domain"] / "best.pt").stat().st_mtime_ns for r in rows}
    again = crossval(recipe, tmp_path / "loso", held_out=["camA", "camB"])
    assert [(r["domain"], r["auc"], r["threshold"]) for r in again["domains"]] == [(r["domain"], r["auc"], r["threshold"]) for r in rows]
    assert stamps == {r["domain"]: (tmp_path / "loso" / "folds" / r["domain"] / "best.pt").stat().st_mtime_ns for r in rows}
    # A changed recipe retrains that fold.
    crossval(recipe.with_overrides(["train.lr=0.02"]), tmp_path / "loso", held_out=["camA"])
    assert (tmp_path / "loso" / "folds" / "camA" / "best.pt").stat().st_mtime_ns != stamps["camA"]
    assert json.loads((tmp_path / "loso" / "folds" / "camA" / "fold.json").read_text())["recipe_hash"] != first_hash
    # A fold cut short while writing fold.json is trained again, not a crash.
    (tmp_path / "loso" / "folds" / "camB" / "fold.json").write_text('{"held_out": "ca')
    crossval(recipe, tmp_path / "loso", held_out=["camB"])
    assert json.loads((tmp_path / "loso" / "folds" / "camB" / "fold.json").read_text())["held_out"] == "camB"
    import spoofsdk_train.train as train_mod

    # A fold whose training loaded other data than its plan (here every domain, the held-out one too) is
    # refused: no fold.json names the plan's domains for a model that saw the held-out one.
    real_train = train_mod.train
    every_domain = recipe.with_overrides(["train.lr=0.04"])
    monkeypatch.setattr(train_mod, "train", lambda fold_recipe, *a, **k: real_train(every_domain, *a, **k))
    with pytest.raises(RuntimeError, match=r"best.pt was trained on \['camA'"):
        crossval(every_domain, tmp_path / "loso", held_out=["camA"])
    assert not (tmp_path / "loso" / "folds" / "camA" / "fold.json").exists()
    # A retraining that fails leaves neither the old recipe's fold result nor the old table behind.

    def broken(*args, **kwargs):
        raise RuntimeError("stopped")

    monkeypatch.setattr(train_mod, "train", broken)
    with pytest.raises(RuntimeError, match="stopped"):
        crossval(recipe.with_overrides(["train.lr=0.03"]), tmp_path / "loso", held_out=["camA"])
    assert not (tmp_path / "loso" / "crossval.json").exists()
    assert not (tmp_path / "loso" / "folds" / "camA" / "fold.json").exists()
    assert not (tmp_path / "loso" / "folds" / "camA" / "held_out_scores.npz").exists()
    assert not (tmp_path / "loso" / "folds" / "camA" / "val_scores.npz").exists()
    assert not list((tmp_path / "loso").rglob("*.partial*"))


def test_crossval_parallel_folds_equal_serial_ones(domains, tmp_path):
    """--jobs 2 runs folds in two processes and tabulates the same figures as one process."""
    recipe = load_recipe("probe", PROBE + [f"train.probe_cache={json.dumps(str(tmp_path / 'cache'))}",
                                           "data.manifests=" + json.dumps([str(d) for d in domains])])
    serial = crossval(recipe, tmp_path / "one", held_out=["camA", "camB"])
    parallel = crossval(recipe, tmp_path / "two", held_out=["camA", "camB"], jobs=2)
    assert [r["domain"] for r in parallel["domains"]] == ["camA", "camB"] and parallel["jobs"] == 2
    for a, b in zip(serial["domains"], parallel["domains"]):
        assert a["auc"] == pytest.approx(b["auc"], abs=1e-9) and a["threshold"] == pytest.approx(b["threshold"], abs=1e-6)
        assert "camA" not in json.loads((tmp_path / "two" / "folds" / "camA" / "fold.json").read_text())["train_domains"]


def test_probe_scores_equal_the_full_forward_pass(domains, tmp_path):
    """The cache is a shortcut, not a different model: cached-statistics scores == model(images)."""
    import torch

    from spoofsdk_train.crossval import _all_splits
    from spoofsdk_train.train import model_from_checkpoint, predict_scores, train

    recipe = load_recipe("probe", PROBE + [f"train.probe_cache={json.dumps(str(tmp_path / 'cache'))}",
                                           "data.manifests=" + json.dumps([str(d) for d in domains[:2]])])
    train(recipe, tmp_path / "run", progress=False)
    model, rec, _ = model_from_checkpoint(tmp_path / "run" / "best.pt")
    from spoofsdk_train.probe import make_cache, probe_scores

    crops = _all_splits(read_manifest(domains[2]))
    cached = probe_scores(model, make_cache(model, rec).view(crops, 0)["stats"])
    full = predict_scores(model, crops, rec)
    assert np.abs(cached - full).max() < 1e-5
    assert all(not p.requires_grad for p in model.low.parameters())


def test_probe_training_weighs_every_domain_and_class_group_the_same(domains, tmp_path, monkeypatch):
    """train_probe fits the head with the balanced group weights (data.sampling), on every view."""
    import spoofsdk_train.probe as probe
    from spoofsdk_train.data import load_crops
    from spoofsdk_train.train import train

    seen = {}
    real_fit_head = probe.fit_head

    def recording_fit_head(model, stats, labels, weights, teacher, recipe):
        seen.update(labels=labels, weights=weights)
        return real_fit_head(model, stats, labels, weights, teacher, recipe)

    monkeypatch.setattr(probe, "fit_head", recording_fit_head)
    recipe = load_recipe("probe", PROBE + [f"train.probe_cache={json.dumps(str(tmp_path / 'cache'))}",
                                           "data.manifests=" + json.dumps([str(d) for d in domains])])
    train(recipe, tmp_path / "run", progress=False)
    # The samples are the training crops once per view, in load order (train_probe stacks view after view).
    sets = load_crops([read_manifest(d) for d in domains], "train").sets * recipe.train.probe_views
    groups = sorted(set(zip(sets, seen["labels"].tolist())))
    members = {g: np.asarray([(s, l) == g for s, l in zip(sets, seen["labels"].tolist())]) for g in groups}
    # The groups differ in size (liveonly has live crops only, and fewer), so equal weights would not balance them.
    assert len({int(m.sum()) for m in members.values()}) > 1
    totals = [seen["weights"][m].sum() for m in members.values()]
    assert max(totals) == pytest.approx(min(totals), rel=1e-9)


def test_style_mixed_probe_views_are_styled_after_the_folds_own_training_domains(domains, tmp_path, monkeypatch):
    """synth.p_style_mix with probe_views > 1: a view borrows the look of another training crop, so a fold
    must read the views it would compute in an empty cache, never those computed first for another fold
    (styled after the domain this fold holds out)."""
    import spoofsdk_train.probe as probe
    from spoofsdk_train.data import load_crops
    from spoofsdk_train.models import build_model

    recipe = load_recipe("probe", PROBE + ["synth.p_style_mix=1.0"])
    model = build_model(recipe.model.architecture, **recipe.model.kwargs)  # one trunk for every cache below
    by_name = {read_manifest(d)["dataset"]: read_manifest(d) for d in domains}
    without_camA = load_crops([by_name[n] for n in ("camB", "camC", "liveonly")], "train")
    without_camB = load_crops([by_name[n] for n in ("camA", "camC", "liveonly")], "train")
    shared = probe.ProbeCache(tmp_path / "shared", model, recipe)
    shared.view(without_camA, 1)  # the fold holding out camA fills the cache first: camC and liveonly styled after camB too
    read = shared.view(without_camB, 1)
    references = []
    real_pick_reference = probe.pick_reference

    def recording_pick_reference(sets, i, rng, *args):
        j = real_pick_reference(sets, i, rng, *args)
        references.append(None if j is None else sets[j])
        return j

    monkeypatch.setattr(probe, "pick_reference", recording_pick_reference)
    alone = probe.ProbeCache(tmp_path / "alone", model, recipe).view(without_camB, 1)
    assert set(references) <= {"camA", "camC", "liveonly"} and len(references) == len(without_camB)  # styled among its own domains
    assert np.array_equal(read["stats"], alone["stats"]) and np.array_equal(read["labels"], alone["labels"])
    # Without style mixing a view depends on its crop alone: the folds share it (one file per crop).
    plain = probe.ProbeCache(tmp_path / "plain", model, load_recipe("probe", PROBE))
    plain.view(without_camA, 1)
    plain.view(without_camB, 1)
    assert len(list((tmp_path / "plain").rglob("*.npz"))) == len(set(without_camA.files) | set(without_camB.files))


@pytest.mark.slow
def test_crossval_full_mode_trains_each_fold_without_its_domain(domains, tmp_path, monkeypatch):
    recipe = load_recipe("edgenet", ["model.input_size=32", "data.epoch_size=16", "train.epochs=1", "train.batch_size=8", "train.threads=1",
                                     "train.warmup_epochs=0", "train.log_every=0", "data.manifests=" + json.dumps([str(d) for d in domains])])
    result = crossval(recipe, tmp_path / "loso", held_out=["camC"])
    fold_dir = tmp_path / "loso" / "folds" / "camC"
    fold = json.loads((fold_dir / "fold.json").read_text())
    assert "camC" not in fold["train_domains"] and len(result["domains"]) == 1

    # A fold whose training finished but whose scoring did not (killed, or scoring raised) is scored
    # from its best.pt, not trained again; a changed recipe still retrains.
    import spoofsdk_train.train as train_mod

    (fold_dir / "fold.json").unlink()
    (fold_dir / "held_out_scores.npz").unlink()
    real_train = train_mod.train
    calls = []
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: calls.append(a) or real_train(*a, **k))
    again = crossval(recipe, tmp_path / "loso", held_out=["camC"])
    assert calls == [] and again["domains"][0]["auc"] == result["domains"][0]["auc"] and (fold_dir / "fold.json").is_file()
    assert again["domains"][0]["seconds"] >= json.loads((fold_dir / "history.json").read_text())[0]["epoch_time_s"]
    (fold_dir / "fold.json").unlink()
    crossval(recipe.with_overrides(["train.seed=3"]), tmp_path / "loso", held_out=["camC"])
    assert len(calls) == 1
    # A summary that names this recipe beside a best.pt of another (stale files) is not trusted: trained again.
    (fold_dir / "fold.json").unlink()
    summary = json.loads((fold_dir / "train_summary.json").read_text())
    summary["recipe_hash"] = recipe.with_overrides([f"data.manifests={json.dumps(fold['train_manifests'])}"]).training_hash()
    (fold_dir / "train_summary.json").write_text(json.dumps(summary))
    crossval(recipe, tmp_path / "loso", held_out=["camC"])
    assert len(calls) == 2
    # A summary cut short is a retraining, not a crash.
    (fold_dir / "fold.json").unlink()
    (fold_dir / "train_summary.json").write_text('{"recipe_hash": ')
    crossval(recipe, tmp_path / "loso", held_out=["camC"])
    assert len(calls) == 3


@pytest.mark.slow
def test_probe_model_exports_and_runs_in_the_runtime(domains, tmp_path):
    """mnv2probe (frozen trunk + statistics + head) exports to a plain ONNX graph the runtime scores identically."""
    from spoofsdk.model import load_model
    from spoofsdk_train.export import export
    from spoofsdk_train.train import train

    recipe = load_recipe("probe", PROBE + [f"train.probe_cache={json.dumps(str(tmp_path / 'cache'))}",
                                           "data.manifests=" + json.dumps([str(d) for d in domains[:2]])])
    train(recipe, tmp_path / "run", progress=False)
    path = export(tmp_path / "run" / "best.pt", tmp_path / "probe.onnx")  # raises on a parity failure (1e-4)
    model = load_model(path)
    assert model.info.architecture == "mnv2probe" and model.info.output == "logit1" and model.info.input_size == 32
    assert model.info.crop_scale == 1.0 and model.info.color_order == "RGB"


def test_probe_distillation_hears_the_registered_teacher_and_records_its_weights(domains, tmp_path, monkeypatch):
    """Probe mode takes its teacher from the registry (crop scorer) and its best.pt says which weights taught it."""
    import hashlib

    from spoofsdk_train import teachers
    from spoofsdk_train.train import load_checkpoint, train

    weights = tmp_path / "teacher.pth"
    weights.write_bytes(b"probe teacher")
    seen = []

    def scorer():
        def score(images):
            seen.append(len(images))
            return np.full(len(images), 0.5)
        return score

    fake = teachers.Teacher(name="minifasnet_pair", card="a test teacher", checkpoint_files=lambda: [weights],
                            build_batch_module=lambda *a: None, build_crop_scorer=scorer)
    monkeypatch.setitem(teachers.TEACHERS, "minifasnet_pair", fake)
    recipe = load_recipe("probe", PROBE + [f"train.probe_cache={json.dumps(str(tmp_path / 'cache'))}", "train.distill_alpha=0.5",
                                           "data.manifests=" + json.dumps([str(d) for d in domains[:2]])])
    train(recipe, tmp_path / "run", progress=False)
    assert sum(seen) > 0  # every cached training view was scored by the teacher
    record = load_checkpoint(tmp_path / "run" / "best.pt")["teacher"]
    assert record == {"name": "minifasnet_pair", "alpha": 0.5, "checkpoints": {"teacher.pth": hashlib.sha256(b"probe teacher").hexdigest()}}


_ORPHAN_SCRIPT = """
import multiprocessing, os, sys, time
from spoofsdk_train.crossval import exit_with_parent

def fold(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)  # a fold that would train on for minutes

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=fold, args=(sys.argv[1],))
    if sys.argv[2] == "watched":
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(), 0.1))
        pool.submit(fold, sys.argv[1])
    else:
        worker.start()
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state  # a zombie has ended; only its exit status waits to be read


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.parametrize("mode", ["watched", "unwatched"])
def test_a_killed_crossval_takes_its_fold_workers_with_it(tmp_path, mode):
    script, pid_file = tmp_path / "pool.py", tmp_path / "worker.pid"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file), mode])
    try:
        deadline = time.time() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)  # no clean-up of any kind in the parent
        parent.wait()
        deadline = time.time() + 10
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        # the control: without the watcher the spawned worker trains on as an orphan
        assert _alive(worker) == (mode == "unwatched")
    finally:
        if pid_file.is_file() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def test_a_worker_whose_parent_died_before_its_watch_began_exits_at_once(tmp_path):
    code = "import time\nfrom spoofsdk_train.crossval import exit_with_parent\nexit_with_parent(1, 0.05)\ntime.sleep(30)\n"
    started = time.time()
    done = subprocess.run([sys.executable, "-c", code], timeout=60)  # pid 1 is not its parent: gone already
    assert done.returncode == 1 and time.time() - started < 30


def test_crossval_gives_its_fold_workers_the_parent_watch(domains, tmp_path, monkeypatch):
    import concurrent.futures

    from spoofsdk_train import crossval as crossval_mod

    seen = {}

    class Recorder(concurrent.futures.ThreadPoolExecutor):  # same interface, no processes
        def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=()):
            seen.update(initializer=initializer, initargs=initargs, context=mp_context.get_start_method())
            super().__init__(max_workers)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Recorder)
    monkeypatch.setattr(crossval_mod, "_run_fold_in_process", lambda *a: {"domain": a[1]["held_out"], "n_real": 1, "n_attack": 1,
                                                                            "auc": 0.5, "eer": 0.5, "apcer": 0.5, "bpcer": 0.5,
                                                                            "acer": 0.5, "bpcer_at_apcer_5": 0.9, "threshold": 0.5,
                                                                            "train_domains": [], "seconds": 0.0})
    recipe = load_recipe("probe", PROBE + ["data.manifests=" + json.dumps([str(d) for d in domains])])
    crossval(recipe, tmp_path / "loso", held_out=["camA", "camB"], jobs=2)
    assert seen == {"initializer": crossval_mod.exit_with_parent, "initargs": (os.getpid(),), "context": "spawn"}
