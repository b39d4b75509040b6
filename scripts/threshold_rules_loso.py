"""Threshold rules on the folds of leave-one-source-out runs: which rule, applied to the training domains'
validation crops, gives a held-out camera the error rates it was chosen for?

AUC does not depend on the threshold; what a user meets at the frozen threshold does. For each fold (its
``val_scores.npz``, written by ``spoofsdk-train crossval`` since session 12, or scored again from its
``best.pt`` and then written) every rule picks a threshold on the validation scores alone, and the held-out
domain's saved scores give APCER, BPCER and ACER at it. Rules:

- ``eer``: the EER point of the pooled validation crops (the recipes' rule, ``eval.threshold = "eer"``);
- ``eer_by_domain``: the point where APCER and BPCER, each the mean over the training domains (every camera
  weighs the same, however many crops it has), are equal;
- ``median_domain_eer``: the median of each training domain's own EER threshold;
- ``apcer:R``: the lowest threshold with pooled validation APCER <= R (``eval.threshold = "apcer:R"``).

    python scripts/threshold_rules_loso.py runs/loso_hybrid_mnv2_ssdgfull_s42 runs/loso_hybrid_mnv2_ssdgfull_s7
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from spoofsdk import metrics
from spoofsdk.clitools import Command, run_main
from spoofsdk_train.evaluate import choose_threshold

RULES = ("eer", "eer_by_domain", "median_domain_eer", "apcer:0.05", "apcer:0.01")


def val_scores(fold: Path) -> dict[str, np.ndarray]:
    """The fold's validation scores: read, or scored from its best.pt (as crossval does) and written."""
    path = fold / "val_scores.npz"
    if not path.is_file():
        import torch

        from spoofsdk_train.crossval import _scorer, write_val_scores
        from spoofsdk_train.data import load_crops, read_manifest
        from spoofsdk_train.train import model_from_checkpoint

        torch.set_num_threads(1)
        info = json.loads((fold / "fold.json").read_text())
        model, recipe, _ = model_from_checkpoint(fold / "best.pt")
        val = load_crops([read_manifest(p) for p in info["train_manifests"]], "val")
        scores = _scorer(model, recipe)(val)
        # The same numbers crossval uses: the threshold they give by the fold's own rule must be the fold's.
        thr, _ = choose_threshold(val.labels, scores, info["threshold_rule_requested"])
        if abs(thr - info["threshold"]) > 1e-4:
            raise click.ClickException(f"{fold}: validation scored again gives threshold {thr:.5f}, the fold chose {info['threshold']:.5f}")
        write_val_scores(fold, val, scores)
    z = np.load(path)
    return {"labels": z["labels"], "scores": z["scores"], "domains": z["domains"].astype(str)}


def eer_by_domain(labels: np.ndarray, scores: np.ndarray, domains: np.ndarray) -> float:
    """The threshold where the per-domain mean APCER equals the per-domain mean BPCER."""
    candidates = np.unique(scores)
    apcer, bpcer = [], []
    for d in np.unique(domains):
        m = domains == d
        att, live = np.sort(scores[m & (labels == 0)]), np.sort(scores[m & (labels == 1)])
        if len(att):  # attacks accepted: score >= threshold
            apcer.append(1.0 - np.searchsorted(att, candidates, side="left") / len(att))
        if len(live):  # live refused: score < threshold
            bpcer.append(np.searchsorted(live, candidates, side="left") / len(live))
    gap = np.abs(np.mean(apcer, axis=0) - np.mean(bpcer, axis=0))
    return float(candidates[int(np.argmin(gap))])


def threshold(rule: str, val: dict[str, np.ndarray]) -> float:
    y, s, d = val["labels"], val["scores"], val["domains"]
    if rule == "eer_by_domain":
        return eer_by_domain(y, s, d)
    if rule == "median_domain_eer":
        both = [k for k in np.unique(d) if len(set(y[d == k])) == 2]
        return float(np.median([metrics.eer(y[d == k], s[d == k])[1] for k in both]))
    return choose_threshold(y, s, rule)[0]


@click.command(cls=Command, help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rule", "rules", multiple=True, default=RULES, show_default=True, help="Rules to compare (repeat).")
def cli(runs: tuple[Path, ...], rules: tuple[str, ...]) -> None:
    # figures[rule][domain] -> list over runs of (apcer, bpcer)
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {r: {} for r in rules}
    for run in runs:
        for fold in sorted(p for p in (run / "folds").iterdir() if (p / "fold.json").is_file()):
            held_out = json.loads((fold / "fold.json").read_text())["held_out"]
            val = val_scores(fold)
            test = np.load(fold / "held_out_scores.npz")
            for rule in rules:
                e = metrics.error_rates(test["labels"], test["scores"], threshold(rule, val))
                figures[rule].setdefault(held_out, []).append((e.apcer, e.bpcer))
    domains = sorted(set.intersection(*(set(f) for f in figures.values())), key=str.lower)
    click.echo(f"{len(runs)} run(s), {len(domains)} held-out domains; each cell: APCER / BPCER at the rule's threshold, mean over the runs\n")
    click.echo("| held-out | " + " | ".join(rules) + " |")
    click.echo("|---|" + "---|" * len(rules))
    mean = {r: {d: np.mean(figures[r][d], axis=0) for d in domains} for r in rules}
    for d in domains:
        click.echo(f"| {d} | " + " | ".join(f"{mean[r][d][0]:.2f} / {mean[r][d][1]:.2f}" for r in rules) + " |")
    rows = {"mean APCER / BPCER": lambda r: f"{np.mean([mean[r][d][0] for d in domains]):.3f} / {np.mean([mean[r][d][1] for d in domains]):.3f}",
            "mean ACER": lambda r: f"{np.mean([mean[r][d].mean() for d in domains]):.3f}",
            "worst APCER / BPCER": lambda r: f"{max(mean[r][d][0] for d in domains):.2f} / {max(mean[r][d][1] for d in domains):.2f}",
            "domains with APCER > 0.20": lambda r: str(sum(mean[r][d][0] > 0.2 for d in domains))}
    for name, cell in rows.items():
        click.echo(f"| **{name}** | " + " | ".join(cell(r) for r in rules) + " |")


if __name__ == "__main__":
    run_main(cli)
