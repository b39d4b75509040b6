"""The demo's JavaScript preprocessing (spoofsdk/serve/demo/pipeline.js) against the runtime's, pixel by pixel, in Node.

The browser test compares scores; this one compares the crops themselves on NUAA frames, with
boxes that take every path: shrinking (area), enlarging (linear), shifted at a border, padded.
OpenCV's own SIMD rounding differs from its scalar code by one level on a few pixels, so a
pixel may differ by 1; the share of such pixels must stay tiny.
"""
from __future__ import annotations

import inspect
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, missing, sample_files

from spoofsdk.crop import crop_face

PIPELINE = REPO / "spoofsdk" / "serve" / "demo" / "pipeline.js"
POLICIES = ["pad"] + (["shift_cap"] if "policy" in inspect.signature(crop_face).parameters else [])

SCRIPT = """
import fs from 'fs';
const { cropFace, resize } = await import(process.argv[2]);
const cases = JSON.parse(fs.readFileSync(process.argv[3]));
const out = cases.map((c) => {
  const data = new Uint8Array(fs.readFileSync(c.raw));
  const image = { data, width: c.w, height: c.h, channels: 3 };
  if (c.resize) return Array.from(resize((x, y, ch) => data[(y * c.w + x) * 3 + ch], c.w, c.h, c.resize[0], c.resize[1]));
  const r = cropFace(image, c.box, c.scale, c.size, c.policy);
  return { rgb: Array.from(r.rgb), region: r.region, padded: r.padded };
});
fs.writeFileSync(process.argv[4], JSON.stringify(out));
"""


def _node() -> str:
    node = shutil.which("node")
    if not node:
        missing("node not found (it comes with npm, which .ci/run uses)")
    return node


@pytest.mark.parametrize("policy", POLICIES)
def test_js_crops_match_the_runtime(tmp_path, nuaa_dir, policy):
    node = _node()
    cases, expected = [], []
    for k, path in enumerate(sample_files(nuaa_dir, 3)):
        image = cv2.imread(str(path))
        if k == 2:
            image = cv2.resize(image, (200, 150), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        raw = tmp_path / f"img{k}.rgb"
        np.ascontiguousarray(image[..., ::-1]).tofile(raw)
        boxes = [(w * 0.3, h * 0.2, w * 0.3, h * 0.45), (w * 0.05 + 0.37, h * 0.1, 40.3, 47.9), (w * 0.7, h * 0.5, w * 0.28, h * 0.3),
                 (-10.0, h * 0.6, w * 0.9, h * 0.9), (w * 0.25, h * 0.25, 85.5, 85.5), (50.5, 40.5, 256 / 1.5, 256 / 1.5)]
        for box in boxes:
            for scale, size in ((1.5, 128), (2.7, 80), (1.0, 224)):
                kwargs = {"policy": policy} if policy != "pad" else {}
                crop = crop_face(image, box, scale, size, **kwargs)
                cases.append({"raw": str(raw), "w": w, "h": h, "box": list(box), "scale": scale, "size": size, "policy": policy})
                expected.append(crop)
        if policy == "pad" and max(h, w) > 320:  # the detector's downscale
            f = 320 / max(h, w)
            size = (round(w * f), round(h * f))
            cases.append({"raw": str(raw), "w": w, "h": h, "resize": list(size)})
            expected.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "run.mjs").write_text(SCRIPT)
    subprocess.run([node, str(tmp_path / "run.mjs"), PIPELINE.as_uri(), str(tmp_path / "cases.json"), str(tmp_path / "out.json")], check=True, timeout=120)
    got = json.loads((tmp_path / "out.json").read_text())
    off_by_one = total = 0
    for case, want, have in zip(cases, expected, got):
        if "resize" in case:
            ref, js = want[..., ::-1].ravel().astype(int), np.array(have)
        else:
            assert tuple(have["region"]) == tuple(want.region), case
            assert abs(have["padded"] - want.padded_fraction) < 1e-9, case
            ref, js = want.image[..., ::-1].ravel().astype(int), np.array(have["rgb"])
        diff = np.abs(ref - js)
        assert diff.max() <= 1, (case, diff.max())
        off_by_one += int((diff > 0).sum())
        total += diff.size
    assert off_by_one / total < 0.005, f"{off_by_one} of {total} values differ by 1"


PROBABILITY = """
const { probability } = await import(process.argv[2]);
const cases = [
  [[Infinity], { output: "logit1", classOrder: ["spoof", "real"] }],
  [[-Infinity, 0], { output: "logits2", classOrder: ["spoof", "real"] }],
  [[NaN, 0], { output: "logits2", classOrder: ["spoof", "real"] }],
  [[Infinity, Infinity], { output: "logits2", classOrder: ["spoof", "real"] }],
  [[0], { output: "logit1", classOrder: ["spoof", "real"] }],
  [[0, Math.log(3)], { output: "logits2", classOrder: ["spoof", "real"] }],
];
console.log(JSON.stringify(cases.map(([v, cfg]) => probability(Float32Array.from(v), cfg))));
"""


def test_js_probability_gives_no_score_for_a_non_finite_output(tmp_path):
    """As SpoofModel.predict: a non-finite logit (sigmoid(+inf) = 1.0 would read live) has no score."""
    node = _node()
    (tmp_path / "p.mjs").write_text(PROBABILITY)
    out = subprocess.run([node, str(tmp_path / "p.mjs"), PIPELINE.as_uri()], check=True, timeout=60, capture_output=True, text=True).stdout
    got = json.loads(out)
    assert got[:4] == [None] * 4
    assert got[4] == pytest.approx(0.5) and got[5] == pytest.approx(0.75)
