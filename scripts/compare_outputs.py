#!/usr/bin/env python3
"""Compare spoofsdk model outputs between two machines (e.g. x86_64 host vs. arm64 board/emulator).

Three modes, run in this order (scripts/arm64-check.sh drives them):

``prepare``  (reference side) gather the models to compare into ``WORKDIR/models``:
             every ``*.onnx`` in ``spoofsdk/assets``, any extra model paths given, and the
             tiny fixture model of ``tests/conftest.build_tiny_model`` (so there is always
             something to compare), plus FP16 and INT8 variants of the tiny model when
             ``onnxconverter-common`` / ``onnxruntime.quantization`` are importable; and a few
             real images from the data into ``WORKDIR/images``: NUAA full frames (the face is
             found with the runtime's detectors and cut with ``spoofsdk.crop.crop_face``)
             and gc535 face crops.
``dump``     run every model on every image and write ``WORKDIR/<side>.json`` (detections,
             raw outputs and scores) and ``WORKDIR/<side>-crops.npz`` (the uint8 crops).
``check``    on the other side: dump again, then compare against the reference dump and
             print a table. Two comparisons per model:

             * ``model``: this side's model on the *reference side's crops* (identical
               inputs, so any difference is the inference engine/kernels);
             * ``pipeline``: detector boxes, crops and scores computed end to end on this side.

             Tolerances by the model's precision (from its metadata):
             fp32 max |d| <= 1e-4, fp16 max |d| <= 1e-3 (raw outputs and scores),
             int8 identical labels and max |d score| <= 0.02.
             Exits 1 on any difference beyond tolerance, 0 otherwise. The fp16/int8
             conversions of the tiny fixture are probes of the engine's fp16/int8 kernels:
             their differences are printed but do not fail the check (shipped models,
             extra arguments and the fp32 fixture do).

Only numpy, OpenCV, onnxruntime and spoofsdk are needed for ``dump``/``check``; ``prepare``
also needs ``onnx`` (for the tiny fixture). No timings are recorded: under emulation they say
nothing about a real board.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:  # the installed package; else this checkout's (the x86 reference side runs from the repository)
    import spoofsdk  # noqa: F401
except ImportError:
    if (REPO / "spoofsdk" / "__init__.py").is_file():
        sys.path.insert(0, str(REPO))
import click  # noqa: E402  (after the checkout fallback above)

from spoofsdk.clitools import Group, run_main  # noqa: E402

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-3, "int8": 0.02}
BOX_TOLERANCE_PX = 1.0  # detector boxes x86 vs arm, pixels in the full frame


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------
def _spread(files: list[Path], n: int) -> list[Path]:
    files = sorted(files)
    if not files or n <= 0:
        return []
    step = max(1, len(files) // n)
    return files[::step][:n]


def _tiny_fixture():
    """``tests/conftest.build_tiny_model``: the test suite's fixture model, loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("spoofsdk_test_fixtures", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build_tiny_model


def _tiny_variants(models_dir: Path, calib_images: list[Path]) -> list[str]:
    """Write the tiny fixture model (fp32) and, where the trainer's converter is installed, fp16 and
    int8 versions made by it (:mod:`spoofsdk_train.convert`, the same conversion as shipped models)."""
    from spoofsdk.crop import fit_face_crop, to_tensor
    from spoofsdk.errors import ImageError
    from spoofsdk.folders import read_image
    from spoofsdk.model import parse_metadata, read_metadata_props, write_metadata_props

    notes = []
    fp32 = _tiny_fixture()(input_size=64, seed=0)
    (models_dir / "tiny-fp32.onnx").write_bytes(fp32)
    notes.append("tiny-fp32.onnx: tests/conftest.build_tiny_model()")
    try:
        from spoofsdk_train.convert import convert
    except ImportError as e:  # the trainer is an optional extra on this side
        return notes + [f"tiny-fp16/int8 skipped: {e} (pip install -e ./trainer)"]
    info = parse_metadata(read_metadata_props(fp32))
    crops = []
    for p in calib_images:
        try:
            crops.append(fit_face_crop(read_image(p), info.input_size))
        except ImageError:
            continue
    for precision in ("fp16", "int8"):
        try:
            tensors = to_tensor(crops, info.color_order, info.mean, info.std) if crops else None
            data, how = convert(fp32, precision, tensors)
            data = write_metadata_props(data, {**read_metadata_props(data), "name": f"tiny-{precision}"})
            (models_dir / f"tiny-{precision}.onnx").write_bytes(data)
            notes.append(f"tiny-{precision}.onnx: spoofsdk_train.convert ({how['tool']})")
        except Exception as e:  # noqa: BLE001 - a probe: its failure is reported, not fatal
            notes.append(f"tiny-{precision} skipped: {type(e).__name__}: {e}")
    return notes


def cmd_prepare(args) -> int:
    work = Path(args.workdir)
    models_dir, images_dir = work / "models", work / "images"
    for d in (models_dir, images_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    data = Path(args.data)
    manifest: dict = {"models": [], "images": [], "notes": []}

    # images: a few NUAA full frames (real and attack, spread over subjects) and gc535 crops
    for kind, folder, n in (
        ("frame", data / "nuaa" / "real", args.nuaa),
        ("frame", data / "nuaa" / "attack", args.nuaa),
        ("crop", data / "gc535" / "test" / "real", args.gc535),
        ("crop", data / "gc535" / "test" / "attack", args.gc535),
    ):
        if not folder.is_dir():
            print(f"prepare: {folder} not found, skipping", file=sys.stderr)
            continue
        for src in _spread(list(folder.rglob("*.jpg")), n):
            rel = src.relative_to(data)
            name = "__".join(rel.parts)
            shutil.copyfile(src, images_dir / name)
            manifest["images"].append({"file": name, "kind": kind, "source": str(rel)})
    if not manifest["images"]:
        print("prepare: no images found under", data, file=sys.stderr)
        return 2

    # models: embedded assets, extra paths, the tiny fixture (+ fp16/int8 variants)
    from spoofsdk.detect import YUNET_MODEL
    from spoofsdk.model import ASSETS_DIR

    # The bundled YuNet detector is compared as a detector (see _detectors), not as a spoofsdk model.
    sources = [(p, "spoofsdk/assets") for p in sorted(ASSETS_DIR.glob("*.onnx")) if p.name != YUNET_MODEL.name]
    sources += [(Path(p), "argument") for p in args.models]
    for src, origin in sources:
        if not src.is_file():
            print(f"prepare: model {src} not found", file=sys.stderr)
            return 2
        name = src.name
        if (models_dir / name).exists():
            name = f"{hashlib.sha256(str(src).encode()).hexdigest()[:8]}-{name}"
        shutil.copyfile(src, models_dir / name)
        manifest["models"].append({"file": name, "origin": origin, "source": str(src)})
    calib = [images_dir / i["file"] for i in manifest["images"] if i["kind"] == "crop"]
    manifest["notes"] += _tiny_variants(models_dir, calib)
    for f in sorted(models_dir.glob("tiny-*.onnx")):
        # The fp32 fixture is checked strictly; its fp16/int8 conversions are probes of the
        # engine's fp16/int8 kernels on this CPU: reported, but they do not fail the check.
        strict = f.name == "tiny-fp32.onnx"
        manifest["models"].append({"file": f.name, "origin": "tests/conftest.py", "source": "generated", "strict": strict})
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"prepare: {len(manifest['models'])} models, {len(manifest['images'])} images -> {work}")
    for n in manifest["notes"]:
        print("  " + n)
    return 0


# ---------------------------------------------------------------------------------------------
# dump
# ---------------------------------------------------------------------------------------------
def _detectors(yunet: str | None):
    from spoofsdk.detect import HaarDetector, YuNetDetector

    # YuNet is bundled with spoofsdk: compared always (another file when given).
    return {"haar": HaarDetector(), "yunet": YuNetDetector(yunet if yunet and Path(yunet).is_file() else None)}


def _outputs(model, tensor: np.ndarray) -> list[float]:
    out = model.session.run([model.output_name], {model.input_name: tensor})[0]
    return np.asarray(out, dtype=np.float64).ravel().tolist()


def dump(work: Path, side: str, yunet: str | None, ref_crops: dict | None = None) -> tuple[dict, dict]:
    """Run every model on every image; returns (results, crops). ``ref_crops`` adds the identical-input run."""
    from spoofsdk.crop import crop_face, to_tensor
    from spoofsdk.folders import read_image
    from spoofsdk.model import SpoofModel

    manifest = json.loads((work / "manifest.json").read_text())
    detectors = _detectors(yunet)
    frames = {}
    detections = {}
    for im in manifest["images"]:
        img = read_image(work / "images" / im["file"])  # ImageError names the file
        frames[im["file"]] = img
        if im["kind"] == "frame":
            detections[im["file"]] = {
                dn: [list(map(float, d.box)) for d in det.detect(img)] for dn, det in detectors.items()
            }
    # the face used for frames: the largest face of the first detector that finds one (yunet first)
    order = [d for d in ("yunet", "haar") if d in detectors]

    results: dict = {
        "side": side,
        "machine": platform.machine(),
        "x86_without_vnni": _x86_without_vnni(),
        "qemu_cpu": os.environ.get("QEMU_CPU", ""),
        "versions": _versions(),
        "detectors": list(detectors),
        "detections": detections,
        "models": {},
    }
    crops: dict[str, np.ndarray] = {}
    for m in manifest["models"]:
        path = work / "models" / m["file"]
        model = SpoofModel(path, threads=1)
        info = model.info
        try:
            eight_bit = json.loads(info.extra.get("quantization", "{}")).get("reduce_range") is False
        except ValueError:
            eight_bit = False
        entry = {
            "sha256": model.sha256,
            "precision": info.precision,
            "eight_bit_weights": eight_bit,
            "threshold": info.threshold,
            "input_size": info.input_size,
            "origin": m["origin"],
            "strict": m.get("strict", True),
            "images": {},
        }
        for im in manifest["images"]:
            img = frames[im["file"]]
            if im["kind"] == "frame":
                box, used = None, None
                for dn in order:
                    if detections[im["file"]][dn]:
                        box, used = detections[im["file"]][dn][0], dn
                        break
                crop = None if box is None else crop_face(img, box, info.crop_scale, info.input_size).image
            else:
                h, w = img.shape[:2]
                crop, used, box = crop_face(img, (0, 0, w, h), 1.0, info.input_size).image, "none", [0, 0, w, h]
            key = f"{m['file']}|{im['file']}"
            rec: dict = {"face": crop is not None}
            if crop is not None:
                crops[key] = crop
                t = to_tensor([crop], info.color_order, info.mean, info.std)
                rec.update(detector=used, box=box, outputs=_outputs(model, t), score=float(model.predict(t)[0]))
            if ref_crops is not None and key in ref_crops:
                if crop is not None and np.array_equal(ref_crops[key], crop):
                    # The same bytes as the reference side's crop: the run above WAS the identical-input
                    # run (one session, one input, one result); running it again only costs emulated time.
                    rec["ref_input_outputs"], rec["ref_input_score"] = rec["outputs"], rec["score"]
                    rec["ref_input_same_crop"] = True
                else:
                    rt = to_tensor([ref_crops[key]], info.color_order, info.mean, info.std)
                    rec["ref_input_outputs"] = _outputs(model, rt)
                    rec["ref_input_score"] = float(model.predict(rt)[0])
            entry["images"][im["file"]] = rec
        results["models"][m["file"]] = entry
    return results, crops


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "onnxruntime", "cv2", "spoofsdk"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = "?"
    return out


def _save(work: Path, side: str, results: dict, crops: dict) -> None:
    (work / f"{side}.json").write_text(json.dumps(results, indent=1))
    np.savez_compressed(work / f"{side}-crops.npz", **{k.replace("/", "%"): v for k, v in crops.items()})


def _load_crops(path: Path) -> dict:
    with np.load(path) as z:
        return {k.replace("%", "/"): z[k] for k in z.files}


def cmd_dump(args) -> int:
    work = Path(args.workdir)
    results, crops = dump(work, args.side, args.yunet)
    _save(work, args.side, results, crops)
    print(f"dump: {len(results['models'])} models -> {work / (args.side + '.json')} ({platform.machine()})")
    return 0


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------
def _maxdiff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _x86_without_vnni() -> bool:
    """An x86 CPU whose U8S8 kernels use vpmaddubsw (no AVX-512 VNNI, no AVX-VNNI): it clips products of 8-bit
    weights into int16 (docs/QUANTIZATION.md, "reduce_range"), so its own INT8 outputs are not the reference."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" not in flags and "avx_vnni" not in flags


def compare(ref: dict, cur: dict, ref_crops: dict, cur_crops: dict) -> tuple[list[dict], list[str], list[str]]:
    """Returns (table rows, problems that fail the check, notes on probe models that do not)."""
    rows, problems, notes = [], [], []
    if set(ref["models"]) != set(cur["models"]):
        problems.append(f"model sets differ: ref {sorted(ref['models'])} vs this side {sorted(cur['models'])}")
    # detectors (independent of the models)
    box_d, face_mismatch = 0.0, 0
    for img, per in ref["detections"].items():
        for dn, boxes in per.items():
            other = cur["detections"].get(img, {}).get(dn)
            if other is None:
                continue
            if len(other) != len(boxes):
                face_mismatch += 1
                problems.append(f"{dn} finds {len(other)} faces in {img}, reference {len(boxes)}")
                continue
            if boxes:
                box_d = max(box_d, _maxdiff(boxes, other))
    if box_d > BOX_TOLERANCE_PX:
        problems.append(f"detector boxes differ by up to {box_d:.3f} px (tolerance {BOX_TOLERANCE_PX})")
    for name in sorted(set(ref["models"]) & set(cur["models"])):
        r, c = ref["models"][name], cur["models"][name]
        strict = r.get("strict", True)
        prec = r["precision"]
        # An INT8 file with 8-bit weights scored on an x86 host without VNNI: the host clips (saturating int16
        # pair sums), arm64 does not, so their scores differ by design of the x86 kernel. Labels must still
        # agree; the score difference is reported, not failed (known defect of 8-bit weights on such CPUs).
        clipped_ref = prec == "int8" and r.get("eight_bit_weights", False) and (
            ref.get("x86_without_vnni", False) or cur.get("x86_without_vnni", False))
        sink = problems if strict else notes
        tol = TOLERANCE[prec]
        if r["sha256"] != c["sha256"]:
            problems.append(f"{name}: different files on the two sides")
        n = 0
        d_out = d_score = 0.0  # identical inputs
        flips = 0
        p_score, p_flips, p_pix = 0.0, 0, 0  # pipeline
        for img, rr in r["images"].items():
            cc = c["images"].get(img)
            if cc is None or rr["face"] != cc["face"]:
                problems.append(f"{name} {img}: face found on one side only")
            if not rr["face"] or cc is None:
                continue
            n += 1
            if "ref_input_outputs" not in cc:
                problems.append(f"{name} {img}: no identical-input run")
                continue
            th = r["threshold"]
            scores = (rr["score"], cc["ref_input_score"]) + ((cc["score"],) if cc["face"] else ())
            if not all(math.isfinite(v) for v in scores):  # NaN: no score (max() below would skip it silently)
                problems.append(f"{name} {img}: a side gave no score (non-finite model output)")
                continue
            d_out = max(d_out, _maxdiff(rr["outputs"], cc["ref_input_outputs"]))
            d_score = max(d_score, abs(rr["score"] - cc["ref_input_score"]))
            flips += (rr["score"] >= th) != (cc["ref_input_score"] >= th)
            if not cc["face"]:
                continue
            p_score = max(p_score, abs(rr["score"] - cc["score"]))
            p_flips += (rr["score"] >= th) != (cc["score"] >= th)
            key = f"{name}|{img}"
            if key in ref_crops and key in cur_crops:
                p_pix = max(p_pix, int(np.max(np.abs(ref_crops[key].astype(int) - cur_crops[key].astype(int)))))
        if clipped_ref:
            ok = flips == 0 and p_flips == 0
            if d_score > tol:
                notes.append(f"{name} (int8, 8-bit weights): max |d score| {d_score:.2e} > {tol:g} because the x86 side has no "
                             f"VNNI and clips (docs/QUANTIZATION.md); labels agree: {flips == 0 and p_flips == 0}")
        elif prec == "int8":
            ok = flips == 0 and d_score <= tol
        else:
            ok = d_out <= tol and d_score <= tol
        if not ok:
            sink.append(
                f"{name} ({prec}): identical inputs give max |d output| {d_out:.2e}, max |d score| {d_score:.2e}, "
                f"{flips} label flips (tolerance {tol:g})"
            )
        # end to end: same tolerance on the score, labels must agree
        p_ok = p_flips == 0 and (p_score <= tol or clipped_ref)
        if not p_ok:
            sink.append(
                f"{name} ({prec}): end-to-end (own detection and crop) max |d score| {p_score:.2e}, "
                f"{p_flips} label flips, crop pixels differ by up to {p_pix}"
            )
        rows.append(dict(model=name, precision=prec, n=n, d_out=d_out, d_score=d_score, flips=flips, tol=tol,
                         p_score=p_score, p_flips=p_flips, p_pix=p_pix, ok=ok and p_ok, strict=strict,
                         labels_only=clipped_ref and max(d_score, p_score) > tol))
    rows.append(dict(model="(detectors: " + ",".join(ref["detectors"]) + ")", precision="-", n=len(ref["detections"]),
                     d_out=box_d, d_score=float("nan"), flips=face_mismatch, tol=BOX_TOLERANCE_PX,
                     p_score=float("nan"), p_flips=0, p_pix=0, ok=box_d <= BOX_TOLERANCE_PX and not face_mismatch,
                     strict=True))
    return rows, problems, notes


def print_table(rows: list[dict], ref: dict, cur: dict) -> None:
    def side(d):
        v = d["versions"]
        cpu = f" QEMU_CPU={d['qemu_cpu']}" if d.get("qemu_cpu") else ""
        return f"{d['machine']}{cpu} (python {v['python']}, onnxruntime {v['onnxruntime']}, numpy {v['numpy']}, opencv {v['cv2']})"

    print(f"reference: {side(ref)}")
    print(f"this side: {side(cur)}")
    hdr = f"{'model':<34} {'prec':<5} {'n':>3} {'max|d out|':>11} {'max|d score|':>12} {'flips':>5} {'tol':>7} | {'e2e |d score|':>13} {'e2e flips':>9} {'crop px':>7}  result"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ds = "" if np.isnan(r["d_score"]) else f"{r['d_score']:.2e}"
        ps = "" if np.isnan(r["p_score"]) else f"{r['p_score']:.2e}"
        print(
            f"{r['model'][:34]:<34} {r['precision']:<5} {r['n']:>3} {r['d_out']:>11.2e} {ds:>12} {r['flips']:>5} "
            f"{r['tol']:>7g} | {ps:>13} {r['p_flips']:>9} {r['p_pix']:>7}  "
            + ("OK" if r["ok"] else "DIFF" if r["strict"] else "diff (probe, not failing)")
        )
    print("(detectors row: max |d box| in px, face-count mismatches under 'flips'; e2e = detection+crop+model on this side)")


def cmd_check(args) -> int:
    work = Path(args.workdir)
    ref = json.loads((work / f"{args.ref}.json").read_text())
    ref_crops = _load_crops(work / f"{args.ref}-crops.npz")
    cur, cur_crops = dump(work, args.side, args.yunet, ref_crops=ref_crops)
    _save(work, args.side, cur, cur_crops)
    rows, problems, notes = compare(ref, cur, ref_crops, cur_crops)
    print_table(rows, ref, cur)
    if notes:
        print("\nprobe models (converted test fixture; reported, not failing):")
        for p in notes:
            print("  - " + p)
    if problems:
        print("\nDIFFERENCES:")
        for p in problems:
            print("  - " + p)
        return 1
    n_strict = sum(1 for r in rows[:-1] if r["strict"])
    labels_only = [r["model"] for r in rows[:-1] if r["strict"] and r.get("labels_only")]
    print(f"\nall {n_strict} checked models within tolerance (fp32 {TOLERANCE['fp32']:g}, fp16 {TOLERANCE['fp16']:g}, "
          f"int8 same labels and |d score| <= {TOLERANCE['int8']:g})"
          + (f"; held to same labels only, their score difference reported above: {', '.join(labels_only)}" if labels_only else ""))
    return 0


_WORKDIR = click.option("--workdir", required=True, type=click.Path(file_okay=False), help="Work folder shared by both sides.")


@click.group(cls=Group, help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    pass


@cli.command("prepare")
@_WORKDIR
@click.option("--data", default=lambda: os.environ.get("SPOOFSDK_DATA", str(REPO.parent / "shared" / "data")), show_default="$SPOOFSDK_DATA or ../shared/data")
@click.option("--nuaa", type=click.IntRange(min=0), default=3, show_default=True, help="NUAA frames per class.")
@click.option("--gc535", type=click.IntRange(min=0), default=4, show_default=True, help="gc535 crops per class.")
@click.argument("models", nargs=-1)
def prepare_command(**options) -> int:
    """Collect models and images into WORKDIR (reference side)."""
    return cmd_prepare(SimpleNamespace(**options))


def _side_options(f):
    f = click.option("--yunet", default=lambda: os.environ.get("SPOOFSDK_YUNET_MODEL"), help="YuNet model [$SPOOFSDK_YUNET_MODEL].")(f)
    f = click.option("--side", required=True, help="Name of this side, e.g. x86 or arm64-a72.")(f)
    return _WORKDIR(f)


@cli.command("dump")
@_side_options
def dump_command(**options) -> int:
    """Run every model on every image and write WORKDIR/<side>.json."""
    return cmd_dump(SimpleNamespace(**options))


@cli.command("check")
@_side_options
@click.option("--ref", default="x86", show_default=True, help="Side name of the reference dump.")
def check_command(**options) -> int:
    """Dump this side, compare with the reference dump; exit status 1 beyond tolerance."""
    return cmd_check(SimpleNamespace(**options))


def main(argv=None) -> int:
    return run_main(cli, argv, prog_name="compare_outputs.py")


if __name__ == "__main__":
    sys.exit(main())
