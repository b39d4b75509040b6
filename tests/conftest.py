"""Shared fixtures: where the data lives, and small ONNX models built on the fly.

Data-dependent tests read ``../shared/data`` (override with $SPOOFSDK_DATA). Without it they
skip with the reason, except under CI (CI=true), where missing data is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "SPOOFSDK_DATA"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"


def _shared() -> Path:
    return Path(os.environ.get("SPOOFSDK_SHARED", REPO.parent / "shared"))


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV, _shared() / "data"))


def yunet_file() -> Path:
    return Path(os.environ.get("SPOOFSDK_YUNET_MODEL", _shared() / "models" / "yunet" / YUNET_FILE))


def missing(message: str) -> None:
    """Something a test needs is absent: skip with the reason, or fail under CI=true (CI installs everything)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require(path: Path, what: str) -> Path:
    """Return ``path`` if it exists; otherwise skip (or fail under CI=true) saying what is missing."""
    if path.exists():
        return path
    missing(f"{what} not found at {path} (set ${DATA_ENV} or put ../shared beside the repository)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(data_root(), "face anti-spoofing data")


@pytest.fixture(scope="session")
def nuaa_dir(data_dir) -> Path:
    return require(data_dir / "nuaa", "NUAA frames")


@pytest.fixture(scope="session")
def gc535_dir(data_dir) -> Path:
    return require(data_dir / "gc535", "gc535 face crops")


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    return require(yunet_file(), "YuNet model")


def sample_files(folder: Path, n: int, pattern: str = "*.jpg") -> list[Path]:
    """``n`` files spread evenly over a sorted recursive listing (deterministic small slices)."""
    files = sorted(folder.rglob(pattern))
    if not files:
        pytest.fail(f"no {pattern} files under {folder}")
    step = max(1, len(files) // n)
    return files[::step][:n]


def build_tiny_model(
    input_size: int = 64,
    output: str = "logits2",
    metadata: dict | None = None,
    seed: int = 0,
    drop_keys: tuple[str, ...] = (),
    fixed_batch: bool | int = False,
) -> bytes:
    """A small ONNX classifier (conv -> relu -> global average pool -> linear) with spoofsdk metadata.

    Its score depends on the image (mean brightness and texture), so tests can check that
    different faces get different scores without a trained model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n_out = {"logits2": 2, "logit1": 1, "logitsN": 3}[output]
    w = rng.normal(0, 0.5, size=(8, 3, 3, 3)).astype(np.float32)
    b = np.zeros(8, dtype=np.float32)
    fc = rng.normal(0, 1.0, size=(8, n_out)).astype(np.float32)
    fcb = np.zeros(n_out, dtype=np.float32)
    batch = "N" if fixed_batch is False else 1 if fixed_batch is True else int(fixed_batch)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, input_size, input_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, n_out])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fcb, "fcb"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    props = {
        "spoofsdk_format": "1",
        "name": "tiny",
        "architecture": "tiny-test",
        "precision": "fp32",
        "input_size": f"{input_size}x{input_size}",
        "color_order": "RGB",
        "mean": "0.5,0.5,0.5",
        "std": "0.5,0.5,0.5",
        "crop_scale": "1.5",
        "output": output,
        "class_order": {"logits2": "spoof,real", "logit1": "real", "logitsN": "spoof,real,spoof"}[output],
        "threshold": "0.5",
        "training_data": "none (test fixture)",
    }
    props.update(metadata or {})
    for k in drop_keys:
        props.pop(k, None)
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    path.write_bytes(build_tiny_model())
    return path


def write_video(path: Path, frames: list[Path], fps: float = 10.0) -> Path:
    """Write image files as a video (MJPG for .avi, mp4v for .mp4) with OpenCV; returns ``path``."""
    import cv2

    images = [cv2.imread(str(f)) for f in frames]
    h, w = images[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for image in images:
        writer.write(image)
    writer.release()
    return path


def train_in_two_processes(out: Path, data: list[Path], overrides: list[str], recipe: str = "edgenet") -> None:
    """``spoofsdk-train train`` under torch.distributed.run with two CPU processes (gloo); fails with its stderr."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "spoofsdk_train.cli", "train", "--recipe", recipe, "--out", str(out), "--quiet"]
    for d in data:
        cmd += ["--data", str(d)]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # a hang guard, not a speed check
    assert proc.returncode == 0, proc.stderr[-3000:]
