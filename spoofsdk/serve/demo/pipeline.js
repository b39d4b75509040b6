// The in-browser demo's pipeline: YuNet face detection, the runtime's face crop, the model.
//
// Mirrors spoofsdk/crop.py (crop_region, crop_face, resize_square, to_tensor) and
// spoofsdk/detect.py (YuNetDetector on a copy downscaled to 320 px) so that a face scores the
// same here as in Python (tests/test_serve_browser.py checks |delta| <= 1e-3 on NUAA frames).
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

// --- resizing, as cv2.resize does it for 8-bit 3-channel images ---------------------------------

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
  const row = new Float64Array(dw * 3);
  const acc = new Float64Array(dw * 3);
  let current = yt.length ? yt[0][0] : 0;
  const flush = (dy) => {
    for (let k = 0; k < dw * 3; k++) out[dy * dw * 3 + k] = saturate(Math.fround(acc[k]));
    acc.fill(0);
  };
  for (const [dy, syy, beta] of yt) {
    if (dy !== current) {
      flush(current);
      current = dy;
    }
    row.fill(0);
    for (const [dx, sxx, alpha] of xt) {
      for (let c = 0; c < 3; c++) row[dx * 3 + c] += alpha * get(sxx, syy, c);
    }
    for (let k = 0; k < dw * 3; k++) acc[k] += beta * row[k];
  }
  flush(current);
  return out;
}

// INTER_LINEAR with OpenCV's 11-bit fixed-point coefficients (enlarging).
function linearCoefs(ssize, dsize) {
  const scale = ssize / dsize;
  const idx = new Int32Array(dsize * 2);
  const coef = new Int32Array(dsize * 2);
  for (let d = 0; d < dsize; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (s < 0) { f = 0; s = 0; }
    if (s >= ssize - 1) { f = 0; s = ssize - 1; }
    idx[2 * d] = s;
    idx[2 * d + 1] = Math.min(s + 1, ssize - 1);
    // Each weight rounded on its own (they need not add up to 2048), as OpenCV does.
    coef[2 * d] = pyRound(Math.fround(1 - f) * 2048);
    coef[2 * d + 1] = pyRound(f * 2048);
  }
  return [idx, coef];
}

function resizeLinear(get, sw, sh, dw, dh) {
  const out = new Uint8Array(dw * dh * 3);
  const [xi, xc] = linearCoefs(sw, dw);
  const [yi, yc] = linearCoefs(sh, dh);
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

// Decode YuNet's outputs (cls/obj/bbox/kps per stride), threshold, NMS; boxes in frame pixels.
export function yunetDecode(outputs, det, factor, padW, padH) {
  const faces = [];
  for (const stride of [8, 16, 32]) {
    const cols = Math.floor(det.input_size / stride);
    const usedCols = Math.floor(padW / stride);
    const usedRows = Math.floor(padH / stride);
    const cls = outputs[`cls_${stride}`].data;
    const obj = outputs[`obj_${stride}`].data;
    const bbox = outputs[`bbox_${stride}`].data;
    for (let r = 0; r < usedRows; r++) {
      for (let c = 0; c < usedCols; c++) {
        const idx = r * cols + c;
        const score = Math.sqrt(Math.min(1, Math.max(0, cls[idx])) * Math.min(1, Math.max(0, obj[idx])));
        if (score < det.score_threshold) continue;
        const cx = (c + bbox[idx * 4]) * stride;
        const cy = (r + bbox[idx * 4 + 1]) * stride;
        const w = Math.exp(bbox[idx * 4 + 2]) * stride;
        const h = Math.exp(bbox[idx * 4 + 3]) * stride;
        faces.push({ box: [cx - w / 2, cy - h / 2, w, h], score });
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
    .map((f) => ({ box: f.box.map((v) => v / factor), score: f.score }))
    .filter((f) => f.box[2] > 1 && f.box[3] > 1)
    .sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);
}

// --- the whole thing --------------------------------------------------------------------------

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

  // One face: the runtime's border and size gates, crop, score, label (as its image mode does).
  // Landmark and sharpness/exposure gates are not ported: the demo asks only what a visitor can fix.
  async judge(image, box) {
    const q = this.config.quality;
    const [x, y, w, h] = box;
    const face = { box: box.map(Math.round), label: "unknown", score: null, reason: null, message: "" };
    const inside = Math.max(0, Math.min(x + w, image.width) - Math.max(x, 0)) * Math.max(0, Math.min(y + h, image.height) - Math.max(y, 0));
    const borderCut = 1 - inside / (w * h);
    if (q.max_border_cut !== null && borderCut > q.max_border_cut) {
      const share = Math.round(borderCut * 100);
      return Object.assign(face, { reason: "cut_by_border", message: `face cut by the frame border (${share}% of it outside): centre the face` });
    }
    const facePx = Math.min(w, h);
    if (q.min_face_px !== null && facePx < q.min_face_px) {
      return Object.assign(face, { reason: "face_too_small", message: `face too small: ${Math.round(facePx)} px < ${q.min_face_px} px (move closer)` });
    }
    const crop = cropFace(image, box, this.cfg.cropScale, this.cfg.size, this.cfg.cropPolicy);
    // As the runtime: padding refuses only a face not known to be inside the frame.
    const faceInside = borderCut <= (q.max_border_cut === null ? 0.1 : q.max_border_cut);
    if (q.max_padded !== null && crop.padded > q.max_padded && !faceInside) {
      return Object.assign(face, { reason: "cut_by_border", message: "face too close to the frame border: centre the face or step back" });
    }
    const score = await this.scoreCrop(crop.rgb);
    if (score === null) {
      return Object.assign(face, { reason: "error", message: "the model's output for this face is not a number (broken input or numeric overflow)" });
    }
    face.score = score;
    face.label = score >= this.cfg.threshold ? "real" : "spoof";
    return face;
  }

  async check(image) {
    const dets = await this.detect(image);
    const faces = [];
    for (const d of dets) faces.push({ ...(await this.judge(image, d.box)), detector_score: d.score });
    return faces;
  }
}
