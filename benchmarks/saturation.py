"""How often U8S8 INT8 convolutions would saturate on an x86 CPU without VNNI.

    python -m benchmarks.saturation MODEL.onnx --calib cache/ [--crops 32]

Without VNNI, onnxruntime's U8S8 kernels multiply u8 activations by s8 weights with
``vpmaddubsw``, which adds *pairs* of adjacent products (adjacent along the reduction axis:
input channels at one kernel tap) into a saturating int16. |pair| can reach 2*255*127 = 64,770
with 8-bit weights; with ``reduce_range`` (7-bit weights, |w| <= 64) it stays below 32,767.
VNNI (``vpdpbusd``) accumulates in int32 and never saturates, so this cannot be *seen* on a VNNI
machine; this tool counts it instead. For every non-depthwise Conv and Gemm of the INT8 model
quantized with and without reduce_range, it takes the real u8 activations (quantized with the
model's own scales, on real face crops) and s8 weights, forms every adjacent pair sum the kernel
would form, and reports the share that exceeds the int16 range.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from spoofsdk.clitools import Command, run_main


def _pairs_saturating(a_u8: np.ndarray, w_s8: np.ndarray) -> tuple[int, int, int, int]:
    """a_u8: (M, K) activations; w_s8: (K, N) weights. Count |a[2i]w[2i] + a[2i+1]w[2i+1]| > 32767,
    and the outputs (M x N accumulators) that receive at least one such clipped pair."""
    k = a_u8.shape[1] - a_u8.shape[1] % 2
    a = a_u8[:, :k].astype(np.int32).reshape(a_u8.shape[0], k // 2, 2)
    w = w_s8[:k].astype(np.int32).reshape(k // 2, 2, -1)
    sat = total = out_hit = outs = 0
    for j in range(w.shape[2]):  # per output channel, to bound memory
        s = a[:, :, 0] * w[None, :, 0, j] + a[:, :, 1] * w[None, :, 1, j]
        over = np.abs(s) > 32767
        sat += int(over.sum())
        total += s.size
        out_hit += int(over.any(axis=1).sum())
        outs += s.shape[0]
    return sat, total, out_hit, outs


def analyse(qdq_bytes: bytes, tensors: np.ndarray, max_rows: int = 20000) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load_from_string(qdq_bytes)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    targets = []
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if group != 1:
            continue  # depthwise/grouped convs use other kernels
        xdq, wdq = producer.get(n.input[0]), producer.get(n.input[1])
        if not xdq or not wdq or xdq.op_type != "DequantizeLinear" or wdq.op_type != "DequantizeLinear":
            continue
        targets.append((n, xdq, wdq))
    extra = [t[1].output[0] for t in targets]
    del model.graph.output[:]
    model.graph.output.extend([onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in extra])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(extra, {sess.get_inputs()[0].name: tensors})
    layers, sat_all, tot_all, hit_all, outs_all = [], 0, 0, 0, 0
    for (node, xdq, wdq), x in zip(targets, outs):
        xs = float(np.asarray(inits[xdq.input[1]]).ravel()[0])
        xz = int(np.asarray(inits[xdq.input[2]]).ravel()[0]) if len(xdq.input) > 2 else 0
        if xs <= 0:
            continue
        q = np.clip(np.round(x / xs) + xz, 0, 255).astype(np.uint8)
        w = inits[wdq.input[0]]  # int8 weights
        if node.op_type == "Conv":
            kh, kw = w.shape[2], w.shape[3]
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1, 1])
            pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0, 0, 0, 0])
            # zero point = "real zero"; pad with it, then im2col with K ordered (kh, kw, C): channels fastest (NHWC)
            qp = np.pad(q, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=xz).transpose(0, 2, 3, 1)
            win = np.lib.stride_tricks.sliding_window_view(qp, (kh, kw), axis=(1, 2))[:, :: strides[0], :: strides[1]]
            a = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * q.shape[1])
            wm = w.transpose(2, 3, 1, 0).reshape(kh * kw * w.shape[1], w.shape[0])
        else:
            a = q.reshape(q.shape[0], -1)
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            wm = w.T if trans_b else w
        if a.shape[0] > max_rows:
            a = a[np.linspace(0, a.shape[0] - 1, max_rows).astype(int)]
        sat, tot, hit, outs = _pairs_saturating(a, wm)
        layers.append({"node": node.name, "op": node.op_type, "K": int(a.shape[1]), "saturating_pairs": sat, "pairs": tot,
                       "share": sat / tot if tot else 0.0, "outputs_hit": hit, "outputs": outs,
                       "output_share": hit / outs if outs else 0.0, "max_abs_weight": int(np.abs(w).max())})
        sat_all += sat
        tot_all += tot
        hit_all += hit
        outs_all += outs
    return {"layers": layers, "saturating_pairs": sat_all, "pairs": tot_all, "share": sat_all / tot_all if tot_all else 0.0,
            "outputs_hit": hit_all, "outputs": outs_all, "output_share": hit_all / outs_all if outs_all else 0.0,
            "layers_with_saturation": sum(1 for l in layers if l["saturating_pairs"]), "layers_checked": len(layers)}


@click.command(cls=Command, help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--calib", required=True, type=click.Path(exists=True), help="Face crops: a labelled folder or the trainer's cache/.")
@click.option("--crops", type=click.IntRange(min=1), default=32, show_default=True, help="Probe crops.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures here.")
def cli(model, calib, crops, json_path) -> int:
    from spoofsdk.crop import to_tensor
    from spoofsdk_train.convert import INT8_DEFAULTS, load_fp32, quantize_int8
    from spoofsdk_train.quantize import collect_samples

    a = SimpleNamespace(model=model, calib=calib, crops=crops, json=json_path)
    data, info = load_fp32(a.model)
    calib = collect_samples(a.calib, info, limit=128, splits=("train",))
    probe = collect_samples(a.calib, info, limit=a.crops, splits=("test",)) or calib[: a.crops]
    ct = to_tensor([s.crop for s in calib], info.color_order, info.mean, info.std)
    pt = to_tensor([s.crop for s in probe], info.color_order, info.mean, info.std)
    out = {}
    for rr in (False, True):
        q = quantize_int8(data, ct, **{**INT8_DEFAULTS, "reduce_range": rr})
        r = analyse(q, pt)
        out[f"reduce_range={rr}"] = r
        print(f"reduce_range={rr}: {r['saturating_pairs']:,} of {r['pairs']:,} u8*s8 pair sums beyond int16 "
              f"({100 * r['share']:.4f} %), in {r['layers_with_saturation']} of {r['layers_checked']} layers; "
              f"{100 * r['output_share']:.3f} % of the layers' output values get at least one clipped pair")
        worst = sorted(r["layers"], key=lambda l: -l["output_share"])[:3]
        for l in worst:
            if l["saturating_pairs"]:
                print(f"    {l['node']} ({l['op']}, K={l['K']}): {100 * l['share']:.3f} % of pairs, {100 * l['output_share']:.2f} % of outputs")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    return run_main(cli, argv, prog_name="python -m benchmarks.saturation")


if __name__ == "__main__":
    sys.exit(main())
