"""The models the benchmarks measure: found, exported or built, and their FP16/INT8 variants.

- ``asset``: the shipped models, ONNX files in ``spoofsdk/assets`` (the embedded zoo). A model
  shipped quantized only (e.g. ``hybrid_mnv2-int8.onnx``) is paired with the trainer's FP32 export
  of the same metadata ``name`` and ``architecture`` found in ``runs/*/`` (same run, so its INT8
  speed-up is same-run); the shipped INT8 file itself is the one timed and scored. Without such
  an FP32 file the shipped precision is measured alone.
- ``trained``: FP32 ONNX files in ``runs/*/`` (the trainer's exports) that are not a shipped model's.
- ``untrained``: architectures of ``spoofsdk_train.models`` with no trained or shipped model here,
  exported with their initial weights (latency only: it does not depend on the weights; never
  scored). Needs torch.
- ``reference``: the real MiniFASNet pair (Minivision, Apache-2.0): V2 and V1SE exported here from
  the published checkpoints in ``../shared/models/minifasnet`` (``spoofsdk_train.minifasnet_reference``),
  each a spoofsdk model preprocessing as its authors do. Needs torch and the checkpoints; skipped
  with the reason otherwise. Its accuracy on every domain is the reference table made by
  ``python -m spoofsdk_train.minifasnet_reference`` (its crops differ per model, so it is not in
  ``test_accuracy``).

FP16 and INT8 variants are made with :mod:`spoofsdk_train.quantize` (INT8 calibrated on real face
crops) and cached under the work folder by the FP32 file's hash.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from spoofsdk.model import loso_summary
from spoofsdk_train.macs import onnx_params_macs  # the one MAC counter on a graph

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "fp16", "int8")


def work_dir() -> Path:
    d = Path(os.environ.get("SPOOFSDK_BENCH_DIR", REPO / ".benchmarks" / "work"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def shared_dir() -> Path:
    return Path(os.environ.get("SPOOFSDK_SHARED", REPO.parent / "shared"))


def data_root() -> Path:
    return Path(os.environ.get("SPOOFSDK_DATA", shared_dir() / "data"))


def yunet_path() -> Path:
    return Path(os.environ.get("SPOOFSDK_YUNET_MODEL", shared_dir() / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"))


def minifasnet_dir() -> Path:
    return Path(os.environ.get("SPOOFSDK_MINIFASNET_DIR", shared_dir() / "models" / "minifasnet"))


# The published pair: benchmark key -> trainer registry name. Their P(live) is the mean of both.
MINIFASNET_PAIR = {"minifasnet-v2": "minifasnet_v2", "minifasnet-v1se": "minifasnet_v1se"}


def minifasnet_unavailable() -> str | None:
    """Why the real MiniFASNet pair cannot be built here, or None when it can."""
    if not torch_available():
        return "torch is not installed (pip install -e ./trainer)"
    try:
        from spoofsdk_train.models.minifasnet import CHECKPOINTS
    except Exception as e:
        return f"spoofsdk_train.models.minifasnet unavailable ({e})"
    missing = [ck.file for ck in CHECKPOINTS.values() if not (minifasnet_dir() / ck.file).is_file()]
    if missing:
        return f"MiniFASNet checkpoints not found in {minifasnet_dir()} ({', '.join(missing)}; set $SPOOFSDK_MINIFASNET_DIR)"
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("SPOOFSDK_CACHE", REPO / "cache"))


@dataclass
class ModelEntry:
    """One model to measure; ``paths`` maps precision -> ONNX file (filled by :func:`ensure_variants`)."""

    key: str  # short unique id used in test ids and tables
    kind: str  # asset (shipped) | trained | untrained | reference | checkpoint
    architecture: str
    fp32: Path | None = None  # None until built (untrained/reference are built lazily), or none at all
    note: str = ""
    paths: dict[str, Path] = field(default_factory=dict)  # a shipped quantized file is set by discover()

    @property
    def shipped(self) -> bool:
        """One of the embedded models (spoofsdk/assets)."""
        return self.kind == "asset"

    def files(self) -> list[Path]:
        return [p for p in [self.fp32, *self.paths.values()] if p is not None]

    @property
    def scored(self) -> bool:
        """Accuracy is meaningful only for trained weights."""
        return self.kind in ("asset", "trained", "checkpoint")

    @property
    def timed(self) -> bool:
        """Checkpoints exported here share an architecture with a timed model: not timed again."""
        return self.kind != "checkpoint"


def _props(path: Path) -> dict[str, str]:
    from spoofsdk.model import read_metadata_props

    try:
        return read_metadata_props(path.read_bytes())
    except Exception:
        return {}


def _graph_fingerprint(path: Path) -> str:
    """Hash of the graph (nodes and weights) without the metadata, to spot the same model saved twice."""
    import onnx

    try:
        return hashlib.sha256(onnx.load(str(path)).graph.SerializeToString()).hexdigest()
    except Exception:
        return str(path)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


ASSETS = REPO / "spoofsdk" / "assets"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def discover(quick: bool = False, assets: Path | None = None, runs: Path | None = None) -> list[ModelEntry]:
    """Every model to measure (cheap: nothing is built here). ``assets``/``runs``: other folders than
    spoofsdk/assets and runs/ (tests)."""
    if quick:
        return [ModelEntry("edgenet-untrained", "untrained", "edgenet")]  # the trainer's export: torch comes with the trainer
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    graphs: dict[str, ModelEntry] = {}
    assets, runs = assets or ASSETS, runs or REPO / "runs"
    candidates = [("asset", p) for p in sorted(assets.glob("*.onnx"))]
    candidates += [("trained", p) for p in sorted(runs.glob("*/*.onnx"))]
    quantized_assets: list[tuple[Path, dict]] = []
    for kind, p in candidates:
        props = _props(p)
        if "architecture" not in props:
            continue  # files without metadata (the detector) are not spoofsdk models
        if props.get("precision", "fp32") != "fp32":
            if kind == "asset":
                quantized_assets.append((p, props))
            continue  # other quantized files are found by ensure_variants beside their FP32
        fingerprint = _graph_fingerprint(p)
        if fingerprint in graphs:  # e.g. the trained run that was embedded as the default: measure it once
            graphs[fingerprint].note += f"; same weights as {_rel(p)}"
            continue
        key = f"{props.get('name') or p.stem}"
        if key in seen:
            key = f"{key}-{p.parent.name}"
        seen.add(key)
        entries.append(ModelEntry(key, kind, props["architecture"], p, note=_rel(p)))
        graphs[fingerprint] = entries[-1]
    for p, props in quantized_assets:
        _add_shipped_quantized(entries, seen, p, props)
    if torch_available():
        # Trained checkpoints that were evaluated but never exported (e.g. the cross-dataset runs in
        # runs/cross/*): exported here for the accuracy table only (same architectures as above:
        # their latency would repeat the exported model's).
        for ck in sorted(runs.glob("**/best.pt")):
            if (ck.parent / "report.json").is_file() and not list(ck.parent.glob("*.onnx")):
                key = ck.parent.name
                if key in seen:
                    key = f"{ck.parent.parent.name}-{key}"
                seen.add(key)
                entries.append(ModelEntry(key, "checkpoint", "?", None, note=f"{ck.parent.relative_to(REPO)}/best.pt, exported here; accuracy only"))
        try:
            from spoofsdk_train.models import available

            trained = {e.architecture for e in entries if e.kind in ("asset", "trained")}
            for arch in sorted(available()):
                if arch in MINIFASNET_PAIR.values():
                    continue  # measured with its real weights below
                if arch in trained:
                    continue  # its trained weights are measured: an untrained row would only repeat their latency
                entries.append(ModelEntry(f"{arch}-untrained", "untrained", arch,
                                          note="no trained weights: initial weights exported here, latency only"))
        except Exception as e:  # a broken registry must not stop the benchmarks
            print(f"benchmarks: spoofsdk_train.models unavailable ({e}); untrained exports skipped")
    why = minifasnet_unavailable()
    if why is None:
        for key, arch in MINIFASNET_PAIR.items():
            entries.append(ModelEntry(key, "reference", arch, note="published MiniFASNet checkpoint (Minivision, Apache-2.0), exported here"))
    else:
        print(f"benchmarks: MiniFASNet reference pair skipped: {why}")
    return entries


def _add_shipped_quantized(entries: list[ModelEntry], seen: set[str], path: Path, props: dict) -> None:
    """A quantized asset: the quantized file of an asset FP32 entry already (beside it, found by
    ensure_variants), else a model shipped quantized only. That one is paired with a trained FP32
    entry of the same name and architecture, which becomes the shipped entry, its quantized path
    this very file; with no such FP32 it is measured alone."""
    name, arch, precision = props.get("name"), props["architecture"], props["precision"]
    # Each FP32 file's metadata read once (reading it loads the whole file: 19.5 MB for SpoofNet).
    fp32_props = {id(e): _props(e.fp32) for e in entries if e.kind in ("asset", "trained") and e.fp32 is not None}
    same = [e for e in entries if id(e) in fp32_props and (fp32_props[id(e)].get("name"), e.architecture) == (name, arch)]
    if any(e.kind == "asset" and e.fp32.parent == path.parent for e in same):
        return  # e.g. mnv2probe-int8.onnx beside mnv2probe-fp32.onnx
    where = _rel(path)
    # The export it was quantized from keeps its threshold: prefer it to another run of the same recipe.
    same.sort(key=lambda e: fp32_props[id(e)].get("threshold") != props.get("threshold"))
    if same:
        e = same[0]
        holder = next((x for x in entries if x.key == name and x is not e), None)
        if name and holder is not None:  # the shipped model takes its own name; the other run keeps a run-suffixed key
            holder.key, e.key = f"{name}-{holder.fp32.parent.name}" if holder.fp32 else f"{name}-other", name
            seen.add(holder.key)
        e.kind, e.paths[precision] = "asset", path
        run = "same threshold" if fp32_props[id(e)].get("threshold") == props.get("threshold") else "threshold differs: another run"
        e.note = (f"shipped {precision.upper()} {where}; FP32 from the trainer's export {_rel(e.fp32)} "
                  f"(same name and architecture, {run}; not shipped)" + e.note.split(_rel(e.fp32), 1)[1])
        return
    key = name or path.stem
    if key in seen:
        key = f"{key}-{precision}"
    seen.add(key)
    entries.append(ModelEntry(key, "asset", arch, None, paths={precision: path},
                              note=f"shipped {precision.upper()} {where}; no FP32 of it found here (runs/*/*.onnx), FP32 not measured"))


def default_entry(entries: list[ModelEntry]) -> ModelEntry | None:
    """The model the SDK uses by default: the entry holding a file of the embedded default (matched by
    file name in spoofsdk/assets), else the trained edge model, else an edge export."""
    from spoofsdk.model import DEFAULT_MODEL, EMBEDDED_MODELS

    names = {file for file, _sha in EMBEDDED_MODELS.get(DEFAULT_MODEL, {}).values()}
    for e in entries:
        if any(p.parent.name == "assets" and p.name in names for p in e.files()):
            return e
    for pred in (lambda e: e.kind == "trained" and "edge" in e.architecture, lambda e: e.kind == "trained",
                 lambda e: e.kind == "untrained" and "edge" in e.architecture):
        for e in entries:
            if pred(e):
                return e
    return entries[0] if entries else None


# ------------------------------------------------------------------------------------------
# Leave-one-source-out figures (from the models' metadata) and the MiniFASNet reference
# ------------------------------------------------------------------------------------------
REFERENCE_TABLE = Path(__file__).resolve().parent / "minifasnet_reference.json"


def read_loso(path: Path) -> dict | None:
    """The leave-one-source-out figures a model carries in its metadata (``metrics`` JSON, key ``loso``,
    written by scripts/embed_default.py from ``spoofsdk-train crossval``), or None."""
    try:
        loso = json.loads(_props(path).get("metrics", "{}")).get("loso")
    except (ValueError, AttributeError):
        return None
    if not isinstance(loso, dict) or "auc" not in loso.get("summary", {}):
        return None
    s = loso["summary"]
    domains = {d: v.get("auc") for d, v in loso.get("domains", {}).items()}
    # Replicates (the same recipe run with other seeds, scripts/embed_default.py --crossval ...): the figures
    # are the mean over every run, because one seed's fold moves by more than recipes differ. AUC mean and
    # worst are the runtime's own reading of the table (spoofsdk.model.loso_summary, `spoofsdk models`).
    auc = loso_summary({"loso": loso})
    if auc is None:
        return None
    runs = [s] + [r["summary"] for r in loso.get("replicates", []) if "auc" in r.get("summary", {})]
    bp = [r["bpcer_at_apcer_5"]["mean"] for r in runs if "bpcer_at_apcer_5" in r]
    return {"recipe": loso.get("recipe"), "recipe_hash": loso.get("recipe_hash"), "how": loso.get("how"),
            "auc_mean": auc["mean"], "auc_worst": auc["worst"],
            "bpcer_at_apcer_5_mean": sum(bp) / len(bp) if len(bp) == len(runs) else s.get("bpcer_at_apcer_5", {}).get("mean"),
            "seeds": auc["seeds"], "auc_mean_per_seed": auc["seed_means"],
            "domains": domains, "n_domains": sum(1 for v in domains.values() if _defined(v)),
            "file": _rel(path)}


def entry_loso(entry: ModelEntry) -> dict | None:
    """An entry's LOSO figures: from its shipped files first (the figures travel with them), then its FP32."""
    shipped = [p for p in entry.files() if p.parent.name == "assets"]
    for p in shipped + [p for p in entry.files() if p not in shipped]:
        if (loso := read_loso(p)) is not None:
            return loso
    return None


def _defined(v) -> bool:
    return v is not None and not (isinstance(v, float) and v != v)


def _reference_domain(name: str) -> str | None:
    """minifasnet_reference's domain name -> the LOSO tables' (``webcam/x`` -> ``x``, ``gc535/test`` -> ``gc535``;
    ``gc535/train`` has no LOSO counterpart). The rule of spoofsdk_train.crossval._load_reference."""
    short = name.split("/")[-1]
    if name.startswith("gc535"):
        return "gc535" if short == "test" else None
    return short


def reference_loso(domains: list[str], path: Path = REFERENCE_TABLE) -> dict | None:
    """The MiniFASNet pair's AUC and BPCER@APCER5 per domain (it never trained on any of ours: every
    domain is unseen for it), mean and worst over exactly ``domains`` (the LOSO tables' domains)."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    per: dict[str, dict] = {}
    for name, row in data.get("domains", {}).items():
        short = _reference_domain(name)
        pair = row.get("pair") if isinstance(row, dict) else None
        if short is not None and isinstance(pair, dict) and short not in per:
            per[short] = {"source": name, "auc": pair.get("auc"), "bpcer_at_apcer_5": pair.get("bpcer_at_apcer_5"),
                          "n_real": pair.get("n_real"), "n_attack": pair.get("n_attack")}
    used = [d for d in domains if d in per and _defined(per[d]["auc"])]
    if not used:
        return None
    aucs = [per[d]["auc"] for d in used]
    bpcer = [per[d]["bpcer_at_apcer_5"] for d in used if _defined(per[d]["bpcer_at_apcer_5"])]
    return {"name": "MiniFASNet pair (V2 + V1SE, mean P(live))", "models": data.get("models"), "command": data.get("command"),
            "file": _rel(path),
            "domains": {d: per[d] for d in used}, "missing": [d for d in domains if d not in used],
            "auc_mean": sum(aucs) / len(aucs), "auc_worst": min(aucs),
            "bpcer_at_apcer_5_mean": sum(bpcer) / len(bpcer) if bpcer else None, "n_domains": len(used)}


# ------------------------------------------------------------------------------------------
# Building FP32 models
# ------------------------------------------------------------------------------------------
def export_untrained(arch: str, out_dir: Path | None = None) -> Path:
    """Export ``spoofsdk_train.models`` architecture ``arch`` with its initial weights, through the trainer's
    own export (BatchNorm folded, the runtime's metadata) without the parity check (no data needed)."""
    import torch

    from spoofsdk_train.export import export_model
    from spoofsdk_train.models import build_model, get_spec
    from spoofsdk_train.recipe import load_recipe

    out_dir = out_dir or work_dir() / "models"
    path = out_dir / f"{arch}-untrained.onnx"
    if path.exists():
        return path
    recipe = load_recipe({"name": f"{arch}-untrained", "model": {"architecture": arch, "input_size": get_spec(arch).default_input_size,
                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                          "export": {"license": "benchmark artefact, not for use"}})
    torch.manual_seed(0)
    return export_model(build_model(arch), recipe, path, parity=False,
                        extra={"training_data": "none: untrained weights, for latency measurement only"})


def export_checkpoint(ckpt: Path, key: str) -> Path:
    """Export a trainer checkpoint with the threshold and metrics of its evaluate report (spoofsdk_train.export)."""
    from spoofsdk_train.export import export

    path = work_dir() / "models" / f"{key}-{_sha(ckpt)}.onnx"
    if not path.exists():
        report = json.loads((ckpt.parent / "report.json").read_text())
        export(ckpt, path, report=report, name=key)
    return path


def export_minifasnet(key: str) -> Path:
    """One model of the real MiniFASNet pair as a spoofsdk ONNX file (cached by checkpoint hash)."""
    from spoofsdk_train.minifasnet_reference import export_minifasnet as export
    from spoofsdk_train.models.minifasnet import CHECKPOINTS

    arch = MINIFASNET_PAIR[key]
    path = work_dir() / "models" / f"{key}-{_sha(minifasnet_dir() / CHECKPOINTS[arch].file)}.onnx"
    if not path.exists():
        export(arch, path)
    return path


# ------------------------------------------------------------------------------------------
# FP16 / INT8 variants
# ------------------------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_fp32(entry: ModelEntry) -> Path | None:
    """The entry's FP32 file, exported here when needed; None for a model shipped quantized only
    whose FP32 is not here (its shipped precision is measured alone)."""
    if entry.fp32 is None:
        if entry.kind == "untrained":
            entry.fp32 = export_untrained(entry.architecture)
        elif entry.kind == "reference":
            entry.fp32 = export_minifasnet(entry.key)
        elif entry.kind == "checkpoint":
            entry.fp32 = export_checkpoint(REPO / entry.note.split(",")[0], entry.key)
            entry.architecture = _props(entry.fp32).get("architecture", "?")
        elif entry.kind == "asset" and entry.paths:
            return None
        else:
            raise ValueError(f"{entry.key}: no FP32 file")
    entry.paths["fp32"] = entry.fp32
    return entry.fp32


def calibration_source(quick: bool = False) -> Path | None:
    """Real face crops for INT8 calibration: the trainer's manifest(s) in cache/, else the data set folders."""
    from spoofsdk_train.quantize import QuantizeError, find_manifests

    if not quick:
        try:
            if find_manifests(cache_dir()):
                return cache_dir()
        except QuantizeError:  # several groups tie without a model's crop policy; quantizing picks by it (or says which tie)
            return cache_dir()
    g = data_root() / "gc535" / "train"
    if g.is_dir():
        return g
    n = data_root() / "nuaa"
    return n if n.is_dir() else None


def _sibling(fp32: Path, precision: str) -> Path | None:
    """A quantized file made already beside the FP32 one (spoofsdk/assets/edgenet-int8.onnx,
    runs/edge/edge.int8.onnx): same folder, same metadata name and architecture, that precision."""
    base = _props(fp32)
    for p in sorted(fp32.parent.glob("*.onnx")):
        if p == fp32:
            continue
        props = _props(p)
        if (props.get("precision") == precision and props.get("name") == base.get("name")
                and props.get("architecture") == base.get("architecture")):
            return p
    return None


def ensure_variants(entry: ModelEntry, quick: bool = False, log=print) -> dict[str, Path]:
    """FP32, FP16 and INT8 files of ``entry`` (built and cached as needed)."""
    from spoofsdk_train.quantize import quantize

    fp32 = build_fp32(entry)
    if fp32 is None:
        log(f"{entry.key}: no FP32 file; only its shipped {', '.join(sorted(entry.paths))} measured")
        return entry.paths
    out_dir = work_dir() / "variants" / f"{entry.key}-{_sha(fp32)}"
    for precision in ("fp16", "int8"):
        if precision in entry.paths:
            continue
        existing = _sibling(fp32, precision) if entry.kind in ("trained", "asset") else None
        if existing is not None:
            entry.paths[precision] = existing
            continue
        target = out_dir / f"{entry.key}.{precision}.onnx"
        if not target.exists():
            calib = calibration_source(quick) if precision == "int8" else None
            if precision == "int8" and calib is None:
                log(f"{entry.key}: no calibration data; INT8 skipped")
                continue
            res = quantize(fp32, precision, calib=calib, out=target, calib_size=32 if quick else 200,
                           eval_size=0, rounds=0, report=False, verbose=False)
            log(f"{entry.key}: built {precision} ({res.out.stat().st_size / 1e6:.2f} MB)")
        entry.paths[precision] = target
    return entry.paths


def model_facts(path: Path) -> dict:
    """File size and SHA-256, parameters, MACs (metadata if present, else counted on the graph)."""
    props = _props(path)
    facts = {"size_bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if props.get("params") and props.get("macs"):
        facts["params"], facts["macs"] = int(float(props["params"])), int(float(props["macs"]))
    else:
        facts["params"], facts["macs"] = onnx_params_macs(path)
    facts["input_size"] = int(props.get("input_size", "0x0").split("x")[0] or 0)
    return facts


def dump(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
