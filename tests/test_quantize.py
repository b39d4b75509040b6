"""spoofsdk_train.quantize: FP16/INT8 conversion keeps the contract (metadata, IO types, scores) and refuses bad input.

Built on small ONNX models from conftest.build_tiny_model; no trained model and no torch needed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, build_tiny_model
from spoofsdk.errors import MetadataError
from spoofsdk.model import SpoofModel, read_metadata_props

pytest.importorskip("spoofsdk_train", reason="the trainer (pip install -e ./trainer) is not installed")
pytest.importorskip("onnx", reason="onnx (a trainer dependency) is not installed")
pytest.importorskip("onnxconverter_common", reason="onnxconverter-common (a trainer dependency) is not installed")

from spoofsdk_train import quantize as q


def _io_types(data: bytes) -> tuple[list[int], list[int]]:
    import onnx

    m = onnx.load_from_string(data)
    return [i.type.tensor_type.elem_type for i in m.graph.input], [o.type.tensor_type.elem_type for o in m.graph.output]


def _face_like(rng: np.random.Generator, size: int, bright: int, noise: float) -> np.ndarray:
    """A smooth blob on a background plus grain: an image with face-crop statistics, not a random tensor."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    blob = np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.08)
    img = np.stack([bright * (0.5 + 0.5 * blob) * c for c in (0.8, 0.9, 1.0)], axis=-1)
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def crops_dir(tmp_path_factory) -> Path:
    """A labelled folder of face-crop-like images (<= 256 px, so taken as crops): grainy dark 'real', clean bright 'attack'."""
    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    for label, bright, noise in (("real", 120, 25.0), ("attack", 200, 3.0)):
        (root / label).mkdir()
        for i in range(24):
            cv2.imwrite(str(root / label / f"{i:03d}.png"), _face_like(rng, 96 + i, bright + i, noise))
    return root


@pytest.fixture(scope="module")
def fp32_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    path.write_bytes(build_tiny_model(input_size=64))
    return path


def _check_contract(fp32_path: Path, out: Path, precision: str) -> tuple[SpoofModel, SpoofModel]:
    before, after = read_metadata_props(fp32_path.read_bytes()), read_metadata_props(out.read_bytes())
    assert after["precision"] == precision
    assert {k: v for k, v in after.items() if k not in ("precision", "quantization")} == {
        k: v for k, v in before.items() if k != "precision"
    }
    assert json.loads(after["quantization"])["tool"]
    assert _io_types(out.read_bytes()) == _io_types(fp32_path.read_bytes())  # float32 in, float32 out
    m32, mq = SpoofModel(fp32_path), SpoofModel(out, precision=precision)
    assert mq.info.precision == precision and mq.info.input_size == m32.info.input_size
    return m32, mq


def test_fp16_keeps_metadata_io_and_scores(fp32_path, crops_dir, tmp_path):
    out = tmp_path / "tiny.fp16.onnx"
    res = q.quantize(fp32_path, "fp16", calib=crops_dir, out=out, rounds=3, calib_size=8, eval_size=30, verbose=False)
    m32, m16 = _check_contract(fp32_path, out, "fp16")
    assert res.report["max_abs_dscore"] < 0.01
    crops = [cv2.imread(str(p)) for p in sorted(crops_dir.rglob("*.png"))[:10]]
    crops = [cv2.resize(c, (64, 64)) for c in crops]
    np.testing.assert_allclose(m16.score_crops(crops), m32.score_crops(crops), atol=0.01)


def test_int8_keeps_metadata_io_and_labels(fp32_path, crops_dir, tmp_path):
    out = tmp_path / "tiny.int8.onnx"
    res = q.quantize(fp32_path, "int8", calib=crops_dir, out=out, rounds=3, calib_size=16, eval_size=32, verbose=False)
    m32, m8 = _check_contract(fp32_path, out, "int8")
    how = json.loads(read_metadata_props(out.read_bytes())["quantization"])
    assert how["format"] == "QDQ" and how["per_channel"] is True and how["calibration_samples"] == 16
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    rep = res.report
    assert rep["decision_agreement"] >= 0.9  # int8 labels mostly agree with fp32
    assert rep["max_abs_dscore"] < 0.2
    for key in ("auc", "eer", "acer", "bpcer_at_apcer_5"):
        assert key in rep["fp32"] and key in rep["quantized"] and key in rep["delta"]
    # Latency is reported as a same-run ratio; its value is not asserted (shared machine).
    assert rep["latency"]["ratio_quantized_to_fp32"] > 0 and rep["latency"]["rounds"] == 3
    saved = json.loads(res.report_path.read_text())
    assert saved["size_bytes"]["int8"] == out.stat().st_size
    assert "INT8" in q.format_report(rep)


def _dequantized_inputs(data: bytes, op_type: str) -> bool:
    """Whether the weights of the ``op_type`` nodes come out of a DequantizeLinear (INT8 weights).

    Weights, not the data input: a neighbour's output is quantized/dequantized on its own account."""
    import onnx

    graph = onnx.load_from_string(data).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    return any(made_by.get(n.input[1]) == "DequantizeLinear" for n in graph.node if n.op_type == op_type)


def test_int8_keeps_the_named_nodes_in_fp32_and_refuses_a_name_that_matches_none(fp32_path, crops_dir, tmp_path):
    """``fp32_nodes`` (CLI --fp32-nodes): nodes whose names start with a prefix stay FP32; a typo is an error, not a no-op."""
    common = dict(calib=crops_dir, rounds=1, calib_size=8, eval_size=8, verbose=False)
    plain = q.quantize(fp32_path, "int8", out=tmp_path / "plain.onnx", **common)
    kept = q.quantize(fp32_path, "int8", out=tmp_path / "kept.onnx", fp32_nodes=("Gemm",), **common)
    assert _dequantized_inputs(plain.out.read_bytes(), "Gemm")  # quantized by default...
    assert not _dequantized_inputs(kept.out.read_bytes(), "Gemm")  # ...FP32 when named
    assert json.loads(read_metadata_props(kept.out.read_bytes())["quantization"])["fp32_nodes"] == ["Gemm"]
    with pytest.raises(q.QuantizeError, match="no node"):
        q.quantize(fp32_path, "int8", out=tmp_path / "typo.onnx", fp32_nodes=("/lwo/",), **common)
    with pytest.raises(q.QuantizeError, match="empty prefix"):
        q.quantize(fp32_path, "int8", out=tmp_path / "typo.onnx", fp32_nodes=("",), **common)
    assert not (tmp_path / "typo.onnx").exists()
    bare = q.quantize(fp32_path, "int8", out=tmp_path / "bare.onnx", fp32_nodes="Gemm", **common)  # one prefix, not a tuple
    assert not _dequantized_inputs(bare.out.read_bytes(), "Gemm")


def _group_manifest(group: Path, name: str, size: int, method: str = "random stratified (identities unknown)") -> None:
    """An empty prepared set ``group/name/manifest.json``: only the fields find_manifests ranks by."""
    (group / name).mkdir(parents=True)
    manifest = {"version": 1, "dataset": name, "crop": {"faces": "crop", "crop_scale": None, "size": size}, "split": {"method": method}, "items": []}
    (group / name / "manifest.json").write_text(json.dumps(manifest))


def test_find_manifests_prefers_source_splits_to_random_recuts_then_the_crop_policy_and_names_ties(fp32_path, tmp_path):
    """cache/random_64 (a `resplit` re-cut) sorts before cache/s1.0_64 but must not win: its test part holds
    train frames. The crop policy decides next; groups still equal raise rather than let sort order pick."""
    from spoofsdk_train.data import RESPLIT_METHOD

    info = SpoofModel(fp32_path).info
    assert info.input_size == 64

    def chosen(path) -> set[str]:
        return {Path(m["_dir"]).parent.name for m in q.find_manifests(path, info)}

    cache = tmp_path / "cache"
    for name in ("gc535", "nuaa"):
        _group_manifest(cache / "random_64", name, 64, RESPLIT_METHOD)
        _group_manifest(cache / "s1.0_64", name, 64)
        _group_manifest(cache / "s1.0_128", name, 128)
    assert chosen(cache) == {"s1.0_64"}
    assert chosen(cache / "random_64") == {"random_64"}  # asked for by name, the re-cut is what you get
    # A re-cut at the model's size still loses to source splits at another size (those are cut again from the frames).
    other = tmp_path / "other"
    _group_manifest(other / "random_64", "gc535", 64, RESPLIT_METHOD)
    _group_manifest(other / "s1.0_128", "gc535", 128)
    assert chosen(other) == {"s1.0_128"}
    # Two groups alike in splits and policy: a typed error naming both, not whichever sorts last.
    for name in ("gc535", "nuaa"):
        _group_manifest(cache / "s1.0_64_again", name, 64)
    with pytest.raises(q.QuantizeError, match="pass the folder you mean") as err:
        q.find_manifests(cache, info)
    assert str(cache / "s1.0_64") + "," in str(err.value) and str(cache / "s1.0_64_again") in str(err.value)
    assert "random_64" not in str(err.value) and "s1.0_128" not in str(err.value)
    with pytest.raises(q.QuantizeError, match="pass the folder you mean"):
        q.collect_samples(cache, info)
    assert chosen(cache / "s1.0_64_again") == {"s1.0_64_again"}
    # No group of the model's policy (e.g. MiniFASNet's 80 px context crops beside cache/s1.0_128 and
    # cache/s1.0_224): every crop is cut again from its source frame anyway, so no error; first by name.
    mixed = tmp_path / "mixed"
    _group_manifest(mixed / "s1.0_224", "gc535", 224)
    _group_manifest(mixed / "s1.0_128", "gc535", 128)
    assert chosen(mixed) == {"s1.0_128"}


def test_calibration_from_trainer_manifest(fp32_path, crops_dir, tmp_path):
    """cache/<set>/manifest.json as the trainer writes it: calibrate on train, report on test."""
    cache = tmp_path / "cache"
    items = []
    for i, p in enumerate(sorted(crops_dir.rglob("*.png"))):
        rel = Path("crops") / p.parent.name / p.name
        (cache / "toy" / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(cache / "toy" / rel), cv2.resize(cv2.imread(str(p)), (64, 64)))
        items.append({"file": rel.as_posix(), "label": int(p.parent.name == "real"), "split": "test" if i % 4 == 0 else "train"})
    manifest = {"version": 1, "dataset": "toy", "crop": {"faces": "crop", "crop_scale": None, "size": 64}, "items": items}
    (cache / "toy" / "manifest.json").write_text(json.dumps(manifest))
    samples = q.collect_samples(cache, SpoofModel(fp32_path).info, splits=("test",))
    assert len(samples) == 12 and {s.label for s in samples} == {0, 1}
    assert all(s.crop.shape == (64, 64, 3) for s in samples)
    res = q.quantize(fp32_path, "int8", calib=cache, out=tmp_path / "m.int8.onnx", rounds=2, verbose=False)
    assert res.report["how"]["calibration_samples"] == 36  # the train rows
    assert res.report["n_samples"] == 12  # the test rows


def test_report_has_auc_per_domain_for_several_prepared_sets(fp32_path, crops_dir, tmp_path):
    """Two prepared sets: the report gives FP32 and INT8 AUC per set (the ΔAUC target is per domain)."""
    from spoofsdk import metrics

    cache = tmp_path / "cache"
    files = sorted(crops_dir.rglob("*.png"))
    for name, part in (("cam_a", files[0::2]), ("cam_b", files[1::2])):
        items = []
        for i, p in enumerate(part):
            rel = Path("crops") / p.parent.name / p.name
            (cache / name / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(cache / name / rel), cv2.resize(cv2.imread(str(p)), (64, 64)))
            items.append({"file": rel.as_posix(), "label": int(p.parent.name == "real"), "split": "test" if i % 2 else "train"})
        manifest = {"version": 1, "dataset": name, "crop": {"faces": "crop", "crop_scale": None, "size": 64}, "items": items}
        (cache / name / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "m.int8.onnx"
    rep = q.quantize(fp32_path, "int8", calib=cache, out=out, rounds=0, verbose=False).report
    assert set(rep["per_domain"]) == {"cam_a", "cam_b"}
    m32, m8 = SpoofModel(fp32_path), SpoofModel(out, precision="int8")
    for name, row in rep["per_domain"].items():
        test = [s for s in q.collect_samples(cache / name, m32.info, splits=("test",))]
        labels = [s.label for s in test]
        assert row["n"] == len(test) == 12 and {s.domain for s in test} == {name}
        assert row["fp32_auc"] == pytest.approx(metrics.roc_auc(labels, m32.score_crops([s.crop for s in test])), abs=1e-6)
        assert row["quantized_auc"] == pytest.approx(metrics.roc_auc(labels, m8.score_crops([s.crop for s in test])), abs=1e-6)
        assert row["delta_auc"] == pytest.approx(row["quantized_auc"] - row["fp32_auc"])
    assert rep["max_abs_delta_auc_per_domain"] == pytest.approx(max(abs(r["delta_auc"]) for r in rep["per_domain"].values()))
    text = q.format_report(rep)
    assert "cam_a" in text and "cam_b" in text and "worst |delta AUC|" in text


def test_refuses_bad_inputs(fp32_path, crops_dir, tmp_path):
    with pytest.raises(q.QuantizeError, match="calibration"):
        q.quantize(fp32_path, "int8", out=tmp_path / "a.onnx", verbose=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(q.QuantizeError, match="no usable calibration"):
        q.quantize(fp32_path, "int8", calib=empty, out=tmp_path / "b.onnx", verbose=False)
    with pytest.raises(q.QuantizeError, match="not found"):
        q.quantize(fp32_path, "int8", calib=tmp_path / "missing", out=tmp_path / "c.onnx", verbose=False)
    with pytest.raises(q.QuantizeError, match="precision"):
        q.quantize(fp32_path, "int4", calib=crops_dir, verbose=False)
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(build_tiny_model(drop_keys=("mean", "std")))
    with pytest.raises(MetadataError, match="mean"):
        q.quantize(bare, "fp16", out=tmp_path / "d.onnx", verbose=False)
    done = tmp_path / "done.onnx"
    done.write_bytes(build_tiny_model(metadata={"precision": "int8"}))
    with pytest.raises(q.QuantizeError, match="already int8"):
        q.quantize(done, "fp16", out=tmp_path / "e.onnx", verbose=False)
    with pytest.raises(q.QuantizeError, match="overwrite"):
        q.quantize(fp32_path, "fp16", out=fp32_path, verbose=False)
    assert not any((tmp_path / n).exists() for n in ("a.onnx", "b.onnx", "c.onnx", "d.onnx", "e.onnx"))


@pytest.mark.slow
def test_cli_without_torch(fp32_path, crops_dir, tmp_path, capsys):
    from spoofsdk_train.cli import main

    out = tmp_path / "cli.int8.onnx"
    code = main(["quantize", str(fp32_path), "--precision", "int8", "--calib", str(crops_dir), "--out", str(out),
                 "--calib-size", "8", "--eval-size", "16", "--rounds", "2"])
    assert code == 0 and out.exists() and out.with_name("cli.int8.report.json").exists()
    assert "decisions agree" in capsys.readouterr().out
    assert main(["quantize", str(fp32_path), "--precision", "int8"]) == 2
    assert "calibration" in capsys.readouterr().err
    # The module imports no torch itself, and runs (crops, calibration, report) where torch is absent:
    # a clean interpreter in which `import torch` fails. (onnxruntime's own tools package imports
    # torch when it *is* installed; that is onnxruntime's business, not a dependency of ours.)
    code = "import sys, spoofsdk_train.cli, spoofsdk_train.quantize; assert 'torch' not in sys.modules, 'quantize imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    for precision in ("int8", "fp16"):
        args = ["quantize", str(fp32_path), "--precision", precision, "--calib", str(crops_dir), "--out", str(tmp_path / f"nt.{precision}.onnx"),
                "--calib-size", "8", "--eval-size", "8", "--rounds", "1"]
        code = f"import sys; sys.modules['torch'] = None; import spoofsdk_train.cli as c; sys.exit(c.main({args!r}))"
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (tmp_path / f"nt.{precision}.onnx").exists()


@pytest.mark.data
def test_int8_on_real_face_crops(fp32_path, gc535_dir, nuaa_dir, tmp_path):
    """Real gc535 crops calibrate; NUAA frames go through the detector; labels mostly agree."""
    info = SpoofModel(fp32_path).info
    frames = q.collect_samples(nuaa_dir, info, limit=6)
    assert frames and all(s.crop.shape == (64, 64, 3) and s.label in (0, 1) for s in frames)
    res = q.quantize(fp32_path, "int8", calib=gc535_dir / "test", out=tmp_path / "g.int8.onnx",
                     calib_size=32, eval_size=80, rounds=2, verbose=False)
    assert res.report["decision_agreement"] >= 0.9
    assert abs(res.report["delta"]["auc"]) < 0.05


def test_trainer_cli_quantize_subcommand(fp32_path, crops_dir, tmp_path, capsys):
    """`spoofsdk-train quantize`: precision is never guessed, and an INT8 without calibration data is a usage error."""
    from spoofsdk_train.cli import main

    out = tmp_path / "via-cli.fp16.onnx"
    assert main(["quantize", str(fp32_path), "--precision", "fp16", "--calib", str(crops_dir), "--out", str(out),
                 "--eval-size", "8", "--rounds", "1"]) == 0
    assert SpoofModel(out, precision="fp16").info.precision == "fp16"
    assert main(["quantize", str(fp32_path), "--precision", "int8"]) == 2  # INT8 without calibration data
    before = out.read_bytes()
    assert main(["quantize", str(fp32_path), "--out", str(out)]) == 2  # no --precision: nothing written
    assert "--precision" in capsys.readouterr().err and out.read_bytes() == before


def test_sweep_honours_the_sizes_and_small_differences_are_visible(fp32_path, crops_dir, monkeypatch, capsys):
    from spoofsdk_train.cli import main

    seen = {}
    monkeypatch.setattr(q, "sweep_int8", lambda *a, **k: seen.update(k) or [])
    assert main(["quantize", str(fp32_path), "--sweep", "--calib", str(crops_dir), "--calib-size", "7", "--eval-size", "9"]) == 0
    assert seen["calib_size"] == 7 and seen["eval_size"] == 9
    # INT8 settings with --sweep are refused, not dropped (the sweep measures its own grid)
    seen.clear()
    assert main(["quantize", str(fp32_path), "--sweep", "--calib", str(crops_dir), "--fp32-nodes", "Gemm"]) == 2
    assert not seen and "--fp32-nodes" in capsys.readouterr().err
    rep = {"precision": "int8", "name": "m", "architecture": "a", "how": {"tool": "t"}, "size_bytes": {"fp32": 4e6, "int8": 1e6},
           "size_ratio": 0.25, "n_samples": 9, "max_abs_dscore": 3.2e-5, "mean_abs_dscore": 4e-6, "decision_agreement": 5 / 9}
    text = q.format_report(rep)
    assert "max |d| 3.2e-05" in text and "mean |d| 4e-06" in text and "55.56%" in text and "0.0000" not in text


def test_int8_calibration_reads_the_image_input_from_the_graph_and_refuses_two_inputs():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from spoofsdk_train.convert import QuantizeError, _image_input_name

    weight = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "w")
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 8, 8])
    w_as_input = helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 3, 1, 1])  # older exporters list weights
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
    conv = helper.make_node("Conv", ["pixels", "w"], ["y"])
    graph = helper.make_graph([conv], "g", [x, w_as_input], [y], initializer=[weight])
    assert _image_input_name(onnx.helper.make_model(graph).graph) == "pixels"
    second = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 8, 8])
    two = helper.make_graph([conv], "g2", [x, second], [y], initializer=[weight])
    with pytest.raises(QuantizeError, match="one image input"):
        _image_input_name(two)


def test_a_quantized_model_that_overflows_is_counted_not_a_nan_report(fp32_path):
    """A crop the quantized model cannot score (NaN: an overflow) is a disagreement and a count, never a NaN figure."""
    rng = np.random.default_rng(1)
    samples = [q.Sample(_face_like(rng, 64, 120 + 60 * (i % 2), 5.0), i % 2, f"c{i}", domain="d" + str(i % 3 == 0)) for i in range(12)]
    fp32, quant = SpoofModel(fp32_path), SpoofModel(fp32_path)
    good = quant.predict
    quant.predict = lambda batch: np.where(np.arange(len(batch)) == 0, np.nan, good(batch))  # row 0 of each batch
    rep = q.evaluate_pair(fp32, quant, samples, rounds=0)
    assert rep["n_unscored"] == {"fp32": 0, "quantized": 1}
    assert rep["decision_agreement"] == pytest.approx(11 / 12) and rep["max_abs_dscore"] < 1e-6
    assert rep["fp32"]["n"] == rep["quantized"]["n"] == 11  # both columns on the crops both scored
    json.loads(json.dumps(rep, allow_nan=False))  # valid JSON: no NaN anywhere
    text = q.format_report({**rep, "precision": "int8", "name": "m", "architecture": "a", "how": {"tool": "t"},
                            "size_bytes": {"fp32": 4e6, "int8": 1e6}, "size_ratio": 0.25})
    assert "NO SCORE" in text and "INT8 on 1" in text
