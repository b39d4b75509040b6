"""``spoofsdk serve`` and ``spoofsdk demo build``: registered on the main command group.

Importing this module imports click and the main CLI only; the web server library (aiohttp,
from the ``spoofsdk[serve]`` extra) is imported when ``serve`` runs.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..cli import _checker, _detector_options, _fail, _model_options, main
from ..errors import SpoofSDKError

TOKEN_ENV = "SPOOFSDK_SERVE_TOKEN"


def _need_extra():
    try:
        from . import app
    except ImportError as e:
        raise _fail(f"spoofsdk serve needs the serve extra: pip install 'spoofsdk[serve]' ({e})") from e
    return app


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--camera", default=None, help="Camera: index (0), /dev/videoN, a GStreamer pipeline, or 'picamera2'.")
@click.option("--video", type=click.Path(path_type=Path), default=None, help="Video file (played in real time).")
@click.option("--demo", is_flag=True, help="Serve the in-browser demo instead: the model runs in the visitor's browser on their webcam.")
@_model_options
@_detector_options
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, help="Decision threshold on P(live), overriding the model's.")
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Score only the largest N faces.")
@click.option("--every", type=click.IntRange(min=1), default=1, help="Process every N-th frame.")
@click.option("--detect-every", type=click.IntRange(min=1), default=3, help="Full face detection every N frames, tracking in between.")
@click.option("--no-quality", is_flag=True, help="Switch the quality gates off.")
@click.option("--fps", "pace_fps", type=click.FloatRange(min=0.1), default=None, help="Play files at this rate (default: the video's own, 5 for images).")
@click.option("--loop", is_flag=True, help="Start a video file or image folder again when it ends.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface; think of --token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--token", default=None, envvar=TOKEN_ENV, help=f"Require ?token=TOKEN (or 'Authorization: Bearer TOKEN') on every request [${TOKEN_ENV}].")
@click.option("--max-viewers", type=click.IntRange(min=1), default=10, show_default=True, help="Most simultaneous stream (and event) connections; more get 503.")
@click.option("--ort-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="--demo: onnxruntime-web's dist folder (default: see `spoofsdk demo build --help`).")
def serve(inputs, camera, video, demo, model, precision, threads, detector, yunet_model, threshold, max_faces, every,
          detect_every, no_quality, pace_fps, loop, host, port, token, max_viewers, ort_dir) -> None:
    """A live view in the browser: the annotated stream, recent decisions and per-frame JSON.

    \b
    spoofsdk serve --camera 0                 # then open http://127.0.0.1:8080/
    spoofsdk serve --video clip.mp4 --loop
    spoofsdk serve --demo                     # the model runs in the visitor's browser
    """
    app_module = _need_extra()
    if token == "":
        raise click.UsageError("--token must not be empty")
    if demo:
        if inputs or camera is not None or video is not None:
            raise click.UsageError("--demo takes no source: the visitor's webcam is the source")
        from .demo import demo_files

        try:
            files = demo_files(model, precision=precision, yunet_model=yunet_model, ort_dir=ort_dir)
        except (SpoofSDKError, ValueError) as e:
            raise _fail(str(e)) from e
        app = app_module.make_demo_app(files, token=token, hosts=[host])
        what = "in-browser demo"
    else:
        app, what = _live_app(app_module, inputs, camera, video, model, precision, threads, detector, yunet_model,
                              threshold, max_faces, every, detect_every, no_quality, pace_fps, loop, token, max_viewers, host)
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host} without --token: anyone who can reach this machine can watch", err=True)
    try:
        sockets = app_module.listen(host, port)
    except OSError as e:  # port in use, an address not of this machine, a name that does not resolve
        raise _fail(f"cannot listen on {host}:{port}: {e}") from e
    # From the bound socket: --port 0 says which port it got, and an IPv6 address needs brackets.
    url = app_module.url_of(host, sockets) + ("?token=..." if token else "")
    app_module.run_app(app, sockets, f"spoofsdk serve: {what} on {url} (Ctrl-C to stop)")


def _live_app(app_module, inputs, camera, video, model, precision, threads, detector, yunet_model, threshold,
              max_faces, every, detect_every, no_quality, pace_fps, loop, token, max_viewers, host):
    from ..sources import open_source
    from .live import LiveHub

    if sum(bool(x) for x in (inputs, camera is not None, video is not None)) != 1:
        raise click.UsageError("give image files/folders, or --video FILE, or --camera N (exactly one), or --demo")
    checker = _checker(model=model, precision=precision, threads=threads, detector=detector, yunet_model=yunet_model,
                       threshold=threshold, max_faces=max_faces, quality=False if no_quality else None, detect_every=detect_every)

    def open_it():
        return open_source(camera=camera, video=video, images=list(inputs) or None, step=every)

    try:
        first = open_it()  # fail now, with the message, if the source cannot be opened at all
    except SpoofSDKError as e:
        raise _fail(str(e)) from e
    if camera is not None:
        pace = None  # a camera paces itself
    else:
        pace = pace_fps or (getattr(first, "fps", None) or 5.0) / every
    opened = [first]

    def open_source_once_then_fresh():
        return opened.pop() if opened else open_it()

    hub = LiveHub(checker, open_source_once_then_fresh, pace_fps=pace, loop=loop)
    return app_module.make_live_app(hub, token=token, max_viewers=max_viewers, hosts=[host]), "live view"


@main.group()
def demo() -> None:
    """The in-browser demo (onnxruntime-web): build it as a static folder."""


@demo.command("build")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@_model_options
@click.option("--yunet-model", type=click.Path(dir_okay=False, path_type=Path), default=None, envvar="SPOOFSDK_YUNET_MODEL", help="YuNet ONNX file [$SPOOFSDK_YUNET_MODEL].")
@click.option("--ort-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="SPOOFSDK_ORT_WEB",
              help="onnxruntime-web's dist folder [$SPOOFSDK_ORT_WEB] (default: spoofsdk/serve/demo/vendor, or web/node_modules in a checkout).")
def build(out, model, precision, threads, yunet_model, ort_dir) -> None:
    """Write the demo (page, model, YuNet, onnxruntime-web) to OUT/, ready for any static web server.

    Browsers give a page the webcam only on https:// or http://localhost.
    """
    from .demo import build_demo

    try:
        written = build_demo(out, model=model, precision=precision, yunet_model=yunet_model, ort_dir=ort_dir)
    except (SpoofSDKError, ValueError, OSError) as e:
        raise _fail(str(e)) from e
    size = sum(p.stat().st_size for p in written)
    click.echo(f"wrote {len(written)} files ({size / 1e6:.1f} MB) to {out}")
