"""spoofsdk: face anti-spoofing (presentation attack detection) for edge devices.

``import spoofsdk`` is cheap: the public names below are imported on first use, so OpenCV
and onnxruntime load only when a checker or model is actually needed (onnxruntime only when
a model is loaded).

    from spoofsdk import LivenessChecker
    checker = LivenessChecker("model.onnx")
    result = checker.check("photo.jpg")
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version as _dist_version
from typing import TYPE_CHECKING, Any

try:  # written once, in pyproject.toml; read back from the installed package's metadata
    __version__ = _dist_version("spoofsdk")
except PackageNotFoundError:  # a source tree on sys.path without `pip install`
    __version__ = "0+unknown"

# public name -> module that defines it
_LAZY = {
    "LivenessChecker": "checker",
    "FaceResult": "results",
    "FrameResult": "results",
    "Label": "results",
    "Reason": "results",
    "QualityConfig": "quality",
    "SmoothingConfig": "track",
    "SpoofModel": "model",
    "ModelInfo": "model",
    "load_model": "model",
    "crop_face": "crop",
    "HaarDetector": "detect",
    "YuNetDetector": "detect",
    "Detection": "detect",
    "open_source": "sources",
    "read_image": "sources",
    "SpoofSDKError": "errors",
    "ImageError": "errors",
    "ModelError": "errors",
    "MetadataError": "errors",
    "DetectorError": "errors",
    "SourceError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spoofsdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the real imports
    from .checker import LivenessChecker
    from .crop import crop_face
    from .detect import Detection, HaarDetector, YuNetDetector
    from .errors import DetectorError, ImageError, MetadataError, ModelError, SourceError, SpoofSDKError
    from .model import ModelInfo, SpoofModel, load_model
    from .quality import QualityConfig
    from .results import FaceResult, FrameResult, Label, Reason
    from .sources import open_source, read_image
    from .track import SmoothingConfig
