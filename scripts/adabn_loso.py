"""Test-time BatchNorm adaptation (AdaBN) on the folds of a leave-one-source-out run: does re-estimating
every BatchNorm's statistics on unlabeled crops of a new camera help a model that never saw it?

For each fold (its ``best.pt``, never trained on the held-out domain) the held-out domain's crops are split
in half at random (seed 0): the statistics are re-estimated on one half (all of it, its live crops only, or
its first 200), and the AUC on the other half is compared with the fold's model unchanged on that half.
Measured and not kept (docs/TRAINING.md, "Test-time BatchNorm adaptation").

    python scripts/adabn_loso.py runs/loso_hybrid_mnv2_ssdgfull_s42 --data cache/s1.0_128 -d lestari15 -d jtboing
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import click
import numpy as np
import torch

from spoofsdk import metrics
from spoofsdk.clitools import Command, run_main
from spoofsdk.crop import resize_square, to_tensor
from spoofsdk_train.crossval import _all_splits
from spoofsdk_train.data import CropSet, read_manifest
from spoofsdk_train.train import model_from_checkpoint, predict_scores


def adapted(model: torch.nn.Module, recipe, crops: CropSet, batch_size: int = 128) -> torch.nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are the plain average over ``crops``."""
    m = copy.deepcopy(model).eval()
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average, not an exponential one
        bn.train()
    r = recipe.model
    with torch.no_grad():
        for s in range(0, len(crops), batch_size):
            imgs = [resize_square(im, r.input_size) for im in crops.images[s : s + batch_size]]
            m(torch.from_numpy(to_tensor(imgs, r.color_order, r.mean, r.std)))
    return m.eval()


@click.command(cls=Command, help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("cache/s1.0_128"), show_default=True,
              help="Prepared data (a manifest.json per domain).")
@click.option("-d", "--domain", "domains", multiple=True, help="Held-out domains to try (default: every fold).")
@click.option("--threads", type=int, default=1, show_default=True)
def cli(run: Path, data: Path, domains: tuple[str, ...], threads: int) -> None:
    torch.set_num_threads(threads)
    rows = []
    for fold in sorted((run / "folds").iterdir()):
        held_out = json.loads((fold / "fold.json").read_text())["held_out"]
        if domains and held_out not in domains:
            continue
        model, recipe, _ = model_from_checkpoint(fold / "best.pt")
        crops = _all_splits(read_manifest(data / held_out))
        order = np.random.default_rng(0).permutation(len(crops))
        adapt_idx, test_idx = order[: len(order) // 2], order[len(order) // 2 :]
        test = crops.subset(test_idx)
        row = {"domain": held_out, "unchanged": metrics.roc_auc(test.labels, predict_scores(model, test, recipe))}
        for name, idx in (("all", adapt_idx), ("live", adapt_idx[crops.labels[adapt_idx] == 1]), ("200", adapt_idx[:200])):
            row[name] = metrics.roc_auc(test.labels, predict_scores(adapted(model, recipe, crops.subset(idx)), test, recipe))
        rows.append(row)
        click.echo(f"{held_out:20s} unchanged {row['unchanged']:.3f}  adapted on all {row['all']:.3f}  "
                   f"on live only {row['live']:.3f}  on 200 {row['200']:.3f}")
    if rows:
        click.echo("mean  " + "  ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in ("unchanged", "all", "live", "200")))


if __name__ == "__main__":
    raise SystemExit(run_main(cli, prog_name="python scripts/adabn_loso.py"))
