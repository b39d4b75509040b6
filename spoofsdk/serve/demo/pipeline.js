// The in-browser demo's pipeline: YuNet face detection, the runtime's face crop, quality gates,
// the model, and the runtime's decision over frames.
//
// Mirrors spoofsdk/crop.py (crop_region, crop_face, resize_square, to_tensor) and
// spoofsdk/detect.py (YuNetDetector on a copy downscaled to 320 px) so that a face scores the
// same here as in Python (tests/test_serve_browser.py checks |delta| <= 1e-3 on NUAA frames);
// spoofsdk/quality.py (measure, assess) so that a face the runtime refuses (dark, overexposed,
// blurred, small, cut by the border) is `unknown` here with the same reason; and spoofsdk/track.py
// (FaceTrack, IoUTracker) so that, as in the runtime's stream mode, a face is `real` only after
// consistent evidence over several frames, never on one (tests/test_serve_pipeline_js.py compares
// all three with the runtime in Node).
// Images are {data, width, height, channels} with data a Uint8Array/Uint8ClampedArray in RGB
// (channels 3) or RGBA (channels 4, as canvas ImageData gives it); the alpha channel is ignored.
// No DOM here: the page (app.js) and the tests call these functions.

// What this file implements; anything else in a model's metadata is refused with a message.
export const CROP_POLICIES = ["pad", "shift_cap"];
export const OUTPUTS = ["logits2", "logit1", "logitsN"];

export function checkConfig(config) {
  const m = config.model;
  const policy = m.crop_policy === undefined ? "pad" : m.crop_policy;
  if (!CROP_POLICIES.includes(policy)) {
    throw new Error(`this demo does not implement the model's crop_policy "${policy}" (it implements: ${CROP_POLICIES.join(", ")})`);
  }
  if (!OUTPUTS.includes(m.output)) {
    throw new Error(`this demo does not implement the model's output "${m.output}" (it implements: ${OUTPUTS.join(", ")})`);
  }
  if (!["RGB", "BGR"].includes(m.color_order.toUpperCase())) throw new Error(`unknown color_order ${m.color_order}`);
  const [h, w] = m.input_size.toLowerCase().split("x").map(Number);
  if (h !== w) throw new Error(`input_size must be square, got ${m.input_size}`);
  return {
    name: m.name,
    size: h,
    colorOrder: m.color_order.toUpperCase(),
    mean: m.mean.split(",").map(Number),
    std: m.std.split(",").map(Number),
    cropScale: Number(m.crop_scale),
    output: m.output,
    classOrder: m.class_order.split(",").map((s) => s.trim()),
    threshold: Number(m.threshold),
    cropPolicy: policy,
  };
}

// Python's round(): halves go to the even neighbour.
export function pyRound(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// OpenCV's cvRound for the float -> uint8 casts (round half to even, then saturate).
function saturate(x) {
  const r = pyRound(x);
  return r < 0 ? 0 : r > 255 ? 255 : r;
}

// --- resizing, as cv2.resize does it for 8-bit 3-channel images (and grey: measureFace) ---------

// INTER_AREA's source-cell table (OpenCV's computeResizeAreaTab).
function areaTable(ssize, dsize, scale) {
  const tab = [];
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push([dx, sx1 - 1, Math.fround((sx1 - fsx1) / cellWidth)]);
    for (let sx = sx1; sx < sx2; sx++) tab.push([dx, sx, Math.fround(1.0 / cellWidth)]);
    if (fsx2 - sx2 > 1e-3) tab.push([dx, sx2, Math.fround(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth)]);
  }
  return tab;
}

// Pixel accessor over a (possibly virtual, padded) RGB region: get(x, y, c).
function resizeArea(get, sw, sh, dw, dh) {
  const out = new Uint8Array(dw * dh * 3);
  const sx = sw / dw;
  const sy = sh / dh;
  const ix = Math.round(sx);
  const iy = Math.round(sy);
  if (Math.abs(sx - ix) < 1e-12 && Math.abs(sy - iy) < 1e-12) {
    // Integer factors: OpenCV's resizeAreaFast (the 2x2 case rounds half up, as its SIMD path does).
    const area = ix * iy;
    const scale = Math.fround(1 / area);
    for (let y = 0; y < dh; y++) {
      for (let x = 0; x < dw; x++) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (let j = 0; j < iy; j++) for (let i = 0; i < ix; i++) sum += get(x * ix + i, y * iy + j, c);
          out[(y * dw + x) * 3 + c] = area === 4 ? (sum + 2) >> 2 : saturate(Math.fround(sum * scale));
        }
      }
    }
    return out;
  }
  const xt = areaTable(sw, dw, sx);
  const yt = areaTable(sh, dh, sy);
  // OpenCV sums in float (ResizeArea_Invoker's WT for 8-bit): every product and sum is rounded to
  // float here too (Math.fround), or a level near a half would round the other way now and then.
  const f = Math.fround;
  const row = new Float32Array(dw * 3);
  const acc = new Float32Array(dw * 3);
  let current = yt.length ? yt[0][0] : 0;
  const flush = (dy) => {
    for (let k = 0; k < dw * 3; k++) out[dy * dw * 3 + k] = saturate(acc[k]);
    acc.fill(0);
  };
  for (const [dy, syy, beta] of yt) {
    if (dy !== current) {
      flush(current);
      current = dy;
    }
    row.fill(0);
    for (const [dx, sxx, alpha] of xt) {
      for (let c = 0; c < 3; c++) row[dx * 3 + c] = f(row[dx * 3 + c] + f(alpha * get(sxx, syy, c)));
    }
    for (let k = 0; k < dw * 3; k++) acc[k] = f(acc[k] + f(beta * row[k]));
  }
  flush(current);
  return out;
}

// INTER_LINEAR with OpenCV's 11-bit fixed-point coefficients (enlarging; measureFace also shrinks one side with it).
// Past the edge, OpenCV clamps a column's weights (the edge pixel alone) but only a row's index:
// the top and bottom rows keep their two weights, both on the edge row, which need not add up to
// 2048 once rounded (cv::resize computes yofs/beta without the clamp its xofs/alpha get).
function linearCoefs(ssize, dsize, clampWeights) {
  const scale = ssize / dsize;
  const idx = new Int32Array(dsize * 2);
  const coef = new Int32Array(dsize * 2);
  for (let d = 0; d < dsize; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (clampWeights) {
      if (s < 0) { f = 0; s = 0; }
      if (s >= ssize - 1) { f = 0; s = ssize - 1; }
    }
    idx[2 * d] = Math.min(Math.max(s, 0), ssize - 1);
    idx[2 * d + 1] = Math.min(Math.max(s + 1, 0), ssize - 1);
    // Each weight rounded on its own (they need not add up to 2048), as OpenCV does.
    coef[2 * d] = pyRound(Math.fround(1 - f) * 2048);
    coef[2 * d + 1] = pyRound(f * 2048);
  }
  return [idx, coef];
}

function resizeLinear(get, sw, sh, dw, dh) {
  const out = new Uint8Array(dw * dh * 3);
  const [xi, xc] = linearCoefs(sw, dw, true);
  const [yi, yc] = linearCoefs(sh, dh, false);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      for (let c = 0; c < 3; c++) {
        const h0 = get(xi[2 * x], yi[2 * y], c) * xc[2 * x] + get(xi[2 * x + 1], yi[2 * y], c) * xc[2 * x + 1];
        const h1 = get(xi[2 * x], yi[2 * y + 1], c) * xc[2 * x] + get(xi[2 * x + 1], yi[2 * y + 1], c) * xc[2 * x + 1];
        // OpenCV's vectorised vertical pass: 16-bit multiply-high on (row >> 4), then round >> 2.
        const v = (Math.floor(((h0 >> 4) * yc[2 * y]) / 65536) + Math.floor(((h1 >> 4) * yc[2 * y + 1]) / 65536) + 2) >> 2;
        out[(y * dw + x) * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return out;
}

function copy(get, w, h) {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) out[(y * w + x) * 3 + c] = get(x, y, c);
  return out;
}

// resize_square / cv2.resize: area when shrinking, linear when enlarging.
export function resize(get, sw, sh, dw, dh) {
  if (sw === dw && sh === dh) return copy(get, sw, sh);
  return Math.max(sw, sh) > Math.max(dw, dh) ? resizeArea(get, sw, sh, dw, dh) : resizeLinear(get, sw, sh, dw, dh);
}

// cv2.resize(..., INTER_LINEAR), which OpenCV turns into INTER_AREA for an exact halving.
export function resizeLinearCv(get, sw, sh, dw, dh) {
  if (sw === dw && sh === dh) return copy(get, sw, sh);
  if (sw === 2 * dw && sh === 2 * dh) return resizeArea(get, sw, sh, dw, dh);
  return resizeLinear(get, sw, sh, dw, dh);
}

function pixelGetter(image) {
  const { data, width, channels } = image;
  return (x, y, c) => data[(y * width + x) * channels + c];
}

// --- the face crop (spoofsdk/crop.py) ------------------------------------------------------------

export function cropRegion(width, height, box, scale) {
  const [x, y, w, h] = box;
  if (!(w > 0 && h > 0) || ![x, y, w, h].every(Number.isFinite)) throw new Error(`face box must have positive finite size, got ${box}`);
  const side = Math.max(1, pyRound(Math.max(w, h) * scale));
  const cx = x + w / 2;
  const cy = y + h / 2;
  const x0 = pyRound(cx - side / 2);
  const y0 = pyRound(cy - side / 2);
  const nx0 = Math.min(Math.max(x0, Math.min(0, width - side)), Math.max(0, width - side));
  const ny0 = Math.min(Math.max(y0, Math.min(0, height - side)), Math.max(0, height - side));
  return { x0: nx0, y0: ny0, side, shifted: nx0 !== x0 || ny0 !== y0 };
}

// Policy shift_cap (MiniFASNet's, crop.py shift_cap_region): a rectangle of scale x the box on each
// axis, the scale capped to fit the frame, shifted inside it, corners truncated; end exclusive.
export function shiftCapRegion(width, height, box, scale) {
  const [x, y, w, h] = box;
  if (!(w > 0 && h > 0) || ![x, y, w, h].every(Number.isFinite)) throw new Error(`face box must have positive finite size, got ${box}`);
  if (x >= width || y >= height || x + w <= 0 || y + h <= 0) throw new Error(`face box ${box} lies outside the ${width}x${height} frame`);
  const s = Math.min((height - 1) / h, (width - 1) / w, scale);
  const cx = x + w / 2;
  const cy = y + h / 2;
  let x0 = cx - (w * s) / 2;
  let x1 = cx + (w * s) / 2;
  let y0 = cy - (h * s) / 2;
  let y1 = cy + (h * s) / 2;
  if (x0 < 0) { x1 -= x0; x0 = 0; }
  if (y0 < 0) { y1 -= y0; y0 = 0; }
  if (x1 > width - 1) { x0 -= x1 - width + 1; x1 = width - 1; }
  if (y1 > height - 1) { y0 -= y1 - height + 1; y1 = height - 1; }
  return [Math.max(0, Math.trunc(x0)), Math.max(0, Math.trunc(y0)), Math.trunc(x1) + 1, Math.trunc(y1) + 1];
}

// crop_face: the model input for a face box, by the model's crop policy (RGB, size x size).
export function cropFace(image, box, scale, size, policy = "pad") {
  if (policy === "shift_cap") {
    const [x0, y0, x1, y1] = shiftCapRegion(image.width, image.height, box, scale);
    const px = pixelGetter(image);
    const rgb = resizeLinearCv((x, y, c) => px(x0 + x, y0 + y, c), x1 - x0, y1 - y0, size, size);
    return { rgb, padded: 0, region: [x0, y0, x1, y1] };
  }
  if (policy !== "pad") throw new Error(`crop policy "${policy}" is not implemented`);
  const { x0, y0, side } = cropRegion(image.width, image.height, box, scale);
  const px = pixelGetter(image);
  const insideW = Math.min(x0 + side, image.width) - Math.max(x0, 0);
  const insideH = Math.min(y0 + side, image.height) - Math.max(y0, 0);
  if (insideW <= 0 || insideH <= 0) throw new Error(`face box ${box} lies outside the ${image.width}x${image.height} frame`);
  const padded = 1 - (insideW * insideH) / (side * side);
  const get = (x, y, c) => {
    const fx = x0 + x;
    const fy = y0 + y;
    return fx < 0 || fy < 0 || fx >= image.width || fy >= image.height ? 0 : px(fx, fy, c);
  };
  return { rgb: resize(get, side, side, size, size), padded, region: [x0, y0, x0 + side, y0 + side] };
}

// to_tensor: NCHW float32 in the model's colour order, (x / 255 - mean) / std in float32 steps.
export function toTensor(rgb, size, colorOrder, mean, std) {
  const n = size * size;
  const out = new Float32Array(3 * n);
  const f = Math.fround;
  const scale = f(1 / 255);
  for (let ch = 0; ch < 3; ch++) {
    const src = colorOrder === "RGB" ? ch : 2 - ch;
    const m = f(mean[ch]);
    const inv = f(1 / f(std[ch]));
    for (let i = 0; i < n; i++) out[ch * n + i] = f(f(f(rgb[i * 3 + src] * scale) - m) * inv);
  }
  return out;
}

// P(live) from the model's raw output, as SpoofModel.predict reads it; null when the output is not a
// number (a logit of +Infinity would give a finite 1.0, i.e. live): that face has no score.
export function probability(values, cfg) {
  const width = cfg.output === "logit1" ? 1 : cfg.classOrder.length;
  if (!Array.from(values.slice(0, width)).every(Number.isFinite)) return null;
  let p;
  if (cfg.output === "logit1") {
    p = 1 / (1 + Math.exp(-values[0]));
  } else {
    // Softmax; P(real) sums every class named real (one for logits2, any for logitsN).
    const z = Array.from(values.slice(0, cfg.classOrder.length));
    const top = Math.max(...z);
    const e = z.map((v) => Math.exp(v - top));
    const real = e.reduce((a, v, i) => a + (cfg.classOrder[i] === "real" ? v : 0), 0);
    p = real / e.reduce((a, b) => a + b, 0);
  }
  return Number.isFinite(p) ? p : null;
}

// --- YuNet (cv2.FaceDetectorYN's pre- and post-processing) ---------------------------------------

function iou(a, b) {
  const x0 = Math.max(a[0], b[0]);
  const y0 = Math.max(a[1], b[1]);
  const x1 = Math.min(a[0] + a[2], b[0] + b[2]);
  const y1 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
  return inter / (a[2] * a[3] + b[2] * b[3] - inter);
}

// The detector input: the frame downscaled (area) so its longer side is at most detect_size,
// placed top-left on a black input_size square (the ONNX file has a fixed 640x640 input), BGR 0..255.
export function yunetInput(image, det) {
  const factor = Math.min(1, det.detect_size / Math.max(image.width, image.height));
  const w = factor < 1 ? Math.max(1, pyRound(image.width * factor)) : image.width;
  const h = factor < 1 ? Math.max(1, pyRound(image.height * factor)) : image.height;
  if (w > det.input_size || h > det.input_size) throw new Error("frame too large for the detector input");
  const small = factor < 1 ? resize(pixelGetter(image), image.width, image.height, w, h) : resize(pixelGetter(image), w, h, w, h);
  const s = det.input_size;
  const tensor = new Float32Array(3 * s * s);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      tensor[y * s + x] = small[i + 2];
      tensor[s * s + y * s + x] = small[i + 1];
      tensor[2 * s * s + y * s + x] = small[i];
    }
  }
  return { tensor, factor: w / image.width, width: w, height: h };
}

// Decode YuNet's outputs (cls/obj/bbox/kps per stride), threshold, NMS; boxes and the 5 landmarks
// (eyes, nose tip, mouth corners; the border gate uses them) in frame pixels.
export function yunetDecode(outputs, det, factor, padW, padH) {
  const faces = [];
  for (const stride of [8, 16, 32]) {
    const cols = Math.floor(det.input_size / stride);
    const usedCols = Math.floor(padW / stride);
    const usedRows = Math.floor(padH / stride);
    const cls = outputs[`cls_${stride}`].data;
    const obj = outputs[`obj_${stride}`].data;
    const bbox = outputs[`bbox_${stride}`].data;
    const kps = outputs[`kps_${stride}`] ? outputs[`kps_${stride}`].data : null;
    for (let r = 0; r < usedRows; r++) {
      for (let c = 0; c < usedCols; c++) {
        const idx = r * cols + c;
        const score = Math.sqrt(Math.min(1, Math.max(0, cls[idx])) * Math.min(1, Math.max(0, obj[idx])));
        if (score < det.score_threshold) continue;
        const cx = (c + bbox[idx * 4]) * stride;
        const cy = (r + bbox[idx * 4 + 1]) * stride;
        const w = Math.exp(bbox[idx * 4 + 2]) * stride;
        const h = Math.exp(bbox[idx * 4 + 3]) * stride;
        const landmarks = [];
        for (let n = 0; kps && n < 5; n++) landmarks.push([(c + kps[idx * 10 + 2 * n]) * stride, (r + kps[idx * 10 + 2 * n + 1]) * stride]);
        faces.push({ box: [cx - w / 2, cy - h / 2, w, h], score, landmarks: kps ? landmarks : null });
      }
    }
  }
  faces.sort((a, b) => b.score - a.score);
  const kept = [];
  for (const f of faces) {
    if (kept.length >= det.top_k) break;
    if (kept.every((k) => iou(k.box, f.box) <= det.nms_threshold)) kept.push(f);
  }
  return kept
    .map((f) => ({ box: f.box.map((v) => v / factor), score: f.score, landmarks: f.landmarks && f.landmarks.map((p) => p.map((v) => v / factor)) }))
    .filter((f) => f.box[2] > 1 && f.box[3] > 1)
    .sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);
}

// --- quality gates (spoofsdk/quality.py) --------------------------------------------------------
//
// A model's score on a dark, overexposed, blurred, tiny or half-visible face is noise, and noise
// must not become `real`: such a face is `unknown` with the gate's reason, as in the runtime. The
// figures are the runtime's own (measure()), on the same region (the face box, not the model crop),
// with the same steps (BGR->grey, resize to MEASURE_SIDE, Laplacian), so that a frame the runtime
// refuses is refused here for the same reason (tests/test_serve_pipeline_js.py compares them).

// QualityConfig's and SmoothingConfig's defaults. config.json carries the runtime's values
// (spoofsdk/serve/demo.py writes them); these only fill in keys an older config.json lacks, so a
// missing key never switches a gate off. null in config.json switches a gate off, as None does.
export const QUALITY_DEFAULTS = {
  min_face_px: 64, min_sharpness: 15.0, min_brightness: 40.0, max_brightness: 220.0,
  max_clipped: 0.5, max_border_cut: 0.1, max_landmarks_outside: 0, max_padded: 0.3,
};
export const SMOOTHING_DEFAULTS = {
  alpha: 0.4, margin: 0.05, min_frames: 5, min_seconds: 0.3, forget_after: 0.5, gap_frames: 3.0, iou_threshold: 0.3,
};
export const MEASURE_SIDE = 96; // quality.MEASURE_SIDE: sharpness must not depend on the face's size in the frame
export const LANDMARK_MARGIN = 0.03; // quality.LANDMARK_MARGIN: YuNet squeezes a half face's landmarks against the edge
export const CLIP_LEVEL = 250; // quality.CLIP_LEVEL: a grey level at or above it counts as saturated

// cv2.cvtColor(BGR2GRAY) for 8-bit: OpenCV's 15-bit fixed point (0.299 R + 0.587 G + 0.114 B, the
// blue weight rounded down so the three add up to 1). Equal to OpenCV on all 2^24 colours.
function greyLevel(r, g, b) {
  return (r * 9798 + g * 19235 + b * 3735 + 16384) >> 15;
}

function borderCut(width, height, box) {
  const [x, y, w, h] = box;
  const iw = Math.max(0, Math.min(x + w, width) - Math.max(x, 0));
  const ih = Math.max(0, Math.min(y + h, height) - Math.max(y, 0));
  return w > 0 && h > 0 ? 1 - (iw * ih) / (w * h) : 1;
}

function landmarksOutside(width, height, box, landmarks) {
  if (!landmarks || !landmarks.length) return 0; // no landmarks (a box given by hand): as the runtime, 0
  const margin = LANDMARK_MARGIN * Math.max(box[2], box[3]);
  return landmarks.filter(([x, y]) => !(margin <= x && x < width - margin && margin <= y && y < height - margin)).length;
}

// quality.measure(): the figures of the face `box` (x, y, w, h) in `image`. `padded` and
// `face_inside` are added by scoreFace once the model crop is known, as the runtime does.
export function measureFace(image, box, landmarks = null) {
  const { width, height } = image;
  const [x, y, w, h] = box;
  const x0 = Math.max(pyRound(x), 0);
  const y0 = Math.max(pyRound(y), 0);
  const x1 = Math.min(pyRound(x + w), width);
  const y1 = Math.min(pyRound(y + h), height);
  const figures = {
    face_px: Math.min(w, h),
    border_cut: borderCut(width, height, box),
    landmarks_outside: landmarksOutside(width, height, box, landmarks),
    padded: 0,
  };
  const pw = x1 - x0;
  const ph = y1 - y0;
  if (pw <= 0 || ph <= 0) return Object.assign(figures, { sharpness: 0, brightness: 0, clipped: 0 });
  // The face patch in grey, then resized to MEASURE_SIDE square as the runtime does: area when
  // both sides shrink, else linear. The colour resizers do the work (every channel carries the
  // grey level; channel 0 is kept): OpenCV resizes each channel the same way.
  const px = pixelGetter(image);
  const patch = new Uint8Array(pw * ph);
  for (let j = 0; j < ph; j++) {
    for (let i = 0; i < pw; i++) patch[j * pw + i] = greyLevel(px(x0 + i, y0 + j, 0), px(x0 + i, y0 + j, 1), px(x0 + i, y0 + j, 2));
  }
  const get = (i, j) => patch[j * pw + i];
  const S = MEASURE_SIDE;
  const rgb = Math.min(pw, ph) > S ? resize(get, pw, ph, S, S) : resizeLinearCv(get, pw, ph, S, S);
  const grey = new Uint8Array(S * S);
  for (let k = 0; k < S * S; k++) grey[k] = rgb[k * 3];
  // Sharpness: variance of cv2.Laplacian (ksize 1: the 4-neighbour kernel, border reflected
  // without repeating the edge, BORDER_REFLECT_101), as cv2.meanStdDev computes it (sums in double).
  const at = (i, j) => grey[(j < 0 ? -j : j >= S ? 2 * S - 2 - j : j) * S + (i < 0 ? -i : i >= S ? 2 * S - 2 - i : i)];
  let sum = 0;
  let sumSq = 0;
  let level = 0;
  let clipped = 0;
  for (let j = 0; j < S; j++) {
    for (let i = 0; i < S; i++) {
      const v = grey[j * S + i];
      const lap = at(i - 1, j) + at(i + 1, j) + at(i, j - 1) + at(i, j + 1) - 4 * v;
      sum += lap;
      sumSq += lap * lap;
      level += v;
      if (v >= CLIP_LEVEL) clipped += 1;
    }
  }
  const n = S * S;
  const std = Math.sqrt(Math.max(0, sumSq / n - (sum / n) ** 2));
  return Object.assign(figures, { sharpness: std * std, brightness: level / n, clipped: clipped / n });
}

// quality.face_inside(): the face itself is inside the frame (not cut), whatever its context crop needs.
export function faceInside(figures, q) {
  const maxCut = q.max_border_cut !== null ? q.max_border_cut : QUALITY_DEFAULTS.max_border_cut;
  const maxOut = q.max_landmarks_outside !== null ? q.max_landmarks_outside : 0;
  return figures.border_cut <= maxCut && figures.landmarks_outside <= maxOut;
}

// Python's f"{x:.{digits}f}" for the messages: toFixed, except on an exact tie (0.125 to 2 digits),
// which Python rounds to the even neighbour ("0.12") and toFixed up ("0.13").
export function fixed(x, digits) {
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  const exact = Math.abs(x).toFixed(100); // every digit of the double (a tie has few)
  const point = exact.indexOf(".");
  if (/^50*$/.test(exact.slice(point + 1 + digits))) {
    const kept = exact.slice(0, digits ? point + 1 + digits : point);
    if (Number(kept[kept.length - 1]) % 2 === 0) return sign + kept;
  }
  return sign + Math.abs(x).toFixed(digits);
}
// f"{x:.0%}"
const percent = (x) => `${fixed(x * 100, 0)}%`;

// quality.assess(): the first gate that fails, in the runtime's order, gives the reason and the
// message (the same words, so the page tells the visitor what the runtime would); null when all pass.
export function assessFace(f, q) {
  const gates = [
    [q.max_border_cut, () => f.border_cut > q.max_border_cut, "cut_by_border",
      () => `face cut by the frame border (${percent(f.border_cut)} of it outside): centre the face`],
    [q.max_landmarks_outside, () => f.landmarks_outside > q.max_landmarks_outside, "cut_by_border",
      () => `face cut by the frame border (${fixed(f.landmarks_outside, 0)} of its landmarks outside): centre the face or step back`],
    [q.max_padded, () => f.padded > q.max_padded && !f.face_inside, "cut_by_border",
      () => `face too close to the frame border (${percent(f.padded)} of the crop outside the frame): centre the face or step back`],
    [q.min_face_px, () => f.face_px < q.min_face_px, "face_too_small",
      () => `face too small: ${fixed(f.face_px, 0)} px < ${fixed(q.min_face_px, 0)} px (move closer)`],
    [q.min_brightness, () => f.brightness < q.min_brightness, "too_dark",
      () => `face too dark: brightness ${fixed(f.brightness, 0)} < ${fixed(q.min_brightness, 0)} (add light)`],
    [q.max_brightness, () => f.brightness > q.max_brightness, "overexposed",
      () => `face overexposed: brightness ${fixed(f.brightness, 0)} > ${fixed(q.max_brightness, 0)} (less direct light)`],
    [q.max_clipped, () => f.clipped > q.max_clipped, "overexposed",
      () => `face overexposed: ${percent(f.clipped)} of it saturated (less direct light)`],
    [q.min_sharpness, () => f.sharpness < q.min_sharpness, "too_blurry",
      () => `face too blurred: sharpness ${fixed(f.sharpness, 1)} < ${fixed(q.min_sharpness, 1)} (hold still, check focus)`],
  ];
  for (const [limit, failed, reason, message] of gates) {
    if (limit !== null && limit !== undefined && failed()) return { reason, message: message() };
  }
  return null;
}

// --- the temporal decision (spoofsdk/track.py) ----------------------------------------------------
//
// One frame's score is weak evidence: a printed photo moved in front of the camera can score high
// for a frame or two. So, as the runtime's stream mode, each face is followed over frames (boxes
// matched by IoU) and turns `real` only after consistent evidence: min_frames scored frames in a
// row at or above the threshold, spanning min_seconds, with the smoothed score (EMA) above the
// threshold plus a margin. A frame scored below the threshold is never `real`. A frame refused by
// a gate is no evidence either way: it is `unknown` with the gate's reason.

export class FaceTrack {
  constructor(id, box, t) {
    Object.assign(this, { id, box, firstSeen: t, lastSeen: t, hits: 1 });
    this.ema = null;
    this.state = "unknown";
    this.streak = 0;
    this.streakStart = null;
    this.sinceOn = null; // scored frames since the last one at the `real` level (0: this one); null: none yet
    this.lastOnT = null; // time of that frame
  }

  // A frame the model could not score: the streak and a `real` decision end (the EMA stays: it
  // holds the low scores too, which an error must not wash out).
  discardEvidence() {
    this.streak = 0;
    this.streakStart = null;
    if (this.state === "real") this.state = "unknown";
  }

  // Found again after frames without it: the face may not be the one that left, so `real` needs
  // a new frame at the `real` level.
  resumeAfterGap() {
    this.sinceOn = null;
    this.lastOnT = null;
    if (this.state === "real") this.state = "unknown";
  }

  // FaceTrack.observe: add one frame's evidence (score null: a gate refused the frame). Returns this
  // frame's {label, reason, message}; for a refused frame the caller keeps the gate's reason.
  observe(score, t, threshold, s) {
    if (score === null) return { label: "unknown", reason: null, message: "" };
    this.ema = this.ema === null ? score : s.alpha * score + (1 - s.alpha) * this.ema;
    if (score >= threshold) {
      if (this.streak === 0) this.streakStart = t;
      this.streak += 1;
    } else {
      this.streak = 0;
      this.streakStart = null;
    }
    const on = Math.min(threshold + s.margin, (threshold + 1) / 2);
    const off = Math.max(threshold - s.margin, threshold / 2);
    if (score >= on) {
      this.sinceOn = 0;
      this.lastOnT = t;
    } else if (this.sinceOn !== null) {
      this.sinceOn += 1;
    }
    // The face's own recent frames must reach the `real` level now and then, or a photo swapped in
    // for a live face, scoring just above the threshold, would ride on the live face's history.
    const recent = this.sinceOn !== null && (this.sinceOn < s.min_frames || (this.lastOnT !== null && t - this.lastOnT < s.min_seconds));
    if (this.state === "real") {
      // Hysteresis against flicker, but a frame scored below the threshold is never real (fail closed).
      if (this.ema < off || score < threshold) this.state = "spoof";
      else if (!recent) this.state = "unknown";
    } else if (this.ema >= on && recent && this.streak >= s.min_frames && this.streakStart !== null && t - this.streakStart >= s.min_seconds) {
      this.state = "real";
    } else if (this.ema < threshold || score < threshold) {
      this.state = "spoof";
    } else {
      this.state = "unknown";
    }
    if (this.state !== "unknown") return { label: this.state, reason: null, message: "" };
    const span = this.streakStart === null ? 0 : t - this.streakStart;
    let message;
    if (this.streak < s.min_frames || span < s.min_seconds) {
      message = `collecting evidence: ${this.streak}/${s.min_frames} frames, ${fixed(span, 2)}/${fixed(s.min_seconds, 2)} s above threshold`;
    } else if (!recent) {
      message = `collecting evidence: no frame scored ${fixed(on, 3)} or more in the last ${s.min_frames} frames and ${fixed(s.min_seconds, 2)} s`;
    } else {
      message = `collecting evidence: smoothed score ${fixed(this.ema, 3)}, ${fixed(on, 3)} needed`;
    }
    return { label: "unknown", reason: "collecting_evidence", message };
  }
}

const INTERVAL_WINDOW = 15; // track.INTERVAL_WINDOW: frame intervals the median runs over

// track.IoUTracker: greedy IoU matching of this frame's boxes to the tracks; a track unseen for its
// gap (forget_after, widened to gap_frames frame intervals on a slow machine, where frames come
// slower than forget_after and every track would otherwise be dropped between two frames) is
// forgotten, and a face that comes back must earn `real` again.
export class Tracker {
  constructor(smoothing) {
    this.config = smoothing;
    this.reset();
  }

  reset() {
    this.tracks = [];
    this.nextId = 1;
    this.intervals = [];
    this.lastFrameT = null;
    this.lastUpdateT = null;
  }

  get gap() {
    const c = this.config;
    if (!this.intervals.length || c.gap_frames <= 0) return c.forget_after;
    const sorted = [...this.intervals].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    return Math.max(c.forget_after, c.gap_frames * median);
  }

  // A frame arrived at t. A clock that goes back ends every track (their evidence was counted on the old clock).
  tick(t) {
    if (this.lastFrameT !== null && t < this.lastFrameT) {
      this.tracks = [];
      this.intervals = [];
      this.lastUpdateT = null;
    }
    if (this.lastFrameT !== null && t > this.lastFrameT) {
      this.intervals.push(t - this.lastFrameT);
      if (this.intervals.length > INTERVAL_WINDOW) this.intervals.shift();
    }
    this.lastFrameT = t;
  }

  // Assign each box to a track (continuing one or starting one); the tracks in the order of `boxes`.
  update(boxes, t) {
    this.tick(t);
    const gap = this.gap;
    this.tracks = this.tracks.filter((tr) => t - tr.lastSeen <= gap);
    // A track matched now but not at the previous update was missed in between: see resumeAfterGap.
    const missedBefore = this.lastUpdateT !== null && this.lastUpdateT < t ? this.lastUpdateT : null;
    this.lastUpdateT = t;
    const pairs = [];
    this.tracks.forEach((tr, ti) => boxes.forEach((b, bi) => pairs.push([iou(tr.box, b), ti, bi])));
    pairs.sort((a, b) => b[0] - a[0] || b[1] - a[1] || b[2] - a[2]); // as Python's sorted(reverse=True) on the tuples
    const assigned = new Map();
    const usedTracks = new Set();
    for (const [overlap, ti, bi] of pairs) {
      if (!(overlap >= this.config.iou_threshold)) break;
      if (usedTracks.has(ti) || assigned.has(bi)) continue;
      usedTracks.add(ti);
      assigned.set(bi, this.tracks[ti]);
    }
    return boxes.map((box, bi) => {
      let track = assigned.get(bi);
      if (track === undefined) {
        track = new FaceTrack(this.nextId++, box, t);
        this.tracks.push(track);
      } else {
        if (missedBefore !== null && track.lastSeen < missedBefore) track.resumeAfterGap();
        Object.assign(track, { box, lastSeen: t, hits: track.hits + 1 });
      }
      return track;
    });
  }
}

// --- the whole thing --------------------------------------------------------------------------

const now = () => performance.now() / 1000;

export class Pipeline {
  // ort: the onnxruntime-web module; base: URL folder holding config.json, model.onnx, yunet.onnx.
  static async load(ort, base = "") {
    const config = await (await fetch(`${base}config.json`)).json();
    const cfg = checkConfig(config);
    const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const model = await ort.InferenceSession.create(`${base}model.onnx`, options);
    const yunet = await ort.InferenceSession.create(`${base}yunet.onnx`, options);
    return new Pipeline(ort, config, cfg, model, yunet);
  }

  constructor(ort, config, cfg, model, yunet) {
    Object.assign(this, { ort, config, cfg, model, yunet });
    this.quality = { ...QUALITY_DEFAULTS, ...(config.quality || {}) };
    this.smoothing = { ...SMOOTHING_DEFAULTS, ...(config.smoothing || {}) };
    this.tracker = new Tracker(this.smoothing);
  }

  // Forget every face track (a new camera, a new visitor): every face earns `real` again.
  reset() {
    this.tracker.reset();
  }

  async detect(image) {
    const det = this.config.detector;
    const input = yunetInput(image, det);
    const s = det.input_size;
    const feeds = { [this.yunet.inputNames[0]]: new this.ort.Tensor("float32", input.tensor, [1, 3, s, s]) };
    const outputs = await this.yunet.run(feeds);
    // cv2 pads the detector input to a multiple of 32; only those cells are read.
    const padW = Math.ceil(input.width / 32) * 32;
    const padH = Math.ceil(input.height / 32) * 32;
    return yunetDecode(outputs, det, input.factor, padW, padH);
  }

  async scoreCrop(rgb) {
    const { size, colorOrder, mean, std } = this.cfg;
    const tensor = new this.ort.Tensor("float32", toTensor(rgb, size, colorOrder, mean, std), [1, 3, size, size]);
    const out = await this.model.run({ [this.model.inputNames[0]]: tensor });
    return probability(out[this.model.outputNames[0]].data, this.cfg);
  }

  // One face on one frame, as the runtime's LivenessChecker._faces: measure, crop, gate, score.
  // This is evidence, not a decision: label stays "unknown" (a gate's or the model's reason, or
  // none); judge() and check() turn scores into labels over frames.
  async scoreFace(image, box, landmarks = null) {
    const face = { box: box.map(pyRound), label: "unknown", score: null, reason: null, message: "", quality: null };
    const figures = measureFace(image, box, landmarks);
    face.quality = figures;
    let crop;
    try {
      crop = cropFace(image, box, this.cfg.cropScale, this.cfg.size, this.cfg.cropPolicy);
    } catch (e) {
      return Object.assign(face, { reason: "cut_by_border", message: String(e.message || e) });
    }
    // A face inside the frame that fills it is judged on its padded crop; only a cut face is refused.
    figures.padded = crop.padded;
    figures.face_inside = faceInside(figures, this.quality) ? 1 : 0;
    const refused = assessFace(figures, this.quality);
    if (refused) return Object.assign(face, refused);
    const score = await this.scoreCrop(crop.rgb);
    if (score === null) {
      return Object.assign(face, { reason: "error", message: "the model's output for this face is not a number (broken input or numeric overflow)" });
    }
    face.score = score;
    return face;
  }

  // The faces of one frame at time t (seconds): scored, matched to their tracks, labelled by the
  // track's decision, as the runtime's stream mode (LivenessChecker.feed) does.
  async judgeFaces(image, detections, t = now()) {
    const faces = [];
    for (const d of detections) faces.push(await this.scoreFace(image, d.box, d.landmarks || null));
    const tracks = this.tracker.update(detections.map((d) => d.box), t);
    faces.forEach((face, i) => {
      const track = tracks[i];
      const gated = face.score === null;
      if (face.reason === "error") track.discardEvidence(); // a broken answer mid-streak: `real` must be earned again
      const decision = track.observe(face.score, t, this.cfg.threshold, this.smoothing);
      Object.assign(face, { track_id: track.id, smoothed_score: track.ema });
      if (!gated) Object.assign(face, decision); // a refused frame keeps its gate's reason
      if (detections[i].score !== undefined) face.detector_score = detections[i].score;
    });
    return faces;
  }

  // One face of a frame at time t, with its box given (no detection): one frame of evidence for that
  // face's track, so a single frame is never `real`.
  async judge(image, box, t = now(), landmarks = null) {
    return (await this.judgeFaces(image, [{ box, landmarks }], t))[0];
  }

  // Every face of a camera frame taken at time t (seconds), largest first.
  async check(image, t = now()) {
    return this.judgeFaces(image, await this.detect(image), t);
  }
}
