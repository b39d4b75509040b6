"""``spoofsdk-train``: prepare | train | evaluate | export | quantize | models.

    spoofsdk-train prepare /work/shared/data/nuaa --out cache/s1.5_128 --scale 1.5 --size 128
    spoofsdk-train train --recipe edgenet --out runs/edge
    torchrun --nproc_per_node 2 -m spoofsdk_train.cli train --recipe edgenet --out runs/edge
    spoofsdk-train evaluate runs/edge/best.pt --test cache/s1.5_128/nuaa cache/s1.5_128/gc535
    spoofsdk-train export runs/edge/best.pt --out runs/edge/edge.onnx --report runs/edge/report.json
    spoofsdk-train quantize runs/edge/edge.onnx --precision int8 --calib cache/s1.5_128
    spoofsdk-train models
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("spoofsdk_train.cli")


def _setup_logging(out_dir: Path | None = None) -> None:
    from .train import setup_logging

    setup_logging(out_dir)


def cmd_prepare(a) -> int:
    from .data import prepare

    _setup_logging()
    fractions = tuple(float(v) for v in a.split.split(","))
    if len(fractions) != 3:
        raise SystemExit("--split must be three fractions train,val,test, e.g. 0.7,0.15,0.15")
    for root in a.dataset:
        prepare(root, a.out, name=a.name if len(a.dataset) == 1 else None, crop_scale=a.scale, size=a.size, faces=a.faces,
                detector=a.detector, detector_model=a.detector_model, fractions=fractions, val_fraction=a.val_fraction,
                seed=a.seed, limit=a.limit, progress=not a.quiet)
    return 0


def cmd_train(a) -> int:
    from .recipe import load_recipe
    from .train import train

    overrides = list(a.set or [])
    recipe = load_recipe(a.recipe, overrides)
    if a.data:
        recipe["data"]["manifests"] = list(a.data)
    if a.epochs is not None:
        recipe["train"]["epochs"] = a.epochs
    summary = train(recipe, a.out, resume=not a.fresh, progress=None if not a.quiet else False)
    if a.then_export:
        from .evaluate import evaluate
        from .export import export

        if summary.get("best") and _is_rank0():
            ckpt = Path(a.out) / "best.pt"
            report = evaluate(ckpt, out_dir=Path(a.out), test=a.test)
            export(ckpt, a.then_export, report=report)
    return 0


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def cmd_evaluate(a) -> int:
    from .evaluate import evaluate

    _setup_logging(Path(a.out) if a.out else Path(a.checkpoint).parent)
    report = evaluate(a.checkpoint, out_dir=Path(a.out) if a.out else None, test=a.test, val=a.val, threshold=a.threshold)
    print(json.dumps({k: {m: v.get(m) for m in ("auc", "eer", "acer", "apcer", "bpcer", "bpcer_at_apcer_5")} for k, v in report["test"].items()}, indent=1))
    return 0


def cmd_export(a) -> int:
    from .export import export

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    _setup_logging(Path(a.out).parent)
    report = json.loads(Path(a.report).read_text()) if a.report else None
    export(a.checkpoint, a.out, report=report, name=a.name, opset=a.opset)
    return 0


def cmd_models(a) -> int:
    from .models import available, model_stats

    rows = []
    for name, spec in sorted(available().items()):
        st = model_stats(name, a.size or None)
        rows.append(st)
        print(f"{name:10s} input {st['input_size']:4d}  params {st['params']:>10,}  MACs {st['macs'] / 1e6:9.1f} M  output {spec.output}  {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spoofsdk-train", description="Train, evaluate and export spoofsdk face anti-spoofing models.")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("prepare", help="turn datasets into face crops + a split manifest")
    q.add_argument("dataset", nargs="+", help="dataset folder(s), e.g. /work/shared/data/nuaa")
    q.add_argument("--out", required=True, help="output folder; crops go to OUT/<dataset name>/")
    q.add_argument("--name", help="dataset name (default: folder name)")
    q.add_argument("--scale", type=float, default=1.5, help="crop scale for full frames (side / longer side of the face box)")
    q.add_argument("--size", type=int, default=128, help="crop side in pixels (the model input size)")
    q.add_argument("--faces", choices=("auto", "detect", "crop"), default="auto", help="detect faces in full frames, or take images as face crops")
    q.add_argument("--detector", choices=("yunet", "haar"), default="yunet")
    q.add_argument("--detector-model", help="YuNet ONNX file (default: shared/models/yunet/ or $SPOOFSDK_YUNET_MODEL)")
    q.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions where the dataset has no splits")
    q.add_argument("--val-fraction", type=float, default=0.15, help="val carved from train where the dataset has train/test only")
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--limit", type=int, help="only this many images, evenly spaced (tests)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_prepare)

    t = sub.add_parser("train", help="train a recipe (torchrun for several processes)")
    t.add_argument("--recipe", required=True, help="recipe name in trainer/spoofsdk_train/recipes/ or a TOML file")
    t.add_argument("--out", required=True, help="run folder: checkpoints, train.log, history.json")
    t.add_argument("--data", nargs="+", help="prepared dataset folders/manifests (override the recipe's)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a recipe field (TOML value)")
    t.add_argument("--fresh", action="store_true", help="ignore last.pt in the run folder (no resume)")
    t.add_argument("--then-export", metavar="ONNX", help="after training: evaluate best.pt and export it here")
    t.add_argument("--test", nargs="+", help="test manifests for --then-export (default: the recipe's)")
    t.add_argument("--quiet", action="store_true", help="no progress bars (log lines instead)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="choose the threshold on val, report test figures and plots")
    e.add_argument("checkpoint", help="best.pt")
    e.add_argument("--test", nargs="+", help="prepared datasets whose test split to report (default: the recipe's)")
    e.add_argument("--val", nargs="+", help="prepared datasets whose val split sets the threshold (default: the recipe's)")
    e.add_argument("--threshold", help="'eer', 'apcer:0.05' or a number (default: the recipe's)")
    e.add_argument("--out", help="folder for report.json and plots (default: beside the checkpoint)")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="ONNX + spoofsdk metadata + parity check")
    x.add_argument("checkpoint", help="best.pt")
    x.add_argument("--out", required=True, help="ONNX file to write")
    x.add_argument("--report", help="report.json from evaluate (threshold and metrics); default: evaluate now")
    x.add_argument("--name", help="model name in the metadata (default: the recipe's)")
    x.add_argument("--opset", type=int, help="ONNX opset (>= 13; default: the recipe's)")
    x.set_defaults(func=cmd_export)

    from . import quantize  # torch-free: `spoofsdk-train quantize` works where torch is not installed

    qz = sub.add_parser("quantize", help="FP16 / INT8 versions of an ONNX model, with a report (no torch)")
    quantize.add_arguments(qz)
    qz.set_defaults(func=quantize.run_from_args)

    m = sub.add_parser("models", help="list architectures with params and MACs")
    m.add_argument("--size", type=int, default=0, help="input size (default: each model's own)")
    m.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
