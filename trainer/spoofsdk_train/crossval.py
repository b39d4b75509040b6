"""Leave-one-source-out: the honest figure for "a camera the model never saw".

Every prepared manifest in the recipe's ``data.manifests`` is one domain (a webcam source, NUAA,
gc535). For each held-out domain the recipe is trained on the OTHER domains only (their train
splits; their val splits choose the threshold, by the recipe's ``eval.threshold`` rule), and the
held-out domain is scored on ALL its crops (every split: none of it was seen). Reported per
domain: AUC, EER, APCER/BPCER/ACER at the frozen threshold, BPCER@APCER 5 %; then the mean and
the worst over domains. Optionally a reference (e.g. the MiniFASNet pair's table) is shown
beside it.

Written under ``out``: ``folds/<domain>/`` (the fold's run, ``fold.json`` naming exactly which
domains it trained on, read from the recipe its ``best.pt`` was trained with, and the held-out
scores), ``crossval.json``, ``crossval.md`` and ``crossval.png``.

    spoofsdk-train crossval --recipe probe --out runs/loso
    spoofsdk-train crossval --recipe hybrid_mnv2 --out runs/loso_hm --jobs 2   # two folds at a time

Affordable on two CPU cores with a probe recipe (``train.mode = "probe"``): the frozen trunk's
statistics of every crop view are computed once and shared by every fold (:mod:`.probe`).
Recipes that train a network take minutes per fold, so a run can be interrupted and started
again: a fold whose ``fold.json`` carries the same training hash (same recipe, same training
domains) and threshold rule is read back, not retrained, and one whose training ran to its end
with that recipe but was never scored is scored from its ``best.pt``. ``jobs`` runs that many folds at once
in separate processes (each with the recipe's ``train.threads``).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from spoofsdk import metrics

from .data import CropSet, load_crops, read_manifest
from .evaluate import choose_threshold, score_report
from .recipe import Recipe, load_recipe

log = logging.getLogger("spoofsdk_train.crossval")

__all__ = ["crossval", "fold_plan", "read_scored_fold", "render_markdown", "plot_table"]

SPLITS = ("train", "val", "test")


def fold_plan(manifests: Sequence[dict], held_out: Sequence[str] | None = None, test_only: Sequence[dict] = ()) -> list[dict]:
    """One fold per held-out domain: ``{"held_out": name, "train": [manifest dirs of the other domains]}``.

    Domains with a single class (e.g. live faces only) cannot be scored on their own; they are
    never held out but always train. ``test_only`` domains are held out in turn but never train
    (a domain kept out of the recipe's data, e.g. one whose shortcut hurts every other domain).
    """
    manifests = list(manifests) + list(test_only)
    never_train = {m["dataset"] for m in test_only}
    names = [m["dataset"] for m in manifests]
    if len(set(names)) != len(names):
        raise ValueError(f"every manifest must be its own domain; repeated names in {names}")
    both = [m["dataset"] for m in manifests if all(sum(m["counts"][sp][c] for sp in SPLITS) > 0 for c in ("real", "attack"))]
    chosen = list(held_out) if held_out else both
    unknown = [h for h in chosen if h not in names]
    if unknown:
        raise ValueError(f"held-out domain(s) {unknown} are not among the recipe's manifests ({names})")
    single = [h for h in chosen if h not in both]
    if single:
        raise ValueError(f"held-out domain(s) {single} lack one class; they can only train")
    return [{"held_out": h, "train": [m["_dir"] for m in manifests if m["dataset"] != h and m["dataset"] not in never_train]} for h in chosen]


def _scorer(model, recipe: Recipe):
    """P(real) for crops: from the probe cache (same numbers, no repeated trunk passes) or the full forward pass."""
    if recipe.train.mode == "probe":
        from .probe import make_cache, probe_scores

        cache = make_cache(model, recipe)
        return lambda crops: probe_scores(model, cache.view(crops, 0)["stats"])
    import torch

    from .train import predict_scores

    # Scored where it was trained: a CUDA fold would otherwise score thousands of crops on one CPU thread.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    return lambda crops: predict_scores(model, crops, recipe, device)


def _all_splits(man: dict) -> CropSet:
    parts = [load_crops([man], sp) for sp in SPLITS]
    parts = [p for p in parts if len(p)]
    return CropSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                   sum((p.sets for p in parts), []), sum((p.files for p in parts), []))


def _row(held: str, labels: np.ndarray, scores: np.ndarray, thr: float, train_names: list[str], seconds: float) -> dict:
    figures = score_report(labels, scores, thr)
    return {"domain": held, "n_real": int(labels.sum()), "n_attack": int(len(labels) - labels.sum()),
            "threshold": thr, **{k: figures.get(k) for k in ("auc", "eer", "apcer", "bpcer", "acer", "bpcer_at_apcer_5")},
            "train_domains": train_names, "seconds": seconds}


def read_scored_fold(out: Path) -> tuple[dict, dict] | None:
    """``(fold.json, row)`` of a scored fold folder, None while either file is missing; the row is
    recomputed from the saved held-out scores at the fold's frozen threshold. A damaged file raises
    (ValueError, KeyError, zipfile.BadZipFile). Used to resume a run and by ``spoofsdk-train compare``."""
    info_path, scores_path = out / "fold.json", out / "held_out_scores.npz"
    if not (info_path.is_file() and scores_path.is_file()):
        return None
    info = json.loads(info_path.read_text())
    with np.load(scores_path) as saved:
        labels, scores = saved["labels"], saved["scores"]
    return info, _row(info["held_out"], labels, scores, float(info["threshold"]), info["train_domains"], info["seconds"])


def _finished_fold(out: Path, fold_recipe: Recipe, held: str) -> dict | None:
    """The row of a fold already run with the same training hash and threshold rule, else None."""
    try:
        fold = read_scored_fold(out)
    except ValueError:  # fold.json cut short (written by a version before the atomic write): train the fold again
        return None
    if fold is None:
        return None
    info, row = fold
    if (info.get("held_out") != held or info.get("recipe_hash") != fold_recipe.training_hash()
            or info.get("threshold_rule_requested") != str(fold_recipe.eval.threshold)):
        return None
    log.info("fold %-20s already run with this recipe (%s): read back, not retrained", held, info["recipe_hash"])
    return row


def _trained_not_scored(out: Path, fold_recipe: Recipe) -> bool:
    """True when the fold's training ran to its end with this very recipe (``train_summary.json``, written
    last by ``train``, and ``best.pt`` both carry its training hash) but no ``fold.json`` followed."""
    from .train import load_checkpoint

    summary, best = out / "train_summary.json", out / "best.pt"
    if not (summary.is_file() and best.is_file()):
        return False
    want = fold_recipe.training_hash()
    try:
        if json.loads(summary.read_text()).get("recipe_hash") != want:
            return False
        return Recipe.from_dict(load_checkpoint(best)["recipe"]).training_hash() == want
    # A file cut short (killed mid-write): train again rather than stop the whole run. torch.load
    # reports a truncated archive as RuntimeError, a truncated pickle as EOFError/UnpicklingError.
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        log.warning("fold %s: cannot read its finished training (%s); training again", out.name, e)
        return False


def _training_seconds(out: Path) -> float:
    """Seconds the fold's training took, from its history (a fold scored from an earlier run's best.pt)."""
    try:
        return float(sum(r.get("epoch_time_s", 0.0) for r in json.loads((out / "history.json").read_text())))
    except (OSError, ValueError, TypeError):
        return 0.0


def write_val_scores(out: Path, val: CropSet, scores: np.ndarray) -> None:
    """``out/val_scores.npz``: the validation crops' labels, P(real) and domain, the scores a fold's threshold
    came from. Kept beside the held-out ones, so a threshold rule can be studied on the folds
    (scripts/threshold_rules_loso.py) without scoring every training domain again; written whole or not at all."""
    np.savez_compressed(out / "val_scores.partial.npz", labels=val.labels, scores=scores, domains=np.asarray(val.sets))
    os.replace(out / "val_scores.partial.npz", out / "val_scores.npz")


def run_fold(recipe: Recipe, fold: dict, held: dict, out: Path) -> dict:
    """Train on the fold's domains, choose the threshold on their val crops, score the held-out domain."""
    from .train import model_from_checkpoint, train

    out.mkdir(parents=True, exist_ok=True)
    fold_recipe = recipe.with_overrides([f"data.manifests={json.dumps(fold['train'])}"])
    train_names = [read_manifest(p)["dataset"] for p in fold["train"]]
    assert held["dataset"] not in train_names  # the point of the whole exercise
    done = _finished_fold(out, fold_recipe, held["dataset"])
    if done is not None:
        return done
    for stale in ("fold.json", "held_out_scores.npz", "val_scores.npz"):  # another recipe's result must not outlive its retraining
        (out / stale).unlink(missing_ok=True)
    t0 = time.time()
    if _trained_not_scored(out, fold_recipe):
        log.info("fold %-20s trained with this recipe but not scored (stopped, or scoring failed): scoring its best.pt", held["dataset"])
        t0 -= _training_seconds(out)  # the fold's time is its training's too, not only this scoring
    else:
        train(fold_recipe, out, resume=False, progress=False)
    model, trained, _ = model_from_checkpoint(out / "best.pt")
    # fold.json names the plan's domains only once the recipe train saved beside the weights (the manifests
    # it loaded) is that plan: a fold that trained on other data than planned must not be reported as planned.
    if list(trained.data.manifests) != list(fold["train"]):
        trained_names = [read_manifest(p)["dataset"] for p in trained.data.manifests]
        raise RuntimeError(f"fold {held['dataset']}: best.pt was trained on {trained_names}, not on the planned {train_names}")
    score = _scorer(model, fold_recipe)
    val = load_crops([read_manifest(p) for p in fold["train"]], "val")
    val_scores = score(val)
    thr, how = choose_threshold(val.labels, val_scores, recipe.eval.threshold)
    write_val_scores(out, val, val_scores)
    test = _all_splits(held)
    scores = score(test)
    row = _row(held["dataset"], test.labels, scores, thr, train_names, round(time.time() - t0, 1))
    # Both files are written whole or not at all (temporary name, then os.replace): a fold stopped while
    # writing leaves no half file for a resumed run or `spoofsdk-train compare` to misread.
    np.savez_compressed(out / "held_out_scores.partial.npz", labels=test.labels, scores=scores)
    os.replace(out / "held_out_scores.partial.npz", out / "held_out_scores.npz")
    fold_info = {"held_out": held["dataset"], "train_domains": train_names, "train_manifests": fold["train"],
                 "recipe_hash": fold_recipe.training_hash(), "threshold": thr, "threshold_rule": how,
                 "threshold_rule_requested": str(fold_recipe.eval.threshold), "n_val": len(val), "n_held_out": len(test),
                 "seconds": row["seconds"]}
    (out / "fold.json.partial").write_text(json.dumps(fold_info, indent=1))
    os.replace(out / "fold.json.partial", out / "fold.json")  # written last: its presence marks the fold done
    log.info("fold %-20s AUC %.4f  EER %.4f  APCER %.4f  BPCER %.4f  BPCER@APCER5 %.4f  (thr %.4f, %.0f s)", held["dataset"],
             _nan(row["auc"]), _nan(row["eer"]), row["apcer"], row["bpcer"], _nan(row["bpcer_at_apcer_5"]), thr, row["seconds"])
    return row


def _nan(v) -> float:
    return float("nan") if v is None else v


def exit_with_parent(parent_pid: int, every: float = 2.0) -> None:
    """Make this worker process end when the process ``parent_pid`` is gone (killed, even with SIGKILL).

    The pool's workers are spawned children: killing ``crossval`` alone would leave each of them training
    its fold to the end, for minutes, on cores the next run needs. A daemon thread watches the parent
    (a dead parent's children are re-parented, so ``getppid`` changes) and ends the worker within
    ``every`` seconds. Compared with the pid the pool passed, so a parent that died before the thread
    started is caught at once. Valid for ``spawn`` and ``fork`` workers (crossval uses spawn), whose parent
    is the pool's process; under ``forkserver`` their parent would be the server.
    """
    import threading

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(every)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_fold_in_process(recipe_dict: dict, fold: dict, held: dict, out: str) -> dict:
    """One fold in a worker process (spawned: torch and its threads start fresh)."""
    from .train import setup_logging

    setup_logging(Path(out).parent.parent)
    return run_fold(load_recipe(recipe_dict), fold, held, Path(out))


def _summary(rows: list[dict], keys=("auc", "eer", "apcer", "bpcer", "acer", "bpcer_at_apcer_5")) -> dict:
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None and not np.isnan(r[k])]
        if vals:
            worst = min(vals) if k == "auc" else max(vals)
            out[k] = {"mean": float(np.mean(vals)), "worst": float(worst)}
    return out


def crossval(recipe: Recipe | dict | str, out_dir: str | Path, held_out: Sequence[str] | None = None,
             reference: str | Path | None = None, test_only: Sequence[str | Path] = (), jobs: int = 1) -> dict:
    """Leave-one-source-out over the recipe's manifests (plus ``test_only`` ones, scored but never trained on);
    writes crossval.{json,md,png} under ``out_dir``. ``jobs`` > 1 runs folds in that many processes."""
    from .train import setup_logging

    recipe = load_recipe(recipe)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out)
    manifests = [read_manifest(p) for p in recipe.data.manifests]
    extra = [read_manifest(p) for p in test_only]
    plan = fold_plan(manifests, held_out, extra)
    (out / "crossval.json").unlink(missing_ok=True)  # rewritten at the end; until then the folder holds no finished table
    by_name = {m["dataset"]: m for m in manifests + extra}
    t0 = time.time()
    if jobs <= 1 or len(plan) <= 1:
        rows = [run_fold(recipe, fold, by_name[fold["held_out"]], out / "folds" / fold["held_out"]) for fold in plan]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(plan)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_run_fold_in_process, recipe.to_dict(), fold, by_name[fold["held_out"]],
                                   str(out / "folds" / fold["held_out"])) for fold in plan]
            rows = [f.result() for f in futures]  # plan order, whatever order they finish in
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe.name,
        "recipe_hash": recipe.training_hash(),
        "architecture": recipe.model.architecture,
        "threshold_rule": str(recipe.eval.threshold),
        "test_only": [m["dataset"] for m in extra],
        "domains": rows,
        "summary": _summary(rows),
        "seconds": round(time.time() - t0, 1),
        "fold_seconds": round(sum(r["seconds"] for r in rows), 1),
        "jobs": jobs,
    }
    if reference:
        result["reference"] = _load_reference(Path(reference), [r["domain"] for r in rows])
    (out / "crossval.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "crossval.md").write_text(render_markdown(result))
    plot_table(result, out / "crossval.png")
    log.info("leave-one-source-out over %d domains in %.0f s: AUC mean %.4f worst %.4f -> %s", len(rows), result["seconds"],
             result["summary"]["auc"]["mean"], result["summary"]["auc"]["worst"], out / "crossval.md")
    return result


def _load_reference(path: Path, domains: list[str]) -> dict:
    """``{"name": ..., "auc": {domain: auc}}`` from a reference table JSON (minifasnet_reference's, or a crossval.json)."""
    data = json.loads(path.read_text())
    if "domains" in data and isinstance(data["domains"], list):  # another crossval.json
        return {"name": data.get("recipe", path.stem), "auc": {r["domain"]: r["auc"] for r in data["domains"]}}
    # minifasnet_reference: {"rows": [{"domain": "webcam/x", "pair": {"auc": ..}}, ...]} or {"domain": {"auc": ..}}
    table: dict[str, float] = {}
    rows = data.get("rows", data.get("domains", data))
    items = rows.items() if isinstance(rows, dict) else ((r.get("domain"), r) for r in rows)
    for name, entry in items:
        if not isinstance(entry, dict) or name is None:
            continue
        short = str(name).split("/")[-1]
        if short == "test" and str(name).startswith("gc535"):
            short = "gc535"
        auc = entry.get("pair", entry).get("auc") if isinstance(entry.get("pair", entry), dict) else None
        if short in domains and auc is not None and short not in table:
            table[short] = float(auc)
    name = data.get("name") or ("MiniFASNet pair" if "minifasnet" in str(data.get("models", "")).lower() else path.stem)
    return {"name": name, "auc": table}


def _fmt(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def render_markdown(result: dict) -> str:
    ref = result.get("reference")
    head = "| held-out domain | real / attack | AUC | EER | APCER | BPCER | BPCER@APCER5 |" + (f" {ref['name']} AUC |" if ref else "")
    lines = [f"# Leave-one-source-out: {result['recipe']} ({result['architecture']})", "",
             f"Each row: trained on every other domain, threshold by `{result['threshold_rule']}` on their validation crops, "
             f"then frozen; the held-out domain scored on all its crops. {len(result['domains'])} folds, "
             f"{result.get('fold_seconds', result['seconds']) / 60:.1f} min of fold time ({result['seconds'] / 60:.1f} min wall in this run, "
             f"less when folds ran in parallel or were read back from an earlier run)."
             + (f" Scored but never trained on: {', '.join(result['test_only'])}." if result.get("test_only") else ""), "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["domains"]:
        line = (f"| {r['domain']} | {r['n_real']} / {r['n_attack']} | {_fmt(r['auc'])} | {_fmt(r['eer'], True)} | {_fmt(r['apcer'], True)} | "
                f"{_fmt(r['bpcer'], True)} | {_fmt(r['bpcer_at_apcer_5'], True)} |")
        if ref:
            line += f" {_fmt(ref['auc'].get(r['domain']))} |"
        lines.append(line)
    s = result["summary"]
    for which in ("mean", "worst"):
        line = (f"| **{which}** | | **{_fmt(s['auc'][which])}** | {_fmt(s['eer'][which], True)} | {_fmt(s['apcer'][which], True)} | "
                f"{_fmt(s['bpcer'][which], True)} | {_fmt(s.get('bpcer_at_apcer_5', {}).get(which), True)} |")
        if ref:
            vals = [ref["auc"][r["domain"]] for r in result["domains"] if r["domain"] in ref["auc"]]
            line += f" {_fmt((np.mean(vals) if which == 'mean' else min(vals)) if vals else None)} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot_table(result: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = result["domains"]
    names = [r["domain"] for r in rows]
    x = np.arange(len(rows))
    ref = result.get("reference")
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows) + 2), 4))
    width = 0.4 if ref else 0.7
    ax.bar(x - (width / 2 if ref else 0), [r["auc"] or 0 for r in rows], width, label=result["recipe"])
    if ref:
        ax.bar(x + width / 2, [ref["auc"].get(n, 0) for n in names], width, label=ref["name"], color="0.7")
    ax.axhline(0.5, color="r", lw=0.8, ls="--", label="chance")
    ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("AUC on the held-out domain")
    ax.set_title(f"Leave-one-source-out: mean {result['summary']['auc']['mean']:.3f}, worst {result['summary']['auc']['worst']:.3f}")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
