"""Export: ONNX (opset >= 13, dynamic batch, input 'input') with spoofsdk metadata, then a parity check.

1. BatchNorm is folded into the preceding Conv2d/Linear (plain Conv + ReLU graph, which is
   what INT8 quantizers want).
2. ``torch.onnx.export`` (TorchScript exporter), dynamic batch axis.
3. The runtime's metadata (:class:`spoofsdk.model.ModelInfo`): preprocessing, output kind,
   class order, threshold chosen on validation, training data and licences, metrics,
   params, MACs, date.
4. Parity: the file is loaded with :class:`spoofsdk.model.SpoofModel` and scores real crops
   (``predict`` on ``to_tensor`` batches and ``score_crops``); P(real) must match the torch
   model within ``parity_tolerance`` (1e-4). A failing check deletes the file and raises.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spoofsdk.errors import SpoofSDKError

from .recipe import Recipe
from .teachers import get_teacher

log = logging.getLogger("spoofsdk_train.export")

__all__ = ["ExportError", "fold_batchnorm", "export", "export_model", "parity_check", "training_data_text"]


class ExportError(SpoofSDKError, RuntimeError):
    pass


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm that directly follows a Conv2d/Linear inside a Sequential folded into it."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules.keys())
        for a, b in zip(names, names[1:]):
            first, second = module._modules[a], module._modules[b]
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(first, second)
                module._modules[b] = nn.Identity()
            elif isinstance(first, nn.Linear) and isinstance(second, nn.BatchNorm1d):
                module._modules[a] = fuse_linear_bn_eval(first, second)
                module._modules[b] = nn.Identity()
    return model


def training_data_text(recipe: Recipe, teacher: dict | None = None) -> str:
    """The metadata's ``training_data``: each domain's split and counts, their licences, and the
    teacher of a distilled model (``teacher``: the checkpoint's record of it, with its weights' SHA-256)."""
    from .data import DataError, is_random_resplit, read_manifest
    from .evaluate import LICENCES

    parts, lic = [], []
    for p in recipe.data.manifests:
        try:
            m = read_manifest(p)
        except DataError:
            parts.append(str(p))
            continue
        name = m["dataset"]
        split = m.get("split", {})
        c = m.get("counts", {}).get("train", {})
        if is_random_resplit(m):
            share = "/".join(f"{100 * f:g}" for f in split.get("fractions", []))
            parts.append(f"{name} random {share} split, train part ({c.get('real', 0)} real, {c.get('attack', 0)} attack crops)")
        elif split.get("method") == "subject-disjoint":
            parts.append(f"{name} train subjects {','.join(split['subjects']['train'])} ({c.get('real', 0)} real, {c.get('attack', 0)} attack crops)")
        else:
            parts.append(f"{name} train split ({c.get('real', 0)} real, {c.get('attack', 0)} attack crops)")
        lic.append(LICENCES.get(name, f"{name}: see its source"))
    text = "; ".join(parts) + ". Licences: " + "; ".join(lic) + "."
    if recipe.train.distill_alpha > 0:
        # The teacher's weights shaped these ones: the model card names it and its licence (issue 13).
        text += (f" Distilled from {get_teacher(recipe.train.teacher).card} (soft targets on every augmented "
                 f"training crop, weight {recipe.train.distill_alpha:g}")
        files = (teacher or {}).get("checkpoints") or {}
        if files:
            text += "; teacher weights " + ", ".join(f"{n} sha256 {h[:16]}" for n, h in sorted(files.items()))
        text += ")."
    t = recipe.train
    if t.domain_adv > 0 or t.triplet_weight > 0:
        # How the features were made camera-blind belongs beside the data: it is part of what the figures mean.
        parts = []
        if t.domain_adv > 0:
            side = "live" if t.domain_adv_side == "live" else "live and attack"
            parts.append(f"a domain critic on the {side} crops' features behind a gradient reversal, weight {t.domain_adv:g}")
        if t.triplet_weight > 0:
            parts.append(f"an asymmetric triplet loss, weight {t.triplet_weight:g}, margin {t.triplet_margin:g}")
        # SSDG aligns live crops only; a critic on both classes is plain domain-adversarial training (DANN).
        single = t.domain_adv == 0 or t.domain_adv_side == "live"
        name = "Single-side domain generalisation (SSDG, Jia et al. 2020)" if single else "Domain-adversarial training (DANN, both classes)"
        text += f" {name}: " + "; ".join(parts) + "."
    return text + " Weights for research and evaluation use only."


def _parity_crops(recipe: Recipe, n: int = 64) -> list[np.ndarray]:
    """Real crops for the parity check: val and test crops of the recipe's data (random noise images if none)."""
    from spoofsdk.crop import resize_square

    from .data import DataError, load_crops, read_manifest

    size = int(recipe.model.input_size)
    crops: list[np.ndarray] = []
    for split in ("val", "test"):
        try:
            cs = load_crops([read_manifest(p) for p in recipe.data.manifests], split, limit=n // 2)
        except DataError:
            continue
        crops += [resize_square(im, size) for im in cs.images]
    if not crops:
        log.warning("no prepared crops found for the parity check; using random images")
        rng = np.random.default_rng(0)
        crops = list(rng.integers(0, 256, size=(8, size, size, 3), dtype=np.uint8))
    return crops


def parity_check(onnx_bytes: bytes, model: nn.Module, recipe: Recipe, crops: list[np.ndarray], tolerance: float) -> dict:
    """Compare P(real) of the runtime (SpoofModel) and torch on the same crops; raise ExportError beyond ``tolerance``."""
    from spoofsdk.crop import to_tensor
    from spoofsdk.model import SpoofModel

    from .models import get_spec
    from .train import probs_real

    m = recipe.model
    spec = get_spec(m.architecture)
    runtime = SpoofModel(onnx_bytes, threads=2)
    batch = to_tensor(crops, m.color_order, m.mean, m.std)
    # In chunks: 700 crops at 224 px in one batch hold ~4 GB of activations per engine (a 12-domain recipe).
    step = 32
    with torch.no_grad():
        ref = np.concatenate([probs_real(model.eval()(torch.from_numpy(batch[i : i + step])), spec.output).double().numpy()
                              for i in range(0, len(batch), step)])
    got = np.concatenate([runtime.predict(batch[i : i + step]) for i in range(0, len(batch), step)])
    via_crops = np.concatenate([runtime.score_crops(crops[i : i + step]) for i in range(0, len(crops), step)])
    single = runtime.predict(batch[:1])
    diff = float(np.max(np.abs(got - ref)))
    diff_crops = float(np.max(np.abs(via_crops - got)))
    result = {"n_crops": len(crops), "max_abs_diff_prob": diff, "max_abs_diff_score_crops_vs_predict": diff_crops,
              "batch1_diff": float(abs(single[0] - ref[0])), "tolerance": tolerance, "passed": bool(diff <= tolerance and diff_crops <= tolerance)}
    if not result["passed"]:
        raise ExportError(f"parity check failed: max |dP(real)| onnxruntime vs torch = {diff:.3g}, score_crops vs predict = {diff_crops:.3g} (tolerance {tolerance:g})")
    return result


def _onnx_export(model: nn.Module, dummy: torch.Tensor, path: Path, output_name: str, opset: int) -> None:
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=[output_name],
        dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )


def export_model(
    model: nn.Module,
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    threshold: float = 0.5,
    name: str | None = None,
    opset: int | None = None,
    extra: dict[str, str] | None = None,
    parity: bool = True,
    parity_crops: list[np.ndarray] | None = None,
) -> Path:
    """Write ``model`` (built from ``recipe``) as ONNX with the runtime's metadata; check parity unless ``parity=False``.

    ``extra`` adds or overrides optional metadata (training data, metrics, licence...). Without a
    parity check (the benchmarks' untrained exports) no data is read.
    """
    import onnx

    from spoofsdk.model import ModelInfo, parse_metadata

    from .models import count_macs, count_params, get_spec

    m = recipe.model
    spec = get_spec(m.architecture)
    opset = int(opset or recipe.export.opset)
    if opset < 13:
        raise ExportError(f"opset must be >= 13, got {opset}")
    size = int(m.input_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    folded = fold_batchnorm(model)
    dummy = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        drift = float((torch.softmax(folded(dummy), 1) - torch.softmax(model(dummy), 1)).abs().max()) if spec.output == "logits2" else 0.0
    tmp = out.with_suffix(".tmp.onnx")
    output_name = "logits" if spec.output == "logits2" else "logit"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in favour of dynamo (needs onnxscript, not installed)
        warnings.simplefilter("ignore", DeprecationWarning)
        _onnx_export(folded, dummy, tmp, output_name, opset)
    proto = onnx.load(str(tmp))
    tmp.unlink()
    info = ModelInfo(
        name=name or recipe.name,
        architecture=m.architecture,
        precision="fp32",
        input_size=size,
        color_order=m.color_order,
        mean=tuple(float(v) for v in m.mean),
        std=tuple(float(v) for v in m.std),
        crop_scale=float(m.crop_scale),
        output=spec.output,
        class_order=spec.class_order,
        threshold=float(threshold),
        extra={
            "license": recipe.export.license,
            "description": recipe.description,
            "created": datetime.now(timezone.utc).date().isoformat(),
            "params": str(count_params(model)),
            "macs": str(count_macs(model, size)),
            **(extra or {}),
        },
    )
    props = info.to_props()
    parse_metadata(props, str(out))  # validate before writing
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    ops = sorted({n.op_type for n in proto.graph.node})
    check = None
    if parity:
        crops = parity_crops if parity_crops is not None else _parity_crops(recipe)
        try:
            check = parity_check(data, model, recipe, crops, float(recipe.export.parity_tolerance))
        except ExportError:
            if out.exists():
                out.unlink()
            raise
    out.write_bytes(data)
    side = {"onnx": str(out), "opset": opset, "ops": ops, "bn_fold_max_drift": drift, "parity": check, "metadata": props}
    out.with_suffix(".export.json").write_text(json.dumps(side, indent=1))
    log.info("exported %s (opset %d, ops %s, %d bytes); %s, threshold %.6f", out, opset, ",".join(ops), len(data),
             f"parity on {check['n_crops']} crops: max |dP| {check['max_abs_diff_prob']:.2e} (tolerance {check['tolerance']:g})"
             if check else "no parity check", threshold)
    return out


def export(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    report: dict | None = None,
    name: str | None = None,
    opset: int | None = None,
    parity_crops: list[np.ndarray] | None = None,
) -> Path:
    """Export a checkpoint to ONNX with metadata and check parity. ``report`` (from evaluate) gives threshold and metrics."""
    from .evaluate import evaluate
    from .train import model_from_checkpoint

    torch.set_num_threads(max(1, int(os.environ.get("SPOOFSDK_THREADS", "2"))))
    model, recipe, ck = model_from_checkpoint(checkpoint)
    if report is None:
        report = evaluate(checkpoint, plots=False)
    keys = ("n", "auc", "eer", "apcer", "bpcer", "acer", "accuracy", "bpcer_at_apcer_5", "bpcer_at_apcer_1")
    metrics_json = {k: {f: v.get(f) for f in keys} for k, v in report.get("test", {}).items()}
    if "test_all" in report:
        metrics_json["all_test_sets"] = {f: report["test_all"].get(f) for f in keys}
    methods = {v.get("method") for v in report.get("splits", {}).values()}
    if len(methods) == 1 and None not in methods:
        metrics_json["split"] = methods.pop()
    how = report["threshold"].get("how", report["threshold"].get("rule"))
    extra = {
        "training_data": training_data_text(recipe, ck.get("teacher")),
        "metrics": json.dumps(metrics_json, default=float),
        "threshold_source": f"{how}; val sets: {', '.join(report['threshold'].get('val_sets', []))}",
    }
    return export_model(model, recipe, out, threshold=float(report["threshold"]["value"]), name=name, opset=opset, extra=extra,
                        parity_crops=parity_crops)
