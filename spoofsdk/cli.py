"""The ``spoofsdk`` command: ``run``, ``info``, ``calibrate`` (and ``serve``, ``demo`` from :mod:`spoofsdk.serve.cli`). Thin: parse, call the API, print.

With ``--json`` stdout carries only JSON lines; logs and warnings go to stderr. Fatal
problems (model, detector, source cannot be opened, stream broke) exit with status 1 and
the message; a single unreadable image is reported on its own line and the run carries on.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from .clitools import Group, version_option
from .errors import ImageError, SpoofSDKError

log = logging.getLogger("spoofsdk")

PRECISIONS = ("fp32", "fp16", "int8")


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _fail(message: str) -> "click.ClickException":
    return click.ClickException(message)


def _gui_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line.split(":", 1)[1].upper()
    return False


def _model_options(f):
    f = click.option("--model", "-m", default=None, help="Model file, or embedded model name (default: the embedded default).")(f)
    f = click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="Embedded model precision.")(f)
    f = click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime threads.")(f)
    return f


def _detector_options(f):
    f = click.option("--detector", type=click.Choice(["haar", "yunet"]), default=None, help="Face detector (default: yunet if --yunet-model is given, else haar).")(f)
    f = click.option("--yunet-model", type=click.Path(dir_okay=False, path_type=Path), default=None, envvar="SPOOFSDK_YUNET_MODEL", help="YuNet ONNX file [$SPOOFSDK_YUNET_MODEL].")(f)
    return f


def _checker(**kwargs: Any):
    from .checker import LivenessChecker

    try:
        return LivenessChecker(**kwargs)
    except (SpoofSDKError, ValueError) as e:
        raise _fail(str(e)) from e


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("spoofsdk")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def main(verbose: bool) -> None:
    """Face anti-spoofing: is the face in front of the camera live, or a photo or screen?"""
    # Log to whatever stderr is current at emit time (never stdout: --json output must stay clean).
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)


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
        text += f" [+{len(result.faces) - 1} more face(s): " + ", ".join(f.label for f in result.faces[1:]) + "]"
    return text


def _emit(result, as_json: bool) -> None:
    click.echo(result.to_json() if as_json else _human(result))


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--camera", default=None, help="Camera: index (0), /dev/videoN, a GStreamer pipeline, or 'picamera2'.")
@click.option("--video", type=click.Path(path_type=Path), default=None, help="Video file.")
@_model_options
@_detector_options
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, help="Decision threshold on P(live), overriding the model's.")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Score only the largest N faces.")
@click.option("--crops", is_flag=True, help="Inputs are already face crops: no detection (same path as check_face).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout, one per image or frame.")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the annotated video (--video/--camera), e.g. OUT.mp4.")
@click.option("--show", is_flag=True, help="Show the annotated stream in a window (needs an OpenCV with GUI).")
@click.option("--every", type=click.IntRange(min=1), default=1, help="Process every N-th frame (frame skip under load).")
@click.option("--detect-every", type=click.IntRange(min=1), default=3, help="Stream mode: full face detection every N frames, tracking in between.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N processed frames.")
@click.option("--no-quality", is_flag=True, help="Switch the quality gates off (score every detected face).")
def run(inputs, camera, video, model, precision, threads, detector, yunet_model, threshold, max_faces, crops,
        as_json, save, show, every, detect_every, max_frames, no_quality) -> None:
    """Check image files/folders, a video file (--video) or a camera (--camera)."""
    sources = sum(bool(x) for x in (inputs, camera is not None, video is not None))
    if sources != 1:
        raise click.UsageError("give image files/folders, or --video FILE, or --camera N (exactly one)")
    if crops and not inputs:
        raise click.UsageError("--crops applies to image files/folders")
    if (save or show) and inputs:
        raise click.UsageError("--save and --show apply to --video and --camera")
    if show and not _gui_available():
        raise _fail("--show needs an OpenCV with a GUI, and this one has none (opencv-python-headless); use --save OUT.mp4 instead")
    checker = _checker(
        model=model, precision=precision, threads=threads, detector=detector, yunet_model=yunet_model,
        threshold=threshold, max_faces=max_faces, quality=False if no_quality else None, detect_every=detect_every,
    )
    if inputs:
        _run_images(checker, inputs, crops, as_json, max_frames)
    else:
        _run_stream(checker, camera, video, as_json, save, show, every, max_frames)


def _run_images(checker, inputs, crops: bool, as_json: bool, max_frames: int | None) -> None:
    from .results import FrameResult, Reason
    from .sources import list_images

    try:
        paths = list_images(inputs)
    except SpoofSDKError as e:
        raise _fail(str(e)) from e
    failed = 0
    for path in paths[:max_frames]:
        try:
            result = checker.check_crop_file(path) if crops else checker.check(path)
        except ImageError as e:
            # One bad file must not stop a batch: report it on its own line and carry on.
            failed += 1
            result = FrameResult.failed(Reason.BAD_IMAGE, str(e), path=str(path))
        except SpoofSDKError as e:
            raise _fail(f"{path}: {e}") from e
        _emit(result, as_json)
    if failed:
        log.warning("%d of %d images could not be read", failed, len(paths[:max_frames]))


def _run_stream(checker, camera, video, as_json, save, show, every, max_frames) -> None:
    import cv2

    from .results import draw_result
    from .sources import open_source

    try:
        source = open_source(camera=camera, video=video, step=every)
    except SpoofSDKError as e:
        raise _fail(str(e)) from e
    writer = None
    try:
        for frame, result in checker.stream_frames(source, max_frames=max_frames):
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
        raise _fail(str(e)) from e
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


def _video_writer(path: Path, shape, fps: float):
    import cv2

    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (shape[1], shape[0]))
    if not writer.isOpened():
        raise _fail(f"cannot write video {path} (use .mp4 or .avi)")
    return writer


# --- info ----------------------------------------------------------------------------------
@main.command()
@_model_options
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as one JSON object.")
def info(model, precision, threads, as_json) -> None:
    """Print a model's metadata (default: the embedded default model)."""
    from .model import OPTIONAL_KEYS, REQUIRED_KEYS, load_model

    try:
        loaded = load_model(model, precision=precision, threads=threads)
    except SpoofSDKError as e:
        raise _fail(str(e)) from e
    props = loaded.info.to_props()
    if as_json:
        click.echo(json.dumps({"source": loaded.source, "sha256": loaded.sha256, "metadata": props}, indent=2))
        return
    click.echo(f"source: {loaded.source}")
    click.echo(f"sha256: {loaded.sha256}")
    for key in [*REQUIRED_KEYS, *OPTIONAL_KEYS, *sorted(set(props) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))]:
        if key in props:
            click.echo(f"{key}: {props[key]}")


# --- calibrate -----------------------------------------------------------------------------
@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target-apcer", type=click.FloatRange(0, 1, max_open=True), default=0.05, show_default=True, help="Highest acceptable share of attacks accepted as real.")
@_model_options
@_detector_options
@click.option("--crops", is_flag=True, help="The images are face crops: no detection.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the calibrated model.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def calibrate(folder, target_apcer, model, precision, threads, detector, yunet_model, crops, out, as_json) -> None:
    """Pick the threshold meeting --target-apcer on FOLDER/real and FOLDER/attack images from your camera."""
    from .calibrate import calibrate as run_calibration

    try:
        result = run_calibration(
            folder, model=model, target_apcer=target_apcer, out=out, crops=crops,
            precision=precision, threads=threads, detector=detector, yunet_model=yunet_model,
        )
    except (SpoofSDKError, ValueError) as e:
        raise _fail(str(e)) from e
    for warning in result.warnings:
        log.warning(warning)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"images: {result.n_real} real, {result.n_attack} attack" + (f"; skipped {result.skipped}" if result.skipped else ""))
    click.echo(f"threshold: {result.threshold:.6f} (was {result.previous_threshold:.6f})")
    click.echo(f"APCER: {result.apcer:.4f} (target {result.target_apcer:g}; was {result.previous_apcer:.4f})")
    click.echo(f"BPCER: {result.bpcer:.4f} (was {result.previous_bpcer:.4f})")
    click.echo(f"wrote {result.out}")


# --- serve, demo (spoofsdk/serve/cli.py) -----------------------------------------------------
# They register themselves on `main`; their web server library (the serve extra) is imported
# only when they run.
from .serve import cli as _serve_cli  # noqa: E402,F401


if __name__ == "__main__":
    main()
