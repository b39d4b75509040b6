"""The in-browser demo: a static page that runs the default model in the visitor's browser.

The page (``demo/index.html``, ``demo/app.js``, ``demo/pipeline.js``) detects faces with
YuNet and scores them with the spoofsdk model, both through onnxruntime-web (WebAssembly),
on the visitor's webcam. :mod:`spoofsdk.serve.demo/pipeline.js` mirrors the runtime's
preprocessing (:func:`spoofsdk.crop.crop_face`, :func:`spoofsdk.crop.to_tensor`), its quality
gates (:func:`spoofsdk.quality.measure`, :func:`spoofsdk.quality.assess`) and its stream-mode
decision over frames (:class:`spoofsdk.track.FaceTrack`), and refuses a model whose crop policy or
output kind it does not implement.

What the page needs besides its own files:

- ``model.onnx`` and ``config.json``: whatever :func:`spoofsdk.model.resolve_model_path`
  resolves (the embedded default unless told otherwise) and its metadata, written here.
- ``yunet.onnx``: the YuNet face detector (``--yunet-model``, ``$SPOOFSDK_YUNET_MODEL``, or a
  ``face_detection_yunet*.onnx`` shipped in ``spoofsdk/assets``).
- onnxruntime-web's ``ort.wasm.min.js``, ``ort-wasm-simd-threaded.mjs`` and
  ``ort-wasm-simd-threaded.wasm`` (14 MB, so not in git): from ``--ort-dir``,
  ``$SPOOFSDK_ORT_WEB``, ``spoofsdk/serve/demo/vendor/`` (filled when building a wheel), or the
  checkout's ``web/node_modules/onnxruntime-web/dist`` after ``npm ci --prefix web``.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..detect import YUNET_ENV
from ..errors import SpoofSDKError
from ..model import ASSETS_DIR, DEFAULT_MODEL, EMBEDDED_MODELS, SpoofModel
from ..quality import QualityConfig
from ..track import SmoothingConfig

__all__ = ["DemoError", "ORT_FILES", "ORT_ENV", "find_ort_dir", "find_yunet", "demo_config", "demo_files", "build_demo"]

DEMO_DIR = Path(__file__).resolve().parent / "demo"
PAGE_FILES = ("index.html", "app.js", "pipeline.js")
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_ENV = "SPOOFSDK_ORT_WEB"
REPO_ORT = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "onnxruntime-web" / "dist"

# What pipeline.js implements (it refuses the rest too): crop policies "pad" (the runtime's
# default: a square shifted inside the frame where it fits, padded with black where larger)
# and "shift_cap" (MiniFASNet's); outputs with two logits, one logit, or N logits.
CROP_POLICIES = ("pad", "shift_cap")
OUTPUTS = ("logits2", "logit1", "logitsN")
DETECTOR = {"detect_size": 320, "score_threshold": 0.7, "nms_threshold": 0.3, "top_k": 50, "input_size": 640}


class DemoError(SpoofSDKError):
    """The demo cannot be built or served (a file it needs is missing, or the model is not supported)."""


def find_ort_dir(ort_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding onnxruntime-web's files (see the module docstring for the search order)."""
    candidates = [Path(p) for p in (ort_dir, os.environ.get(ORT_ENV)) if p] + [DEMO_DIR / "vendor", REPO_ORT]
    for folder in candidates:
        if all((folder / name).is_file() for name in ORT_FILES):
            return folder
    if ort_dir or os.environ.get(ORT_ENV):
        where = Path(ort_dir or os.environ[ORT_ENV])
        missing = [n for n in ORT_FILES if not (where / n).is_file()]
        raise DemoError(f"onnxruntime-web files missing in {where}: {', '.join(missing)}")
    raise DemoError(
        "onnxruntime-web is not installed: from a checkout run `npm ci --prefix web`, or "
        "`npm install onnxruntime-web` anywhere and pass --ort-dir node_modules/onnxruntime-web/dist "
        f"(or set ${ORT_ENV})"
    )


def find_yunet(path: str | os.PathLike | None = None) -> Path:
    """The YuNet ONNX file: ``path``, ``$SPOOFSDK_YUNET_MODEL``, or one shipped in ``spoofsdk/assets``."""
    given = path or os.environ.get(YUNET_ENV)
    if given:
        if not Path(given).is_file():
            raise DemoError(f"YuNet model file not found: {given}")
        return Path(given)
    shipped = sorted(ASSETS_DIR.glob("face_detection_yunet*.onnx"))
    if shipped:
        return shipped[-1]
    raise DemoError(f"the demo needs the YuNet face detector: pass --yunet-model FILE or set ${YUNET_ENV}")


def demo_config(model: SpoofModel) -> dict[str, Any]:
    """What the page needs to know: the model's metadata, the gates it applies, the detector settings."""
    props = model.info.to_props()
    policy = getattr(model.info, "crop_policy", props.get("crop_policy", "pad"))
    if policy not in CROP_POLICIES:
        raise DemoError(f"the in-browser demo does not implement crop_policy {policy!r} of {model.source} (it implements: {', '.join(CROP_POLICIES)})")
    if model.info.output not in OUTPUTS:
        raise DemoError(f"the in-browser demo does not implement output {model.info.output!r} of {model.source} (it implements: {', '.join(OUTPUTS)})")
    return {
        "model": {**{k: v for k, v in props.items() if k not in ("metrics", "training_data", "quantization")}, "crop_policy": policy},
        "sha256": model.sha256,
        # Every gate of the runtime (size, border, exposure, blur; pipeline.js assessFace()) and its
        # stream-mode decision over frames (pipeline.js FaceTrack): the page labels a face as the
        # runtime would, and never `real` on one frame.
        "quality": QualityConfig().to_dict(),
        "smoothing": asdict(SmoothingConfig()),
        "detector": DETECTOR,
    }


def demo_model(model: str | os.PathLike | None = None, precision: str | None = None) -> SpoofModel:
    """The model the demo serves: the FP32 sibling of an embedded model where it has one, unless told otherwise.

    onnxruntime-web's WebAssembly INT8 kernels round differently from the native ones: the default
    INT8 model's P(live) differed by 1.2e-2 between browser and Python on a NUAA face, while FP32
    files agree to about 1e-6. The browser is no edge board; it gets the exact model.
    """
    name = DEFAULT_MODEL if model is None else model
    if precision is None and isinstance(name, str) and "fp32" in EMBEDDED_MODELS.get(name, {}):
        precision = "fp32"
    return SpoofModel(model, precision=precision)


def demo_files(
    model: str | os.PathLike | None = None,
    *,
    precision: str | None = None,
    yunet_model: str | os.PathLike | None = None,
    ort_dir: str | os.PathLike | None = None,
) -> dict[str, bytes | Path]:
    """Every file of the demo, by name: contents (``config.json``) or paths to copy/serve."""
    loaded = demo_model(model, precision)
    files: dict[str, bytes | Path] = {name: DEMO_DIR / name for name in PAGE_FILES}
    ort = find_ort_dir(ort_dir)
    files.update({name: ort / name for name in ORT_FILES})
    files["model.onnx"] = Path(loaded.source)
    files["yunet.onnx"] = find_yunet(yunet_model)
    files["config.json"] = json.dumps(demo_config(loaded), indent=1).encode()
    return files


def build_demo(out: str | os.PathLike, **kwargs: Any) -> list[Path]:
    """Write the demo to the folder ``out`` (created; existing files of the same names replaced). Returns the files."""
    files = demo_files(**kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        target = out / name
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content)
        written.append(target)
    return written
