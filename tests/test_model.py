"""Model loading, metadata validation, embedded-model hashes, lazy imports."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from spoofsdk import model as model_mod
from spoofsdk.errors import MetadataError, ModelError
from spoofsdk.model import REQUIRED_KEYS, SpoofModel, load_model, parse_metadata, read_metadata_props, write_metadata_props

from conftest import REPO, build_tiny_model


def test_tiny_model_loads_and_scores():
    m = load_model(build_tiny_model(input_size=32))
    assert (m.info.input_size, m.info.color_order, m.info.class_order, m.threshold) == (32, "RGB", ("spoof", "real"), 0.5)
    crops = [np.full((32, 32, 3), v, np.uint8) for v in (0, 128, 255)]
    scores = m.score_crops(crops)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    assert len(set(np.round(scores, 6))) == 3  # depends on the image


def test_logit1_and_fixed_batch_models():
    one = load_model(build_tiny_model(output="logit1"))
    fixed = load_model(build_tiny_model(fixed_batch=True))
    crops = [np.full((64, 64, 3), v, np.uint8) for v in (10, 200)]
    assert one.score_crops(crops).shape == (2,)
    free = load_model(build_tiny_model())
    np.testing.assert_allclose(fixed.score_crops(crops), free.score_crops(crops), rtol=1e-6)


@pytest.mark.parametrize("key", ["crop_scale", "threshold", "mean", "class_order"])
def test_missing_metadata_key_is_named(key):
    with pytest.raises(MetadataError, match=key):
        load_model(build_tiny_model(drop_keys=(key,)))


def test_model_without_any_metadata():
    with pytest.raises(MetadataError, match="no valid spoofsdk metadata"):
        load_model(build_tiny_model(drop_keys=tuple(REQUIRED_KEYS)))


@pytest.mark.parametrize(
    "key, value, message",
    [("threshold", "1.5", "threshold"), ("input_size", "64x32", "square"), ("std", "0,1,1", "std must lie in"), ("std", "1e-50,1,1", "std must lie in"), ("mean", "1e300,0,0", "mean must lie in"),
     ("class_order", "fake,real", "class_order"), ("precision", "fp64", "precision"), ("spoofsdk_format", "9", "format")],
)
def test_invalid_metadata_values(key, value, message):
    with pytest.raises(MetadataError, match=message):
        parse_metadata({**read_metadata_props(build_tiny_model()), key: value})


def test_input_size_must_match_the_graph():
    with pytest.raises(ModelError, match="input shape"):
        load_model(build_tiny_model(input_size=64, metadata={"input_size": "128x128"}))


def test_a_graph_without_outputs_is_a_model_error():
    """onnxruntime opens it; the runtime must refuse it with its typed error (the fuzzer found an IndexError)."""
    import onnx

    proto = onnx.load_from_string(build_tiny_model())
    del proto.graph.output[:]
    with pytest.raises(ModelError, match="no output"):
        load_model(proto.SerializeToString())


def test_write_metadata_props_round_trip():
    data = build_tiny_model()
    new = write_metadata_props(data, {"threshold": "0.73", "threshold_source": "test"})
    props = read_metadata_props(new)
    assert props["threshold"] == "0.73" and props["threshold_source"] == "test"
    assert props["training_data"] == "none (test fixture)"  # other keys kept
    a, b = load_model(data), load_model(new)
    crops = [np.full((64, 64, 3), 90, np.uint8)]
    np.testing.assert_array_equal(a.score_crops(crops), b.score_crops(crops))
    assert b.threshold == 0.73


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    data = build_tiny_model()
    (tmp_path / "default_fp32.onnx").write_bytes(data)
    monkeypatch.setattr(model_mod, "ASSETS_DIR", tmp_path)
    monkeypatch.setattr(model_mod, "EMBEDDED_MODELS", {"default": {"fp32": ("default_fp32.onnx", hashlib.sha256(data).hexdigest())}})
    return tmp_path / "default_fp32.onnx"


def test_embedded_default_is_used(embedded):
    from spoofsdk import LivenessChecker

    checker = LivenessChecker()
    assert checker.model.source == str(embedded) and checker.info.name == "tiny"


def test_tampered_embedded_model_is_refused(embedded):
    data = bytearray(embedded.read_bytes())
    data[len(data) // 2] ^= 0xFF
    embedded.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model()


def test_precision_and_provider_checks(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(build_tiny_model())
    with pytest.raises(ModelError, match="fp32 model"):
        load_model(path, precision="int8")
    with pytest.raises(ModelError, match="not available"):
        load_model(path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.onnx")


def test_non_finite_output_has_no_score():
    m = load_model(build_tiny_model())
    scores = m.predict(np.full((2, 3, 64, 64), np.nan, np.float32))
    assert np.isnan(scores).all() and not (scores >= 0.0).any()  # compares false with any threshold


class CannedSession:
    """Stands in for the onnxruntime session: answers every run with the same output array."""

    def __init__(self, out):
        self.out = np.asarray(out, np.float32)

    def run(self, names, feeds):
        return [self.out]


@pytest.mark.parametrize("output, out", [
    ("logit1", [[np.inf], [0.0]]),  # sigmoid(+inf) is a finite 1.0
    ("logits2", [[-np.inf, 0.0], [0.0, 0.0]]),  # softmax gives P(real) 1.0
    ("logits2", [[np.nan, 0.0], [0.0, 0.0]]),
    ("logits2", [[np.inf, np.inf], [0.0, 0.0]]),  # inf - inf
])
def test_a_non_finite_logit_has_no_score(output, out):
    m = load_model(build_tiny_model(output=output))
    m.session = CannedSession(out)
    scores = m.predict(np.zeros((2, 3, 64, 64), np.float32))
    assert np.isnan(scores[0]) and scores[1] == pytest.approx(0.5)


def test_an_output_wider_or_narrower_than_the_metadata_says_is_a_model_error():
    """A graph with a symbolic output width loads; the width is checked on the first answer."""
    m = load_model(build_tiny_model(output="logits2"))
    for out in (np.zeros((2, 3)), np.zeros((2, 1)), np.zeros((1, 2))):
        m.session = CannedSession(out)
        with pytest.raises(ModelError, match="describe 2 value"):
            m.predict(np.zeros((2, 3, 64, 64), np.float32))


def test_a_fixed_batch_other_than_one_is_refused_at_load():
    assert load_model(build_tiny_model(fixed_batch=True)).predict(np.zeros((3, 3, 64, 64), np.float32)).shape == (3,)
    with pytest.raises(ModelError, match="batch is fixed at 2"):
        load_model(build_tiny_model(fixed_batch=2))


def test_import_is_light():
    code = (
        "import sys, spoofsdk; heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules]; "
        "from spoofsdk import LivenessChecker; heavy2 = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]; "
        "print(heavy, heavy2)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


def test_non_finite_input_has_no_score():
    model = SpoofModel()  # the embedded INT8 default: it maps NaN input to a finite score
    batch = np.zeros((3, 3, model.info.input_size, model.info.input_size), np.float32)
    batch[0] = np.nan
    batch[1, 0, 5, 5] = np.inf
    scores = model.predict(batch)
    assert np.isnan(scores[:2]).all() and 0.0 < scores[2] < 1.0


@pytest.mark.parametrize("text, expected", [('{"nuaa": {"auc": 0.99}}', {"nuaa": {"auc": 0.99}}), ("[1, 2]", {}), ("0.5", {}), ("not json", {})])
def test_metrics_are_a_mapping_or_nothing(text, expected):
    info = parse_metadata(read_metadata_props(build_tiny_model(metadata={"metrics": text})))
    assert info.metrics == expected


def test_loso_summary_averages_seeds_over_the_domains_every_seed_scored():
    from spoofsdk.model import loso_runs, loso_summary

    metrics = {"loso": {"domains": {"a": {"auc": 0.9}, "b": {"auc": 0.5}, "c": {"auc": None}},
                        "replicates": [{"auc": {"a": 0.7, "b": 0.7, "c": 0.8}}, {"summary": {}}]}}  # no per-domain AUC: not a seed
    assert loso_runs(metrics) == [{"a": 0.9, "b": 0.5, "c": None}, {"a": 0.7, "b": 0.7, "c": 0.8}]
    summary = loso_summary(metrics)
    assert summary["domains"] == ["a", "b"] and summary["seeds"] == 2  # c: no AUC in one seed (a live-only source)
    assert summary["seed_means"] == pytest.approx([0.7, 0.7])
    assert summary["mean"] == pytest.approx(0.7) and summary["worst"] == pytest.approx((0.5 + 0.7) / 2)
    assert loso_summary({"nuaa": {"auc": 1.0}}) is None and loso_summary({}) is None and loso_runs({"loso": "x"}) == []


def test_loso_tables_give_every_figure_per_seed_and_none_where_a_replicate_lacks_it():
    from spoofsdk.model import LOSO_FIGURES, loso_runs, loso_tables

    full = {"auc": 0.9, "eer": 0.2, "apcer": 0.1, "bpcer": 0.3, "bpcer_at_apcer_5": 0.4}
    metrics = {"loso": {"domains": {"a": full, "b": "malformed"},
                        "replicates": [{"domains": {"a": dict(full, auc=0.8)}, "auc": {"a": 0.1}},  # full figures win over the AUC map
                                       {"auc": {"a": 0.7}},  # embedded before session 10: AUC only
                                       {"domains": {}, "auc": {"a": 0.6}}, "not a replicate", {"summary": {}}]}}
    tables = loso_tables(metrics)
    assert tables[0] == {"a": full}  # a malformed domain entry is left out, not read as figures
    assert tables[1]["a"] == dict(full, auc=0.8)
    assert tables[2] == {"a": {k: (0.7 if k == "auc" else None) for k in LOSO_FIGURES}}
    assert tables[3]["a"]["auc"] == 0.6 and len(tables) == 4
    assert loso_runs(metrics) == [{"a": 0.9}, {"a": 0.8}, {"a": 0.7}, {"a": 0.6}]
    assert loso_tables({}) == [] and loso_tables({"loso": {"domains": []}}) == [] and loso_tables([]) == []


def _with_tail(nodes, output, elem_type, shape, initializers=()):
    """The tiny model with ``nodes`` run after its logits and ``output`` as its only graph output."""
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(build_tiny_model())
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(initializers)
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info(output, elem_type, shape))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _cast_input(data, elem_type, output_type=None):
    """The model fed through a Cast from ``elem_type`` (a uint8 or int64 image input; a double one), and its
    logits cast to ``output_type`` when given."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load_from_string(data)
    nodes = [helper.make_node("Cast", ["raw"], ["input"], to=TensorProto.FLOAT), *proto.graph.node]
    if output_type is not None:
        nodes.append(helper.make_node("Cast", ["logits"], ["out"], to=output_type))
        proto.graph.output[0].name = "out"
        proto.graph.output[0].type.tensor_type.elem_type = output_type
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.input[0].name = "raw"
    proto.graph.input[0].type.tensor_type.elem_type = elem_type
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _fp16_twin(data):
    """The same model with every weight, the input and the output in float16 (a full FP16 export)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    proto = onnx.load_from_string(data)
    for init in proto.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


@pytest.mark.parametrize("kind", ["bool", "int64", "string"])
def test_an_output_that_is_not_float_is_refused_at_load(kind):
    """A BOOL output loaded and scored every face of this model 0.5: `real` under any threshold below 0.5."""
    from onnx import TensorProto, helper

    if kind == "bool":
        data = _with_tail([helper.make_node("Greater", ["logits", "zero"], ["out"])], "out", TensorProto.BOOL, ["N", 2],
                          [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    else:
        to = TensorProto.INT64 if kind == "int64" else TensorProto.STRING
        data = _with_tail([helper.make_node("Cast", ["logits"], ["out"], to=to)], "out", to, ["N", 2])
    with pytest.raises(ModelError, match=rf"'out' has element type tensor\({kind}\)"):
        load_model(data)


@pytest.mark.parametrize("elem_type, name", [(2, "uint8"), (7, "int64")])  # TensorProto.UINT8, TensorProto.INT64
def test_an_input_that_is_not_float_is_refused_at_load(elem_type, name):
    """It loaded, then failed every face: the runtime feeds normalised float crops."""
    with pytest.raises(ModelError, match=rf"input element type is tensor\({name}\)"):
        load_model(_cast_input(build_tiny_model(), elem_type))


@pytest.mark.parametrize("shape, nodes, message", [
    (["N", 2, 2], [("Unsqueeze", ["logits", "axis1"], ["u"], {}), ("Concat", ["u", "u"], ["out"], {"axis": 1})], "4 values per face"),
    ([2, "N"], [("Transpose", ["logits"], ["out"], {"perm": [1, 0]})], "does not lead with the batch"),
], ids=["rank3", "class_major"])
def test_an_output_shape_predict_would_misread_is_refused_at_load(shape, nodes, message):
    """[N, 2, 2]: the last dimension matches logits2 but each face has 4 values. [2, N] (class-major): its size
    matches N faces, so a batch was read pairing one face's spoof logit with another face's."""
    from onnx import TensorProto, helper

    data = _with_tail([helper.make_node(op, i, o, **kw) for op, i, o, kw in nodes], "out", TensorProto.FLOAT, shape,
                      [helper.make_tensor("axis1", TensorProto.INT64, [1], [1])])
    with pytest.raises(ModelError, match=message):
        load_model(data)


@pytest.mark.parametrize("precision, dtype, atol", [
    # P(real) = sigmoid(d), d the difference of the logits, whose slope p(1 - p) is at most 1/4. FP16 keeps 11
    # significant bits (relative 2**-11 ~ 4.9e-4 per rounding); the input, every weight and each of the five ops'
    # results round once, so where the slope is large (d of order 1) d moves by a few 1e-3 and P(real) by under
    # 1e-3 (measured 1.4e-4 on these faces, at most 3.3e-4 over four seeds of the tiny model).
    ("fp16", np.float16, 1e-3),
    ("double", np.float64, 1e-9),  # double input cast to float32 inside, double output: the same float32 graph
])
def test_a_float16_or_double_model_scores_like_its_float32_twin(precision, dtype, atol):
    """A float16-input model (other exporters' FP16 files) loaded, then failed every face with INVALID_ARGUMENT."""
    from onnx import TensorProto

    data = build_tiny_model()
    twin = load_model(_fp16_twin(data) if precision == "fp16" else _cast_input(data, TensorProto.DOUBLE, TensorProto.DOUBLE))
    assert twin.input_dtype == dtype
    crops = [np.full((64, 64, 3), v, np.uint8) for v in (0, 50, 100, 150, 200, 255)]
    want, got = load_model(data).score_crops(crops), twin.score_crops(crops)
    assert got.dtype == np.float64 and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    assert np.ptp(want) > 0.5  # the faces' scores span far more than the tolerance: the comparison is not vacuous


def test_an_input_beyond_float16_range_has_no_score_on_a_float16_model():
    """The cast to float16 turns 1e5 into inf, which the model sees: no score, as for a non-finite input."""
    m = load_model(_fp16_twin(build_tiny_model()))
    batch = np.zeros((2, 3, 64, 64), np.float32)
    batch[0, 1, 2, 3] = 1e5  # finite in float32; float16 ends at 65504
    scores = m.predict(batch)
    assert np.isnan(scores[0]) and 0.0 < scores[1] < 1.0
