"""The ``spoofsdk`` command: ``run``, ``info``, ``models``, ``calibrate``, ``bench`` (and ``serve``, ``demo`` from :mod:`spoofsdk.serve.cli`). Thin: parse, call the API, print.

With ``--json`` stdout carries only JSON lines; logs, warnings, progress and the end-of-run
summary go to stderr. Exit status:

- 0: every input was read and judged (whatever the labels);
- 1: a fatal problem (model, detector or source cannot be opened, the stream broke, the
  output cannot be written), or, for image files, at least one input could not be read
  (missing, not an image, over the size limit): those are reported on their own line, the
  run carries on with the rest, and the exit status says that something was skipped; or some
  face or frame got no score (reason ``error``: a non-finite model output, or on a stream an
  inference or detector error on that frame; in image mode those errors are fatal): it was not
  judged either, and a run whose model fails on every face must not look like a clean one;
- 2: a usage error (bad option, missing argument).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from .clitools import Group, version_option
from .errors import ImageError, SpoofSDKError

log = logging.getLogger("spoofsdk")

PRECISIONS = ("fp32", "fp16", "int8")
DETECTORS = ("yunet", "haar")


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _fail(message: str) -> "click.ClickException":
    return click.ClickException(message)


def _setup_logging(verbose: bool) -> None:
    # Log to whatever stderr is current at emit time (never stdout: --json output must stay clean).
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)


def _verbose_option(f):
    """``-v`` accepted before or after the subcommand (``spoofsdk -v run ...`` and ``spoofsdk run -v ...``)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            _setup_logging(True)

    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=callback,
                        help="Debug logging on stderr.")(f)


def _gui_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line.split(":", 1)[1].upper()
    return False


def _providers(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [p.strip() for p in value.split(",") if p.strip()]


def _model_options(f):
    f = click.option("--model", "-m", default=None, help="Model file, or embedded model name (default: the embedded default; see `spoofsdk models`).")(f)
    f = click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="Embedded model precision.")(f)
    f = click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")(f)
    return f


def _providers_option(f):
    return click.option("--providers", default=None, help="onnxruntime execution providers, comma-separated in order of preference (default: CPUExecutionProvider).")(f)


def _detector_options(f):
    f = click.option("--detector", type=click.Choice(DETECTORS), default="yunet", show_default=True, help="Face detector: YuNet (bundled) or OpenCV's Haar cascade.")(f)
    f = click.option("--yunet-model", type=click.Path(dir_okay=False, path_type=Path), default=None, envvar="SPOOFSDK_YUNET_MODEL", help="Another YuNet ONNX file [$SPOOFSDK_YUNET_MODEL] (default: the one bundled).")(f)
    return f


def _checker(**kwargs: Any):
    from .checker import LivenessChecker

    if isinstance(kwargs.get("providers"), str):
        kwargs["providers"] = _providers(kwargs["providers"])
    try:
        return LivenessChecker(**kwargs)
    except (SpoofSDKError, ValueError) as e:
        raise _fail(str(e)) from e


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("spoofsdk")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr (also accepted after the subcommand).")
def main(verbose: bool) -> None:
    """Face anti-spoofing: is the face in front of the camera live, or a photo or screen?"""
    _setup_logging(verbose)


# --- progress and summary ------------------------------------------------------------------
class RunReport:
    """Counts by label and reason, a progress line on a terminal, and a summary at the end (all on stderr)."""

    def __init__(self, total: int | None, unit: str, quiet: bool = False, every_s: float = 0.5, stream: Any = None) -> None:
        self.total, self.unit, self.quiet = total, unit, quiet
        self.labels: Counter = Counter()
        self.reasons: Counter = Counter()
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._every_s = every_s
        self._stream = stream
        isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
        self._tty = bool(isatty and isatty())

    def add(self, result) -> None:
        self.count += 1
        self.labels[str(result.label)] += 1
        if result.reason:
            self.reasons[str(result.reason)] += 1
        if self._tty and not self.quiet:
            now = time.perf_counter()
            if now - self._last_draw >= self._every_s:
                self._last_draw = now
                self._echo("\r" + self._progress(now), nl=False)

    def _progress(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        if self.total:
            done = self.count / self.total
            width = 24
            bar = "#" * int(done * width) + "-" * (width - int(done * width))
            left = (self.total - self.count) / rate if rate > 0 else 0.0
            return f"[{bar}] {self.count}/{self.total} {self.unit} {rate:.1f}/s, {left:.0f} s left "
        return f"{self.count} {self.unit} {rate:.1f}/s "

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        labels = ", ".join(f"{k} {self.labels[k]}" for k in ("real", "spoof", "unknown") if self.labels[k])
        text = f"{self.count} {self.unit} in {elapsed:.1f} s ({rate:.1f} {self.unit}/s): {labels or 'nothing judged'}"
        if self.reasons:
            text += " (" + ", ".join(f"{k} {v}" for k, v in self.reasons.most_common()) + ")"
        return text

    def close(self) -> None:
        if self.quiet:
            return
        if self._tty and self._last_draw:
            self._echo("\r" + " " * 79 + "\r", nl=False)
        self._echo("summary: " + self.summary())

    def _echo(self, text: str, nl: bool = True) -> None:
        if self._stream is not None:
            click.echo(text, file=self._stream, nl=nl)
        else:
            click.echo(text, err=True, nl=nl)


# --- run -----------------------------------------------------------------------------------
def _human(result) -> str:
    where = result.path if result.path is not None else f"frame {result.frame} t={result.t:.2f}s"
    if result.error:
        return f"{where}: unknown (error: {result.error})"
    if not result.faces:
        return f"{where}: unknown ({result.message})"
    top = result.faces[0]
    text = f"{where}: {top.label}"
    text += f" {top.score:.3f}" if top.score is not None else ""
    text += f" ({top.message})" if top.message else ""
    if len(result.faces) > 1:
        text += f" [+{len(result.faces) - 1} more face(s): " + ", ".join(str(f.label) for f in result.faces[1:]) + "]"
    return text


def _emit(result, as_json: bool) -> None:
    click.echo(result.to_json() if as_json else _human(result))


def _not_scored(result) -> bool:
    """This frame, or one of its faces, has reason ``error``: the model gave no score (a non-finite output)
    or, on a stream frame, inference or detection failed."""
    from .results import Reason

    return result.reason == Reason.ERROR or any(face.reason == Reason.ERROR for face in result.faces)


def _unscored_message(n: int, total: int, unit: str) -> str:
    failed = "the model or the detector failed" if unit == "frames" else "the model gave a non-finite output"
    return (f"no score in {n} of {total} {unit} (reason error: {failed}; see their lines: "
            "a damaged model file or an overflow at this precision gives this on every face)")


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--camera", default=None, help="Camera: index (0), /dev/videoN, a GStreamer pipeline, 'picamera2', an rtsp:// (or http://) stream, or a video file.")
@click.option("--video", default=None, help="Video file, or a stream URL (rtsp://...).")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Camera capture width in pixels.")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Camera capture height in pixels.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None, help="Camera capture frame rate.")
@_model_options
@_providers_option
@_detector_options
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, help="Decision threshold on P(live), overriding the model's.")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Score only the largest N faces.")
@click.option("--crops", is_flag=True, help="Inputs are already tight face crops, scored whole. An image where a small face is found is refused as not_a_crop; one where none is found is scored but unknown (no_face).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout, one per image or frame.")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the annotated video (--video/--camera): OUT.webm (VP8, plays in browsers), OUT.mp4 (H.264 where OpenCV has it, else MPEG-4 Part 2) or OUT.avi (MJPEG).")
@click.option("--show", is_flag=True, help="Show the annotated stream in a window (needs an OpenCV with GUI).")
@click.option("--every", type=click.IntRange(min=1), default=1, help="Process every N-th frame (frame skip under load).")
@click.option("--detect-every", type=click.IntRange(min=1), default=3, help="Stream mode: full face detection every N frames, tracking in between.")
@click.option("--track-gap", type=click.FloatRange(min=0, min_open=True), default=None, help="Stream mode: seconds a face may go unseen before its track is dropped (default 0.5, widened to 3 frame intervals on slow sources).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N processed frames.")
@click.option("--no-quality", is_flag=True, help="Switch the quality gates off (score every detected face).")
@click.option("-q", "--quiet", is_flag=True, help="No progress line and no summary on stderr.")
@_verbose_option
def run(inputs, camera, video, width, height, fps, model, precision, threads, providers, detector, yunet_model, threshold,
        max_faces, crops, as_json, save, show, every, detect_every, track_gap, max_frames, no_quality, quiet) -> None:
    """Check image files/folders, a video file or stream (--video) or a camera (--camera)."""
    sources = sum(bool(x) for x in (inputs, camera is not None, video is not None))
    if sources != 1:
        raise click.UsageError("give image files/folders, or --video FILE, or --camera N (exactly one)")
    if crops and not inputs:
        raise click.UsageError("--crops applies to image files/folders")
    if (save or show) and inputs:
        raise click.UsageError("--save and --show apply to --video and --camera")
    if (width or height or fps) and inputs:
        raise click.UsageError("--width, --height and --fps apply to --camera")
    if track_gap is not None and inputs:
        raise click.UsageError("--track-gap applies to --video and --camera")
    if show and not _gui_available():
        raise _fail("--show needs an OpenCV with a GUI, and this one has none (opencv-python-headless); use --save OUT.webm instead")
    if save:
        _check_save_path(save)
    smoothing = None
    if track_gap is not None:
        from .track import SmoothingConfig

        smoothing = SmoothingConfig(forget_after=track_gap)
    checker = _checker(
        model=model, precision=precision, threads=threads, providers=providers, detector=detector, yunet_model=yunet_model,
        threshold=threshold, max_faces=max_faces, quality=False if no_quality else None, detect_every=detect_every,
        smoothing=smoothing,
    )
    log.debug("%r", checker)
    if inputs:
        _run_images(checker, inputs, crops, as_json, max_frames, quiet)
    else:
        camera_kwargs = {k: v for k, v in (("width", width), ("height", height), ("fps", fps)) if v}
        _run_stream(checker, camera, video, as_json, save, show, every, max_frames, quiet, camera_kwargs)


def _run_images(checker, inputs, crops: bool, as_json: bool, max_frames: int | None, quiet: bool) -> None:
    from .results import FrameResult, Reason
    from .sources import list_images

    try:
        paths = list_images(inputs)
    except SpoofSDKError as e:
        raise _fail(str(e)) from e
    paths = paths[:max_frames]
    missing = [p for p in paths if not p.exists()]
    if missing:
        log.warning("%d input(s) not found: %s", len(missing), ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else ""))
    report = RunReport(len(paths), "images", quiet)
    failed = unscored = 0
    for path in paths:
        try:
            result = checker.check_crop_file(path) if crops else checker.check(path)
        except ImageError as e:
            # One bad file must not stop a batch: report it on its own line and carry on.
            failed += 1
            result = FrameResult.failed(Reason.BAD_IMAGE, str(e), path=str(path))
        except SpoofSDKError as e:
            report.close()
            raise _fail(f"{path}: {e}") from e
        log.debug("%s: %s %s %s", path, result.label, result.score, result.reason or "")
        unscored += _not_scored(result)
        report.add(result)
        _emit(result, as_json)
    report.close()
    problems = ([f"{failed} of {len(paths)} inputs could not be read (see their lines above)"] if failed else []) + (
        [_unscored_message(unscored, len(paths), "images")] if unscored else [])
    if problems:
        raise _fail("; ".join(problems))


def _run_stream(checker, camera, video, as_json, save, show, every, max_frames, quiet, camera_kwargs) -> None:
    import cv2

    from .results import draw_result
    from .sources import open_source

    try:
        source = open_source(camera=camera, video=video, step=every, **camera_kwargs)
    except SpoofSDKError as e:
        raise _fail(str(e)) from e
    total = None
    if getattr(source, "frame_count", 0):
        total = -(-source.frame_count // every)
        total = min(total, max_frames) if max_frames else total
    report = RunReport(total, "frames", quiet)
    writer = None
    failure: str | None = None
    unscored = 0
    try:
        for frame, result in checker.stream_frames(source, max_frames=max_frames):
            unscored += _not_scored(result)
            report.add(result)
            _emit(result, as_json)
            if (save or show) and frame.image is not None:
                canvas = draw_result(frame.image, result)
                if save:
                    if writer is None:
                        writer = _video_writer(save, canvas.shape, getattr(source, "fps", None) or 15.0)
                    writer.write(canvas)
                if show:
                    cv2.imshow("spoofsdk", canvas)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
    except SpoofSDKError as e:
        # The camera was lost or the video broke: the frames already judged stand, the run says why it ended.
        failure = f"stream stopped after {report.count} frames: {e}"
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
        dropped = getattr(source, "dropped", 0)
        if dropped:
            log.info("dropped %d stale camera frames (processing slower than the camera)", dropped)
        report.close()
    if failure:
        raise _fail(failure + (f"; {_unscored_message(unscored, report.count, 'frames')}" if unscored else ""))
    if unscored:
        raise _fail(_unscored_message(unscored, report.count, "frames"))


def _check_save_path(path: Path) -> None:
    if path.suffix.lower() not in VIDEO_CODECS:
        raise _fail(f"cannot write video {path}: use a .webm (VP8, plays in browsers), .mp4 or .avi file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise _fail(f"cannot write video {path}: folder {folder} does not exist")
    if path.is_dir():
        raise _fail(f"cannot write video {path}: it is a folder")


# suffix -> FourCCs to try in order. opencv-python(-headless) wheels bundle an FFmpeg without an
# H.264 encoder (avc1 fails to open), but with VP8/VP9: .webm is the browser-playable choice
# there; a system OpenCV with H.264 gets avc1 for .mp4.
VIDEO_CODECS = {".webm": ("VP80",), ".mp4": ("avc1", "mp4v"), ".avi": ("MJPG",)}


def _video_writer(path: Path, shape, fps: float):
    import cv2

    suffix = path.suffix.lower()
    for i, code in enumerate(VIDEO_CODECS[suffix]):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), float(fps), (shape[1], shape[0]))
        if writer.isOpened():
            if i > 0 and code == "mp4v":
                log.warning(
                    "this OpenCV has no H.264 encoder: %s is written as MPEG-4 Part 2 (mp4v), which browsers do not play; "
                    "use --save %s for a browser-playable file", path, path.with_suffix(".webm").name,
                )
            log.debug("writing %s with %s at %.1f fps", path, code, fps)
            return writer
        writer.release()
    raise _fail(f"cannot write video {path}: this OpenCV cannot encode {'/'.join(VIDEO_CODECS[suffix])} (try another of .webm, .mp4, .avi) or the file is not writable")


# --- info ----------------------------------------------------------------------------------
# Metadata values that hold JSON text: `info --json` prints them as JSON, not as strings of JSON.
JSON_KEYS = ("metrics", "quantization")


@main.command()
@_model_options
@_providers_option
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as one JSON object.")
@_verbose_option
def info(model, precision, threads, providers, as_json) -> None:
    """Print a model's metadata (default: the embedded default model)."""
    from .model import OPTIONAL_KEYS, REQUIRED_KEYS, load_model

    try:
        loaded = load_model(model, precision=precision, threads=threads, providers=_providers(providers))
    except SpoofSDKError as e:
        raise _fail(str(e)) from e
    props = loaded.info.to_props()
    if as_json:
        metadata: dict[str, Any] = dict(props)
        for key in JSON_KEYS:
            if key in metadata:
                try:
                    metadata[key] = json.loads(metadata[key])
                except json.JSONDecodeError:
                    log.warning("metadata %r is not valid JSON; printed as text", key)
        click.echo(json.dumps({"source": loaded.source, "sha256": loaded.sha256, "metadata": metadata}, indent=2))
        return
    click.echo(f"source: {loaded.source}")
    click.echo(f"sha256: {loaded.sha256}")
    for key in [*REQUIRED_KEYS, *OPTIONAL_KEYS, *sorted(set(props) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))]:
        if key in props and key != "metrics":
            click.echo(f"{key}: {props[key]}")
    if "metrics" in props:  # last, as tables: the raw JSON is hundreds of numbers on one line (`--json` has it)
        for line in metrics_lines(props["metrics"]):
            click.echo(line)


def _pct(value: Any) -> str:
    return f"{100 * value:5.1f} %" if isinstance(value, (int, float)) and value == value else "    –  "


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "  –  "


def metrics_lines(text: str) -> list[str]:
    """The ``metrics`` metadata as text tables: the file's own figures per data set (at its threshold), then
    the leave-one-source-out table it carries (one column per seed of its recipe). Anything not of that
    shape is printed as it is, so nothing the file holds is hidden."""
    try:
        figures = json.loads(text)
    except json.JSONDecodeError:
        return [f"metrics: {text}"]
    from .model import loso_runs, loso_summary

    if not isinstance(figures, dict):
        return [f"metrics: {text}"]
    sets = {k: v for k, v in figures.items() if isinstance(v, dict) and "n" in v}
    runs = loso_runs(figures)
    loso = figures["loso"] if runs else {}
    rest = {k: v for k, v in figures.items() if k not in sets and not (k == "loso" and runs)}
    lines = []
    if sets:
        lines.append(f"metrics ({figures.get('how', 'this file')}):")
        width = max(len("data set"), *(len(k) for k in sets))
        lines.append(f"  {'data set':<{width}} {'n':>6}  {'AUC':>5}  {'APCER':>7}  {'BPCER':>7}  {'BPCER@APCER5':>12}")
        for name, row in sets.items():
            lines.append(f"  {name:<{width}} {int(row['n']):>6}  {_num(row.get('auc'))}  {_pct(row.get('apcer'))}  {_pct(row.get('bpcer'))}  "
                         f"{_pct(row.get('bpcer_at_apcer_5')):>12}")
        rest.pop("how", None)
    for key, value in rest.items():
        lines.append(f"metrics {key}: {value if isinstance(value, str) else json.dumps(value)}")
    if runs:
        lines.append(f"leave-one-source-out (recipe {loso.get('recipe', '?')} {loso.get('recipe_hash', '')}, {len(runs)} seed{'s' if len(runs) > 1 else ''}; "
                     f"each domain scored by a model trained without it):")
        width = max(len("held-out domain"), *(len(d) for d in loso["domains"]))
        seeds = 6 * len(runs) if len(runs) > 1 else 0  # a column of each seed's AUC where there are several
        lines.append(f"  {'held-out domain':<{width}}  {'AUC':>5}  " + (f"{'per seed':<{seeds}}  " if seeds else "") + f"{'BPCER@APCER5':>12}")
        never = set(loso.get("test_only", []))
        for domain, row in loso["domains"].items():
            row = row if isinstance(row, dict) else {}
            aucs = [run.get(domain) for run in runs]
            known = [a for a in aucs if isinstance(a, (int, float))]
            mean = sum(known) / len(known) if known else float("nan")
            per_seed = f"{' '.join(_num(a) for a in aucs):<{seeds}}  " if seeds else ""
            lines.append(f"  {domain:<{width}}  {_num(mean)}  {per_seed}{_pct(row.get('bpcer_at_apcer_5')):>12}"
                         + ("  (never trained on)" if domain in never else ""))
        if (summary := loso_summary(figures)) is not None:
            lines.append(f"  mean {summary['mean']:.3f}, worst {summary['worst']:.3f} over {len(summary['domains'])} domains"
                         + (f" (mean per seed: {' / '.join(f'{m:.3f}' for m in summary['seed_means'])})" if len(runs) > 1 else ""))
    return lines


# --- models --------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as one JSON object.")
@_verbose_option
def models(as_json) -> None:
    """List the models embedded in this spoofsdk (anti-spoofing models and the face detector)."""
    from .detect import YUNET_MODEL
    from .model import DEFAULT_MODEL, embedded_models

    rows = embedded_models()
    detector = {"name": "yunet", "file": str(YUNET_MODEL), "size_bytes": YUNET_MODEL.stat().st_size if YUNET_MODEL.is_file() else None,
                "license": "Apache-2.0 (" + YUNET_MODEL.with_suffix(".LICENSE").name + ")"}
    if as_json:
        click.echo(json.dumps({"default": DEFAULT_MODEL, "models": rows, "detector": detector}, indent=2))
        return
    width = max([len("name")] + [len(row["name"]) + 1 for row in rows])  # +1: the default's '*'
    # LOSO: leave-one-source-out AUC, mean / worst held-out domain (the figure models are chosen on)
    click.echo(f"{'name':<{width}} {'precision':<9} {'input':>5} {'threshold':>9} {'size':>8}  {'LOSO mean/worst':>15}  file")
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.1f} MB" if row["size_bytes"] else "missing"
        names = row["name"] + ("*" if row["aliases"] else "")
        loso = f"{row['loso_auc_mean']:.3f} / {row['loso_auc_worst']:.3f}" if row.get("loso_auc_mean") is not None else "–"
        click.echo(f"{names:<{width}} {row['precision']:<9} {row['input_size'] or '?':>5} {row['threshold'] if row['threshold'] is not None else '?':>9.4} "
                   f"{size:>8}  {loso:>15}  {row['file']}")
    aliases = sorted({a for row in rows for a in row["aliases"]})
    if aliases:
        click.echo(f"* also available as: {', '.join(aliases)} (the default used when no --model is given)")
    click.echo(f"face detector: yunet, {detector['file']} ({detector['license']})")


# --- calibrate -----------------------------------------------------------------------------
@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target-apcer", type=click.FloatRange(0, 1, max_open=True), default=None, help="Highest acceptable share of attacks accepted as real (default: the model's own APCER on these images; a target above it needs --allow-higher-apcer).")
@click.option("--target-bpcer", type=click.FloatRange(0, 1, max_open=True), default=None, help="Instead: the highest threshold whose share of live faces rejected stays within this, APCER still capped.")
@click.option("--allow-higher-apcer", is_flag=True, help="Allow a threshold that accepts more of these attacks than the model's own threshold does (less secure).")
@click.option("--allow-lower-threshold", is_flag=True, help="Allow a threshold below the model's own (fewer live faces refused here, but more of every attack not in FOLDER accepted: less secure). Implied by --allow-higher-apcer.")
@_model_options
@_providers_option
@_detector_options
@click.option("--crops", is_flag=True, help="The images are face crops, scored whole (as run --crops: a full frame is not_a_crop, an image without a face is skipped).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the calibrated model.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@_verbose_option
def calibrate(folder, target_apcer, target_bpcer, allow_higher_apcer, allow_lower_threshold, model, precision, threads, providers, detector,
              yunet_model, crops, out, as_json) -> None:
    """Choose the threshold for your camera from FOLDER/real and FOLDER/attack images (also live/, fake/, spoof/).

    By default the new threshold keeps the APCER on these images at or below the model's own
    and, among such thresholds, picks the highest one that keeps the lowest BPCER reachable, never
    below the model's own threshold: a calibration never makes the model less secure unless
    --allow-higher-apcer or --allow-lower-threshold is given.
    """
    from .calibrate import calibrate as run_calibration

    report = RunReport(None, "images")
    try:
        result = run_calibration(
            folder, model=model, target_apcer=target_apcer, target_bpcer=target_bpcer,
            allow_higher_apcer=allow_higher_apcer, allow_lower_threshold=allow_lower_threshold, out=out, crops=crops,
            on_result=report.add,
            precision=precision, threads=threads, providers=_providers(providers), detector=detector, yunet_model=yunet_model,
        )
    except (SpoofSDKError, ValueError) as e:
        raise _fail(str(e)) from e
    report.close()
    for warning in result.warnings:
        log.warning(warning)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"images: {result.n_real} real, {result.n_attack} attack" + (f"; skipped {result.skipped}" if result.skipped else ""))
    click.echo(f"threshold: {result.threshold:.6f} (was {result.previous_threshold:.6f}; {result.direction})")
    click.echo(f"APCER: {result.apcer:.4f} (cap {result.apcer_cap:.4f}; was {result.previous_apcer:.4f})")
    click.echo(f"BPCER: {result.bpcer:.4f} (was {result.previous_bpcer:.4f})")
    click.echo(f"wrote {result.out}")


# --- bench ---------------------------------------------------------------------------------
@main.command()
@click.option("--model", "-m", default=None, help="Model file, or embedded model name (default: the embedded default, every precision it ships in).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")
@click.option("--providers", default=None, help="onnxruntime execution providers, comma-separated.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed model runs per precision.")
@click.option("--camera", default=None, help="Also measure the whole pipeline on this camera (index, /dev/videoN, pipeline, picamera2, rtsp://, or a video file).")
@click.option("--video", default=None, help="Also measure the whole pipeline on this video file or stream.")
@click.option("--frames", type=click.IntRange(min=1), default=100, show_default=True, help="Pipeline frames to time.")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Camera capture width.")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Camera capture height.")
@_detector_options
@click.option("--detect-every", type=click.IntRange(min=1), default=3, show_default=True, help="Pipeline: full detection every N frames.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as one JSON object.")
@_verbose_option
def bench(model, threads, providers, runs, camera, video, frames, width, height, detector, yunet_model, detect_every, as_json) -> None:
    """Measure this machine: model latency per precision, and pipeline fps on a camera or video file."""
    from .bench import bench_models, bench_pipeline, format_table

    if camera is not None and video is not None:
        raise click.UsageError("give --camera or --video, not both")
    try:
        rows = bench_models(model, threads=threads, providers=_providers(providers), runs=runs)
        pipeline = None
        if camera is not None or video is not None:
            camera_kwargs = {k: v for k, v in (("width", width), ("height", height)) if v}
            pipeline = bench_pipeline(
                model, camera=camera, video=video, frames=frames, threads=threads, providers=_providers(providers),
                detector=detector, yunet_model=yunet_model, detect_every=detect_every, **camera_kwargs,
            )
    except (SpoofSDKError, ValueError) as e:
        raise _fail(str(e)) from e
    if as_json:
        click.echo(json.dumps({"models": rows, "pipeline": pipeline}, indent=2))
        return
    click.echo(format_table(rows, pipeline))
    if pipeline is None:
        click.echo("(pipeline fps: add --camera 0 or --video FILE to time detection + crop + gates + model on real frames)", err=True)


# --- serve, demo (spoofsdk/serve/cli.py) -----------------------------------------------------
# They register themselves on `main`; their web server library (the serve extra) is imported
# only when they run.
from .serve import cli as _serve_cli  # noqa: E402,F401


if __name__ == "__main__":
    main()
