"""``spoofsdk-train``: prepare | resplit | train | crossval | compare | evaluate | export | quantize | models | cues.

    spoofsdk-train prepare /work/shared/data/nuaa --out cache/s1.5_128 --scale 1.5 --size 128
    spoofsdk-train resplit cache/s1.0_224/* --out cache/random/s1.0_224
    spoofsdk-train train --recipe edgenet --out runs/edge
    torchrun --nproc_per_node 2 -m spoofsdk_train.cli train --recipe edgenet --out runs/edge
    spoofsdk-train crossval --recipe probe --out runs/loso
    spoofsdk-train compare probe=runs/loso hybrid=runs/loso_hm+runs/loso_hm_s7
    spoofsdk-train evaluate runs/edge/best.pt --test cache/s1.5_128/nuaa --test cache/s1.5_128/gc535
    spoofsdk-train export runs/edge/best.pt --out runs/edge/edge.onnx --report runs/edge/report.json
    spoofsdk-train quantize runs/edge/edge.onnx --precision int8 --calib cache/s1.5_128
    spoofsdk-train models

Ordinary mistakes (a missing checkpoint or prepared data, a recipe typo, resuming a run folder
with a changed recipe) end with one line on stderr and a non-zero status
(:mod:`spoofsdk.clitools`). Options that take several values are repeated: ``--test A --test B``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from spoofsdk.clitools import Group, run_main, version_option

_EXISTING = click.Path(exists=True, path_type=Path)


def _setup_logging(out_dir: Path | None = None) -> None:
    from .train import setup_logging

    setup_logging(out_dir)


def _fractions(ctx, param, value: str) -> tuple[float, float, float]:
    try:
        fractions = tuple(float(v) for v in value.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise click.BadParameter("three fractions train,val,test, e.g. 0.7,0.15,0.15")
    return fractions  # type: ignore[return-value]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("spoofsdk-train")
def cli() -> None:
    """Train, evaluate, export and quantize spoofsdk face anti-spoofing models."""


@cli.command()
@click.argument("dataset", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder; crops go to OUT/<dataset name>/.")
@click.option("--name", help="Dataset name (default: folder name; one dataset only).")
@click.option("--scale", type=float, default=1.5, show_default=True, help="Crop scale for full frames (side / longer side of the face box).")
@click.option("--size", type=click.IntRange(min=8), default=128, show_default=True, help="Crop side in pixels (the model input size).")
@click.option("--faces", type=click.Choice(("auto", "detect", "crop")), default="auto", show_default=True, help="Detect faces in full frames, or take images as face crops.")
@click.option("--detector", type=click.Choice(("yunet", "haar")), default="yunet", show_default=True)
@click.option("--detector-model", type=click.Path(dir_okay=False, path_type=Path), help="YuNet ONNX file (default: $SPOOFSDK_YUNET_MODEL, else the runtime's bundled one).")
@click.option("--split", "fractions", default="0.7,0.15,0.15", show_default=True, callback=_fractions, help="train,val,test fractions where the dataset has no splits.")
@click.option("--val-fraction", type=click.FloatRange(0, 1), default=0.15, show_default=True, help="Val carved from train where the dataset has train/test only.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Only this many images, evenly spaced (tests).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(dataset, out, name, scale, size, faces, detector, detector_model, fractions, val_fraction, seed, limit, quiet) -> None:
    """Turn datasets into face crops + a split manifest."""
    from .data import prepare as run_prepare

    if name and len(dataset) > 1:
        raise click.UsageError("--name applies to one dataset")
    _setup_logging()
    for root in dataset:
        run_prepare(root, out, name=name, crop_scale=scale, size=size, faces=faces, detector=detector, detector_model=detector_model,
                    fractions=fractions, val_fraction=val_fraction, seed=seed, limit=limit, progress=not quiet)


@cli.command()
@click.argument("prepared", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder; manifests go to OUT/<dataset name>/.")
@click.option("--split", "fractions", default="0.7,0.15,0.15", show_default=True, callback=_fractions, help="train,val,test fractions.")
@click.option("--seed", type=int, default=42, show_default=True)
def resplit(prepared, out, fractions, seed) -> None:
    """Random (class-stratified) train/val/test split of prepared datasets, ignoring subjects.

    For comparison with figures reported on random splits only: near-duplicate frames and the
    same people end up on both sides, which flatters any model. The crops are not copied.
    """
    from .data import resplit_random

    _setup_logging()
    for src in prepared:
        resplit_random(src, out, fractions=fractions, seed=seed)


@cli.command()
@click.option("--recipe", required=True, help="Recipe name in trainer/spoofsdk_train/recipes/ or a TOML file.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder: checkpoints, train.log, history.json.")
@click.option("--data", multiple=True, help="Prepared dataset folder (repeat for several); replaces the recipe's data.manifests.")
@click.option("--epochs", type=click.IntRange(min=1), help="Same as --set train.epochs=N.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe field (TOML value); repeatable.")
@click.option("--fresh", is_flag=True, help="Start over, ignoring (and overwriting) last.pt in the run folder.")
@click.option("--extend", is_flag=True, help="Resume a finished or running run with more epochs (only train.epochs may differ).")
@click.option("--then-export", type=click.Path(dir_okay=False, path_type=Path), metavar="ONNX", help="After training: evaluate best.pt and export it here.")
@click.option("--test", multiple=True, help="Test manifest for --then-export (repeatable; default: the recipe's).")
@click.option("--quiet", is_flag=True, help="No progress bars (log lines instead).")
def train(recipe, out, data, epochs, overrides, fresh, extend, then_export, test, quiet) -> None:
    """Train a recipe (torchrun for several processes)."""
    from .recipe import load_recipe
    from .train import train as run_training

    extra = list(overrides)
    if data:
        extra.append("data.manifests=" + json.dumps([str(d) for d in data]))
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if fresh and extend:
        raise click.UsageError("--fresh and --extend exclude each other")
    loaded = load_recipe(recipe, extra)
    summary = run_training(loaded, out, resume=not fresh, extend=extend, progress=None if not quiet else False)
    if then_export and summary.get("best") and os.environ.get("RANK", "0") == "0":
        from .evaluate import evaluate
        from .export import export

        from .train import setup_logging

        setup_logging(Path(out))  # the run's own log handler ended with the run; evaluation and export go to train.log too
        ckpt = Path(out) / "best.pt"
        report = evaluate(ckpt, out_dir=Path(out), test=list(test) or None)
        export(ckpt, then_export, report=report)


@cli.command()
@click.option("--recipe", required=True, help="Recipe name in trainer/spoofsdk_train/recipes/ or a TOML file.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the folds, crossval.{json,md,png}.")
@click.option("--data", multiple=True, help="Prepared dataset folder, one per domain (repeat); replaces the recipe's data.manifests.")
@click.option("--hold-out", "held_out", multiple=True, help="Only these held-out domains (repeatable; default: every domain with both classes).")
@click.option("--test-only", multiple=True, help="Prepared domain to hold out and score but never train on (repeatable).")
@click.option("--reference", type=_EXISTING, help="A reference table (minifasnet_reference JSON or another crossval.json) shown beside.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe field (TOML value); repeatable.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1), help="Folds run at once, each in its own process.")
def crossval(recipe, out, data, held_out, test_only, reference, overrides, jobs) -> None:
    """Leave-one-source-out: train without each domain in turn, score it, tabulate."""
    from .crossval import crossval as run_crossval
    from .recipe import load_recipe

    extra = list(overrides)
    if data:
        extra.append("data.manifests=" + json.dumps([str(d) for d in data]))
    result = run_crossval(load_recipe(recipe, extra), out, held_out=list(held_out) or None, reference=reference, test_only=list(test_only), jobs=jobs)
    click.echo((Path(out) / "crossval.md").read_text(), nl=False)
    s = result["summary"]["auc"]
    click.echo(f"AUC mean {s['mean']:.4f} worst {s['worst']:.4f}", err=True)


@cli.command()
@click.argument("variants", nargs=-1, required=True, metavar="NAME=RUN[+RUN...] ...")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the table (.md) or the figures (.json) here.")
def compare(variants, out) -> None:
    """Leave-one-source-out runs side by side: each variant's seeds averaged, summaries over the folds all runs scored."""
    from .compare import compare as run_compare
    from .compare import parse_variants, render_compare

    result = run_compare(parse_variants(variants))
    table = render_compare(result)
    if out:
        Path(out).write_text(json.dumps(result, indent=1) if Path(out).suffix.lower() == ".json" else table)
    click.echo(table, nl=False)


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--test", multiple=True, help="Prepared dataset whose test split to report (repeatable; default: the recipe's).")
@click.option("--val", multiple=True, help="Prepared dataset whose val split sets the threshold (repeatable; default: the recipe's).")
@click.option("--threshold", help="'eer', 'apcer:0.05' or a number (default: the recipe's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for report.json and plots (default: beside the checkpoint).")
def evaluate(checkpoint, test, val, threshold, out) -> None:
    """Choose the threshold on val, report test figures and plots."""
    from .evaluate import evaluate as run_evaluation

    _setup_logging(out or checkpoint.parent)
    report = run_evaluation(checkpoint, out_dir=out, test=list(test) or None, val=list(val) or None, threshold=threshold)
    keys = ("auc", "eer", "acer", "apcer", "bpcer", "bpcer_at_apcer_5")
    click.echo(json.dumps({k: {m: v.get(m) for m in keys} for k, v in report["test"].items()}, indent=1))


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--report", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="report.json from evaluate (threshold and metrics); default: evaluate now.")
@click.option("--name", help="Model name in the metadata (default: the recipe's).")
@click.option("--opset", type=click.IntRange(min=13), help="ONNX opset (default: the recipe's).")
def export(checkpoint, out, report, name, opset) -> None:
    """ONNX + spoofsdk metadata + parity check."""
    from .export import export as run_export

    out.parent.mkdir(parents=True, exist_ok=True)
    _setup_logging(out.parent)
    run_export(checkpoint, out, report=json.loads(report.read_text()) if report else None, name=name, opset=opset)


@cli.command()
@click.argument("prepared", nargs=-1, required=True, type=_EXISTING)
@click.option("--size", type=click.IntRange(min=8), default=128, show_default=True, help="Crops resized to this side first (the model's input).")
@click.option("--split", "splits", multiple=True, type=click.Choice(("train", "val", "test")), help="Only these splits (repeatable; default: all).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the rows as JSON.")
def cues(prepared, size, splits, json_out) -> None:
    """Shortcut check: per prepared domain, the AUC of plain image statistics as live-vs-attack scores."""
    from .cues import cue_table, format_cues

    rows = cue_table(prepared, size=size, splits=splits or None)
    click.echo(format_cues(rows))
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


@cli.command()
@click.option("--size", type=click.IntRange(min=0), default=0, help="Input size (default: each model's own).")
def models(size) -> None:
    """List architectures with params and MACs."""
    from .models import available, model_stats

    for name, spec in sorted(available().items()):
        st = model_stats(name, size or None)
        click.echo(f"{name:10s} input {st['input_size']:4d}  params {st['params']:>10,}  MACs {st['macs'] / 1e6:9.1f} M  output {spec.output}  {spec.description}")


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(("fp16", "int8")), help="Output precision (required unless --sweep).")
@click.option("--calib", type=_EXISTING, help="Calibration data: folder of frames or face crops, or the trainer's prepared data (cache/); required for int8.")
@click.option("--eval", "eval_data", type=_EXISTING, help="Labelled data for the report (default: held-out part of --calib).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Output file (default: MODEL.<precision>.onnx beside the input); --sweep: JSON rows.")
@click.option("--calib-size", type=click.IntRange(min=1), default=256, show_default=True, help="Calibration crops.")
@click.option("--eval-size", type=click.IntRange(min=0), default=400, show_default=True, help="Crops for the report's accuracy comparison.")
@click.option("--kind", type=click.Choice(("auto", "frames", "crops")), default="auto", show_default=True, help="What folder images are (auto: <=256 px = crop).")
@click.option("--detector", type=click.Choice(("haar", "yunet")), help="Detector for frames (default: the runtime's, YuNet).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Threads for the latency comparison.")
@click.option("--rounds", type=click.IntRange(min=0), default=30, show_default=True, help="Interleaved latency rounds.")
@click.option("--no-report", is_flag=True, help="Skip the accuracy/latency report.")
@click.option("--activation-type", type=click.Choice(("QUInt8", "QInt8")), default=None, help="INT8 activations [QUInt8].")
@click.option("--weight-type", type=click.Choice(("QInt8", "QUInt8")), default=None, help="INT8 weights [QInt8].")
@click.option("--calibrate-method", type=click.Choice(("MinMax", "Entropy", "Percentile")), default=None, help="INT8 calibration [MinMax].")
@click.option("--reduce-range/--no-reduce-range", default=None, help="7-bit INT8 weights [on].")
@click.option("--op-types", type=click.Choice(("all", "matmul")), default=None,
              help="INT8 operators: all, or Conv/Gemm/MatMul only with the math between them in FP32 [all].")
@click.option("--fp32-nodes", multiple=True, metavar="PREFIX",
              help="Keep in FP32 the ONNX nodes whose names start with PREFIX, e.g. '/low/low.1/' (repeatable).")
@click.option("--sweep", is_flag=True, help="Measure every INT8 combination side by side instead of writing one model.")
def quantize(model, precision, calib, eval_data, out, calib_size, eval_size, kind, detector, threads, rounds, no_report, sweep, **int8) -> None:
    """FP16 / INT8 versions of an ONNX model, with a report against FP32 (no torch needed).

    INT8 defaults were chosen by measurement (docs/QUANTIZATION.md).
    """
    # torch-free: `spoofsdk-train quantize` works where torch is not installed
    from .quantize import format_sweep, quantize as run_quantize, sweep_int8, to_json

    int8 = {k: v for k, v in int8.items() if v is not None and v != ()}
    if sweep:
        if calib is None:
            raise click.UsageError("--sweep needs --calib")
        if int8:
            # the sweep measures its own grid of settings; silently dropping these would mislead
            raise click.UsageError(f"--sweep measures a fixed grid of INT8 settings; drop {', '.join('--' + k.replace('_', '-') for k in int8)}")
        rows = sweep_int8(model, calib, eval_data=eval_data, calib_size=calib_size, eval_size=eval_size, threads=threads,
                          rounds=rounds, kind=kind, detector=detector)
        click.echo(format_sweep(rows))
        if out:
            out.write_text(to_json(rows))
        return
    if precision is None:
        raise click.UsageError("give --precision fp16 or --precision int8 (or --sweep)")
    if precision == "int8" and calib is None:
        raise click.UsageError("--precision int8 needs calibration data: --calib FOLDER (frames or face crops) or the trainer's cache/")
    run_quantize(model, precision, calib, out, eval_data=eval_data, calib_size=calib_size, eval_size=eval_size, kind=kind,
                 detector=detector, threads=threads, rounds=rounds, report=not no_report, **int8)


def main(argv: list[str] | None = None) -> int:
    """The ``spoofsdk-train`` entry point; returns the exit status."""
    return run_main(cli, argv, prog_name="spoofsdk-train")


if __name__ == "__main__":
    sys.exit(main())
