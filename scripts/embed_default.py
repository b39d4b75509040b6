"""Embed trained models as spoofsdk's defaults.

For each given ONNX file (FP32 and its quantized versions): score the test split of every
prepared data set with the *runtime* (spoofsdk.model.SpoofModel on the manifest's crops),
write those per-set figures into the file's own metadata (so an INT8 file carries INT8
figures, not its FP32 parent's), copy it to spoofsdk/assets/<name>-<precision>.onnx and print
the SHA-256 lines for spoofsdk.model.EMBEDDED_MODELS.

    python scripts/embed_default.py runs/edge/edge.onnx runs/edge/edge.int8.onnx --data cache/s1.5_128
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spoofsdk import metrics  # noqa: E402
from spoofsdk.clitools import Command, run_main  # noqa: E402
from spoofsdk.crop import resize_square  # noqa: E402
from spoofsdk.folders import read_image  # noqa: E402
from spoofsdk.model import LOSO_FIGURES, SpoofModel, read_metadata_props, write_metadata_props  # noqa: E402

FIELDS = ("n", "auc", "eer", "apcer", "bpcer", "acer", "accuracy", "bpcer_at_apcer_5", "bpcer_at_apcer_1")


def test_split(manifest: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    data = json.loads(manifest.read_text())
    items = [it for it in data["items"] if it["split"] == "test"]
    crops = [resize_square(read_image(manifest.parent / it["file"]), size) for it in items]
    return np.stack(crops), np.array([it["label"] for it in items])


@click.command(cls=Command, help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=REPO / "cache" / "s1.5_128", show_default=True,
              help="Prepared data sets (manifest.json per set).")
@click.option("--assets", type=click.Path(file_okay=False, path_type=Path), default=REPO / "spoofsdk" / "assets", show_default=True)
@click.option("--crossval", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="crossval.json of the model's recipe: its leave-one-source-out table goes into the metadata as metrics['loso']. "
                   "Repeat for replicates of the same recipe (other seeds): the first is the table, the others go in as "
                   "metrics['loso']['replicates'] (per-domain AUC and summary).")
def cli(models, data, assets, crossval) -> None:
    args = SimpleNamespace(models=models, data=data, assets=assets)
    loso = None
    if crossval:
        tables = [json.loads(c.read_text()) for c in crossval]
        table = tables[0]
        loso = {"recipe": table["recipe"], "recipe_hash": table["recipe_hash"], "summary": table["summary"],
                "domains": {r["domain"]: {k: r[k] for k in LOSO_FIGURES} for r in table["domains"]},
                "test_only": list(table.get("test_only", [])),
                "how": "leave-one-source-out: trained without the domain (FP32), threshold on the other domains' val, all its crops scored"}
        if len(tables) > 1:
            if any(t["recipe"] != table["recipe"] or {r["domain"] for r in t["domains"]} != set(loso["domains"]) for t in tables[1:]):
                raise click.ClickException("--crossval replicates must be the same recipe over the same domains")
            # Every figure per domain (not only AUC), so that `spoofsdk-train compare` can average any of them
            # over the seeds of the embedded model's table.
            loso["replicates"] = [{"recipe_hash": t["recipe_hash"], "summary": t["summary"],
                                   "auc": {r["domain"]: r["auc"] for r in t["domains"]},
                                   "domains": {r["domain"]: {k: r[k] for k in LOSO_FIGURES} for r in t["domains"]}}
                                  for t in tables[1:]]
    manifests = sorted(args.data.glob("*/manifest.json"))
    if not manifests:
        raise click.ClickException(f"no prepared data sets under {args.data} (run spoofsdk-train prepare first)")
    for path in args.models:
        model = SpoofModel(path)
        info = model.info
        figures, pooled = {}, ([], [])
        for manifest in manifests:
            crops, labels = test_split(manifest, info.input_size)
            scores = np.concatenate([model.score_crops(crops[i : i + 64]) for i in range(0, len(crops), 64)])
            try:
                s = metrics.summary(labels, scores, info.threshold)
            except ValueError as e:  # e.g. a crop the model could not score (NaN): say which model and which data
                raise click.ClickException(f"{path.name} on the {manifest.parent.name} test split: {e}") from e
            # A one-class test split (live faces only) has error rates but no AUC/EER.
            figures[manifest.parent.name] = {k: float(s[k]) for k in FIELDS if k in s and np.isfinite(s[k])}
            print(f"{path.name:24s} {manifest.parent.name:6s} " + "  ".join(f"{k} {s[k]:.4f}" for k in FIELDS[1:] if k in s))
            pooled[0].append(labels)
            pooled[1].append(scores)
        if len(manifests) > 1:  # every test split pooled (the figure a random split of everything reports)
            s = metrics.summary(np.concatenate(pooled[0]), np.concatenate(pooled[1]), info.threshold)
            figures["all_test_sets"] = {k: float(s[k]) for k in FIELDS if k in s and np.isfinite(s[k])}
            print(f"{path.name:24s} {'pooled':6s} " + "  ".join(f"{k} {s[k]:.4f}" for k in FIELDS[1:] if k in s))
        props = read_metadata_props(path.read_bytes())
        previous = json.loads(props.get("metrics", "{}"))
        note = f"test splits scored by the spoofsdk runtime with this {info.precision} file at its threshold"
        new = {**previous, **figures, "how": note}
        if loso is not None:
            new["loso"] = loso
        data = write_metadata_props(path.read_bytes(), {"metrics": json.dumps(new)})
        out = args.assets / f"{info.name}-{info.precision}.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        print(f'        "{info.precision}": ("{out.name}", "{hashlib.sha256(data).hexdigest()}"),  # {len(data)/1e6:.2f} MB')


def main(argv=None) -> int:
    return run_main(cli, argv, prog_name="scripts/embed_default.py")


if __name__ == "__main__":
    sys.exit(main())
