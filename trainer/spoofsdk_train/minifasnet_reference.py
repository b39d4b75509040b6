"""The MiniFASNet pair as spoofsdk models, and the reference row of the cross-domain table.

- :func:`export_minifasnet` writes one published checkpoint (Minivision, Apache-2.0) as a
  spoofsdk ONNX file whose metadata makes the runtime preprocess exactly as its authors do:
  BGR, 0..255 unnormalised (mean 0, std 1/255), 80x80, crop scale 2.7 (V2) / 4.0 (V1SE),
  crop policy ``shift_cap``, output ``logitsN`` with class order ``spoof,real,spoof``. It checks
  that the runtime and our torch module agree, and writes nothing if they do not.
  These files are built from the checkpoints when needed and never committed.
- :func:`score_domains` scores any spoofsdk models (one, or an ensemble averaging P(live)) on
  every domain of the shared data, each model preprocessing by its own metadata: every
  ``webcam/<source>`` with attacks and gc535 (face crops: whole crop -> model input), NUAA (full
  frames: YuNet, largest face, the model's crop; no face scores 0).

    python -m spoofsdk_train.minifasnet_reference --out ../notes/minifas_reference
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import click
import numpy as np
import torch

from spoofsdk.clitools import Command
from spoofsdk.folders import image_files
from spoofsdk.timing import timed

from .models.minifasnet import CHECKPOINTS, CLASS_ORDER, LIVE_CLASS, bgr_crops_to_tensor, load_minifasnet

log = logging.getLogger("spoofsdk_train.minifasnet_reference")

__all__ = [
    "MINIFASNET_LICENSE",
    "minifasnet_props",
    "export_minifasnet",
    "export_minifasnet_pair",
    "Domain",
    "list_domains",
    "score_domains",
    "markdown_table",
    "report_markdown",
    "summarise",
]

MINIFASNET_LICENSE = (
    "Apache-2.0; weights by Minivision (github.com/minivision-ai/Silent-Face-Anti-Spoofing, "
    "resources/anti_spoof_models). Reference and teacher only: not shipped with spoofsdk."
)
# Their decision is the argmax of the softmax; P(live) >= 0.5 always wins that argmax.
MINIFASNET_THRESHOLD = 0.5


def minifasnet_props(name: str, model: torch.nn.Module | None = None, threshold: float = MINIFASNET_THRESHOLD) -> dict[str, str]:
    """spoofsdk metadata of a published MiniFASNet: the authors' preprocessing and output, as metadata strings."""
    from spoofsdk.model import ModelInfo

    from .models import count_macs, count_params

    ck = CHECKPOINTS[name]
    model = model if model is not None else load_minifasnet(name)
    info = ModelInfo(
        name=name.replace("_", "-"),
        architecture=name,
        precision="fp32",
        input_size=ck.input_size,
        color_order="BGR",
        # to_tensor computes (x/255 - mean) / std: mean 0, std 1/255 gives the 0..255 pixels they feed.
        mean=(0.0, 0.0, 0.0),
        std=(1.0 / 255.0,) * 3,
        crop_scale=ck.crop_scale,
        output="logitsN",
        class_order=CLASS_ORDER,
        threshold=float(threshold),
        crop_policy="shift_cap",
        extra={
            "training_data": "Minivision's private multi-device anti-spoofing set (not public); no spoofsdk data",
            "license": MINIFASNET_LICENSE,
            "description": f"MiniFASNet {name.split('_')[1].upper()} ({ck.file}), exported by spoofsdk-train from the published "
            "checkpoint; classes 0 and 2 are two kinds of attack, 1 is live",
            "created": datetime.now(timezone.utc).date().isoformat(),
            "threshold_source": "the authors' decision rule (argmax of the softmax); P(live) >= 0.5 implies live",
            "params": str(count_params(model)),
            "macs": str(count_macs(model, ck.input_size)),
        },
    )
    return info.to_props()


def export_minifasnet(
    name: str,
    out: str | os.PathLike,
    threshold: float = MINIFASNET_THRESHOLD,
    opset: int = 17,
    parity_crops: np.ndarray | None = None,
    tolerance: float = 1e-4,
) -> Path:
    """Export ``minifasnet_v2`` or ``minifasnet_v1se`` to a spoofsdk ONNX file at ``out``.

    Parity: the runtime's ``score_crops`` (its own to_tensor from the metadata) must match our
    torch module's softmax class 1 on ``parity_crops`` (BGR uint8 N x 80 x 80 x 3; random
    images when None) within ``tolerance``; otherwise :class:`~spoofsdk_train.export.ExportError`
    and no file.
    """
    import onnx

    from spoofsdk.model import SpoofModel, parse_metadata

    from .export import ExportError, _onnx_export

    model = load_minifasnet(name)
    size = CHECKPOINTS[name].input_size
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in favour of dynamo
        warnings.simplefilter("ignore", DeprecationWarning)
        _onnx_export(model, torch.zeros(2, 3, size, size), tmp, "logits", opset)
    proto = onnx.load(str(tmp))
    tmp.unlink()
    props = minifasnet_props(name, model, threshold)
    parse_metadata(props, str(out))
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    if parity_crops is None:
        parity_crops = np.random.default_rng(0).integers(0, 256, size=(8, size, size, 3), dtype=np.uint8)
    runtime = SpoofModel(data, threads=2)
    got = runtime.score_crops(list(parity_crops))
    with torch.no_grad():
        ref = torch.softmax(model(bgr_crops_to_tensor(parity_crops)), 1)[:, LIVE_CLASS].double().numpy()
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= tolerance:
        raise ExportError(f"{name}: parity check failed: max |dP(live)| onnxruntime vs torch = {diff:.3g} (tolerance {tolerance:g})")
    out.write_bytes(data)
    log.info("exported %s to %s; parity on %d crops: max |dP| %.2e", name, out, len(parity_crops), diff)
    return out


def export_minifasnet_pair(out_dir: str | os.PathLike, **kwargs) -> list[Path]:
    """Both published models exported into ``out_dir`` (``minifasnet-v2.onnx``, ``minifasnet-v1se.onnx``)."""
    out_dir = Path(out_dir)
    return [export_minifasnet(n, out_dir / f"{n.replace('_', '-')}.onnx", **kwargs) for n in CHECKPOINTS]


# --- scoring every domain ----------------------------------------------------------------
@dataclass
class Domain:
    name: str
    kind: str  # 'crops' (tight face crops) or 'frames' (full frames: detect, then crop)
    files: list[Path]
    labels: np.ndarray  # 1 real, 0 attack


def _class_files(folder: Path) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for cls, y in (("real", 1), ("attack", 0)):
        fs = image_files(folder / cls)
        files += fs
        labels += [y] * len(fs)
    return files, labels


def list_domains(data_root: str | os.PathLike | None = None) -> list[Domain]:
    """Every domain of the shared data with both classes: webcam sources, NUAA (all frames), gc535 test and train."""
    from .data import data_root as default_root

    root = Path(data_root) if data_root is not None else default_root()
    domains: list[Domain] = []
    webcam = root / "webcam"
    for src in sorted(p for p in webcam.iterdir() if p.is_dir()) if webcam.is_dir() else []:
        files, labels = _class_files(src)
        if 0 in labels and 1 in labels:
            domains.append(Domain(f"webcam/{src.name}", "crops", files, np.array(labels)))
    if (root / "nuaa").is_dir():
        files, labels = _class_files(root / "nuaa")
        domains.append(Domain("nuaa", "frames", files, np.array(labels)))
    for split in ("test", "train"):
        if (root / "gc535" / split).is_dir():
            files, labels = _class_files(root / "gc535" / split)
            domains.append(Domain(f"gc535/{split}", "crops", files, np.array(labels)))
    return domains


def _score_domain(models, domain: Domain, detector, batch: int) -> tuple[np.ndarray, int]:
    """P(live) per model (n_models x N) and the number of frames without a face (scored 0)."""
    from spoofsdk.sources import read_image

    scores = np.zeros((len(models), len(domain.files)))
    no_face = 0
    pending: list[tuple[int, list[np.ndarray]]] = []

    def flush():
        if not pending:
            return
        idx = [i for i, _ in pending]
        for k, m in enumerate(models):
            scores[k, idx] = m.score_crops([c[k] for _, c in pending])
        pending.clear()

    for i, path in enumerate(domain.files):
        image = read_image(path)
        if domain.kind == "crops":
            pending.append((i, [m.fit_crop(image) for m in models]))
        else:
            dets = detector.detect(image)
            if not dets:
                no_face += 1  # stays 0: no face is never live
                continue
            box = max(dets, key=lambda d: d.box[2] * d.box[3]).box
            pending.append((i, [m.crop_face(image, box).image for m in models]))
        if len(pending) >= batch:
            flush()
    flush()
    return scores, no_face


def _figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    from spoofsdk.metrics import summary

    s = summary(labels, scores, threshold)
    return {k: s.get(k) for k in ("n", "n_real", "n_attack", "auc", "eer", "bpcer_at_apcer_5", "apcer", "bpcer", "acer")}


def score_domains(
    models: Sequence,
    data_root: str | os.PathLike | None = None,
    domains: Sequence[str] | None = None,
    yunet_model: str | os.PathLike | None = None,
    threads: int = 2,
    batch: int = 64,
    ensemble_name: str = "pair",
) -> dict:
    """Score spoofsdk models on every domain; returns per-domain figures of each model and of their ensemble.

    ``models``: paths / loaded :class:`spoofsdk.model.SpoofModel`; each preprocesses by its own
    metadata. The ensemble's P(live) is the mean of the models' (with one model, it is that
    model). ``domains`` restricts to those names (see :func:`list_domains`). Figures: AUC,
    EER, BPCER@APCER 5 %, and APCER/BPCER/ACER at the mean of the models' thresholds.
    """
    from spoofsdk.detect import YuNetDetector
    from spoofsdk.model import SpoofModel


    loaded = [m if isinstance(m, SpoofModel) else SpoofModel(m, threads=threads) for m in models]
    names = [m.info.name for m in loaded]
    threshold = float(np.mean([m.threshold for m in loaded]))
    selected = [d for d in list_domains(data_root) if domains is None or d.name in domains]
    detector = None
    if any(d.kind == "frames" for d in selected):
        detector = YuNetDetector(yunet_model)  # None: $SPOOFSDK_YUNET_MODEL, else the runtime's bundled file
    result: dict = {"models": names, "model_sources": [m.source for m in loaded], "ensemble": ensemble_name,
                    "threshold": threshold, "domains": {}}
    for d in selected:
        (scores, no_face), ms = timed(lambda: _score_domain(loaded, d, detector, batch))
        entry = {"kind": d.kind, "no_face": no_face, "seconds": round(ms / 1000, 1),
                 ensemble_name: _figures(d.labels, scores.mean(axis=0), threshold)}
        if len(loaded) > 1:
            for name, m, s in zip(names, loaded, scores):
                entry[name] = _figures(d.labels, s, m.threshold)
        result["domains"][d.name] = entry
        log.info("%s: %s AUC %.3f (%d images, %.0f s)", d.name, ensemble_name, entry[ensemble_name]["auc"] or float("nan"), len(d.files), entry["seconds"])
    result["summary"] = summarise(result)
    return result


def summarise(result: dict) -> dict:
    """Mean / worst AUC and mean BPCER@APCER5 of every column over domain groups (webcam, loso, all)."""
    multi = len(result["models"]) > 1
    return _summaries(result, [result["ensemble"]] + (result["models"] if multi else []))


def _summaries(result: dict, columns: list[str]) -> dict:
    out = {}
    webcam = [n for n in result["domains"] if n.startswith("webcam/")]
    groups = {
        "webcam": webcam,
        # the domains of the leave-one-source-out table (issue #13): webcam sources, NUAA, gc535 test
        "loso": webcam + [n for n in ("nuaa", "gc535/test") if n in result["domains"]],
        "all": list(result["domains"]),
    }
    for col in columns:
        out[col] = {}
        for g, names in groups.items():
            aucs = [result["domains"][n][col]["auc"] for n in names if result["domains"][n][col].get("auc") is not None]
            b5 = [result["domains"][n][col]["bpcer_at_apcer_5"] for n in names if result["domains"][n][col].get("bpcer_at_apcer_5") is not None]
            if aucs:
                out[col][g] = {"mean_auc": float(np.mean(aucs)), "worst_auc": float(np.min(aucs)),
                               "mean_bpcer_at_apcer_5": float(np.mean(b5)), "domains": len(aucs)}
    return out


def markdown_table(result: dict) -> str:
    """Every domain with AUC per model and the ensemble's AUC / EER / BPCER@APCER5; mean and worst rows."""
    ens, names = result["ensemble"], result["models"]
    per_model = len(names) > 1 and all(n in next(iter(result["domains"].values()), {}) for n in names)
    head = ["domain", "real / attack"] + ([f"{n} AUC" for n in names] if per_model else []) + [f"{ens} AUC", f"{ens} EER", f"{ens} BPCER@APCER5"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v):
        return "–" if v is None else f"{v:.3f}"

    for name, e in result["domains"].items():
        row = [name + (f" ({e['no_face']} no face)" if e["no_face"] else ""), f"{e[ens]['n_real']} / {e[ens]['n_attack']}"]
        if per_model:
            row += [f(e[n]["auc"]) for n in names]
        row += [f(e[ens]["auc"]), f(e[ens]["eer"]), f(e[ens]["bpcer_at_apcer_5"])]
        lines.append("| " + " | ".join(row) + " |")
    for g, label in (("webcam", "webcam sources"), ("loso", "webcam + nuaa + gc535/test"), ("all", "all domains")):
        s = result["summary"]
        if g not in s.get(ens, {}):
            continue
        for stat, key in (("mean", "mean_auc"), ("worst", "worst_auc")):
            row = [f"{stat} ({label})", ""]
            if per_model:
                row += [f(s[n][g][key]) for n in names]
            row += [f(s[ens][g][key]), "", f(s[ens][g]["mean_bpcer_at_apcer_5"]) if stat == "mean" else ""]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(result: dict) -> str:
    """:func:`markdown_table` with the protocol, the command and the time it took."""
    head = [
        f"# Reference: {', '.join(result['models'])} ({result['ensemble']} = mean P(live))",
        "",
        "Each model preprocesses by its own spoofsdk metadata. Face-crop domains (webcam sources, gc535): the whole crop "
        "resized to the model input. NUAA: every frame, YuNet, the largest face, the model's own crop (a frame without a "
        "face scores 0). AUC, EER and BPCER@APCER 5 % need no threshold.",
        "",
    ]
    if "command" in result:
        head += [f"Command: `{result['command']}` ({result.get('seconds', 0) / 60:.1f} min on 2 shared CPU cores).", ""]
    return "\n".join(head) + "\n" + markdown_table(result)


@click.command(cls=Command, help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", required=True, help="Write OUT.json and OUT.md.")
@click.option("--models", multiple=True, help="A spoofsdk ONNX file to score (repeatable; default: the MiniFASNet pair, exported first).")
@click.option("--export-dir", help="Where to export the MiniFASNet pair (default: beside --out).")
@click.option("--data", help="Data root (default: $SPOOFSDK_DATA or ../shared/data).")
@click.option("--domains", multiple=True, help="Only this domain (repeatable; e.g. webcam/jtboing, nuaa, gc535/test).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
def cli(out, models, export_dir, data, domains, threads) -> int:
    args = SimpleNamespace(out=out, models=list(models), export_dir=export_dir, data=data, domains=list(domains) or None, threads=threads)
    given = [("--out", out), *(("--models", m) for m in models), ("--export-dir", export_dir), ("--data", data),
             *(("--domains", d) for d in domains), ("--threads", threads)]
    argv = [f"{k} {v}" for k, v in given if v is not None]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    models = args.models or export_minifasnet_pair(args.export_dir or out.parent / "minifasnet_onnx")
    result, ms = timed(lambda: score_domains(models, args.data, args.domains, threads=args.threads))
    result["seconds"] = round(ms / 1000, 1)
    result["command"] = "python -m spoofsdk_train.minifasnet_reference " + " ".join(argv or [])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float))
    out.with_suffix(".md").write_text(report_markdown(result))
    print(markdown_table(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from spoofsdk.clitools import run_main

    return run_main(cli, argv, prog_name="python -m spoofsdk_train.minifasnet_reference")


if __name__ == "__main__":
    raise SystemExit(main())
