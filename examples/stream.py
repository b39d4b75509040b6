"""Follow faces in a camera or video stream: python examples/stream.py [CAMERA | VIDEO_FILE | rtsp://...] [--model MODEL.onnx]

CAMERA is an index (0), /dev/videoN, a GStreamer pipeline or 'picamera2'. Uses the embedded
default model and the bundled YuNet detector unless --model is given. Each face is tracked;
its label turns `real` only after consistent evidence over several frames (see README,
"Streaming"). With a camera, stale frames are dropped so the decision always refers to what is
in front of the camera now. Ctrl-C stops.
"""
import argparse

from spoofsdk import LivenessChecker, SourceError, open_source
from spoofsdk.track import SmoothingConfig


def main(where: str, model: str | None) -> None:
    checker = LivenessChecker(
        model,
        threads=2,  # leave a core for the camera and the detector on a Raspberry Pi
        detect_every=3,  # full face detection every 3rd frame, template tracking in between
        smoothing=SmoothingConfig(min_frames=5, min_seconds=0.3),
    )
    last = {}
    source = None
    try:
        # Inside the try: a missing video file or a camera that cannot be opened is a SourceError
        # too, and deserves the same one-line message as a stream that breaks.
        source = open_source(camera=where)  # an index, device, pipeline, picamera2, rtsp:// URL or a video file
        for result in checker.stream(source):
            for face in result.faces:
                if last.get(face.track_id) != face.label:  # print decisions as they change
                    last[face.track_id] = face.label
                    why = f" ({face.message})" if face.message else ""
                    print(f"t={result.t:6.2f}s face #{face.track_id}: {face.label}{why}")
    except SourceError as e:
        raise SystemExit(f"stream stopped: {e}" if source is not None else str(e))  # the error names the source
    except KeyboardInterrupt:
        pass
    finally:
        if source is not None:
            source.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default="0")
    parser.add_argument("--model", default=None, help="a spoofsdk ONNX file or embedded model name (default: the embedded default)")
    args = parser.parse_args()
    main(args.source, args.model)
