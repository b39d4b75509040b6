"""What a user installs: the wheel's contents, the version, the licence, typing (issue 12 items 4, 6, 17)."""
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import spoofsdk
from spoofsdk.results import LABELS, FaceResult, FrameResult, Label, Reason

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_written_once():
    # pyproject.toml holds it; the package reads it back from the installed metadata.
    from importlib.metadata import version

    assert spoofsdk.__version__ == version("spoofsdk")
    assert re.search(r'^version = "' + re.escape(spoofsdk.__version__) + '"', (ROOT / "pyproject.toml").read_text(), re.M)
    sources = [p for p in (ROOT / "spoofsdk").rglob("*.py") if f'"{spoofsdk.__version__}"' in p.read_text()]
    assert sources == []


def test_licence_and_changelog():
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {spoofsdk.__version__}" in changelog


def test_labels_and_reasons_are_str_enums_with_unchanged_json():
    face = FaceResult(label=Label.UNKNOWN, reason=Reason.TOO_DARK)
    assert isinstance(face.label, str) and face.label == "unknown" and f"{face.reason}" == "too_dark"
    assert {Reason.NO_FACE: 1}["no_face"] == 1 and str(Label.REAL) == "real"
    assert json.loads(FrameResult.from_faces([face]).to_json())["reason"] == "too_dark"
    assert json.dumps({"label": Label.SPOOF}) == '{"label": "spoof"}'
    assert LABELS == ("real", "spoof", "unknown")


@pytest.mark.slow
def test_wheel_ships_yunet_its_licence_and_py_typed_but_no_trainer(tmp_path):
    from importlib.metadata import PackageNotFoundError, version

    try:
        setuptools_major = int(version("setuptools").split(".")[0])
    except PackageNotFoundError:
        setuptools_major = 0
    if setuptools_major < 68:  # the build backend pyproject.toml names; building without isolation needs it here
        pytest.skip("building the wheel without isolation needs setuptools>=68 in this environment")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("spoofsdk-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "spoofsdk/assets/face_detection_yunet_2023mar.onnx" in names
    assert "spoofsdk/assets/face_detection_yunet_2023mar.LICENSE" in names
    assert "spoofsdk/py.typed" in names and "spoofsdk/bench.py" in names
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    assert not any(n.startswith(("trainer/", "spoofsdk_train/", "tests/", "benchmarks/")) for n in names)
