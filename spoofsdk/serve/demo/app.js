// The demo page: webcam -> pipeline.js (YuNet, the runtime's crop and quality gates, the model,
// the runtime's decision over frames) -> label.
import { Pipeline } from "./pipeline.js";

const $ = (id) => document.getElementById(id);
const work = document.createElement("canvas");
const workCtx = work.getContext("2d", { willReadFrequently: true });

// An <img>, <video> or bitmap as an RGBA image for the pipeline.
function pixels(source, width, height) {
  work.width = width;
  work.height = height;
  workCtx.drawImage(source, 0, 0, width, height);
  return { data: workCtx.getImageData(0, 0, width, height).data, width, height, channels: 4 };
}

async function loadImage(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  return pixels(img, img.naturalWidth, img.naturalHeight);
}

function draw(faces, width, height) {
  const overlay = $("overlay");
  overlay.width = width;
  overlay.height = height;
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  ctx.lineWidth = 3;
  for (const f of faces) {
    ctx.strokeStyle = { real: "#3c3", spoof: "#f44" }[f.label] || "#fc3";
    ctx.strokeRect(...f.box);
  }
}

function show(faces) {
  const label = $("label");
  const top = faces[0];
  if (!top) {
    label.textContent = "no face";
    label.className = "unknown";
    $("message").textContent = "look at the camera";
    return;
  }
  // The label is the face track's decision (real only after several consistent frames); the score
  // is this frame's P(live), none when a quality gate refused the frame (the message says why).
  label.textContent = top.score === null ? top.label : `${top.label} ${top.score.toFixed(3)}`;
  label.className = top.label;
  $("message").textContent = top.message;
}

const state = { frames: 0, faces: [], error: null, pipeline: null };
window.spoofsdkDemo = state;

async function main() {
  ort.env.wasm.numThreads = 1; // no SharedArrayBuffer needed: works on any static host
  ort.env.wasm.wasmPaths = new URL("./", location.href).href;
  const pipeline = await Pipeline.load(ort);
  state.pipeline = pipeline;
  // For tests and the curious: one frame's gates and score on any image URL (evidence, no label:
  // the camera loop's tracks decide), and detection.
  state.scoreImage = async (url, box) => pipeline.scoreFace(await loadImage(url), box);
  state.detectImage = async (url) => pipeline.detect(await loadImage(url));
  $("model").textContent = `model ${pipeline.cfg.name} (${pipeline.config.model.precision}, ${pipeline.cfg.size} px, threshold ${pipeline.cfg.threshold.toFixed(3)})`;
  state.ready = true;

  $("status").textContent = "asking for the camera…";
  const video = $("video");
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  await video.play();
  $("status").textContent = "running";
  for (;;) {
    if (video.videoWidth) {
      const started = performance.now();
      const image = pixels(video, video.videoWidth, video.videoHeight);
      const faces = await pipeline.check(image, started / 1000);
      state.frames += 1;
      state.faces = faces;
      draw(faces, image.width, image.height);
      show(faces);
      $("status").textContent = `running: ${(performance.now() - started).toFixed(0)} ms per frame`;
    }
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
}

main().catch((e) => {
  state.error = String(e && e.message ? e.message : e);
  $("error").textContent = state.error;
  $("label").textContent = "stopped";
});
