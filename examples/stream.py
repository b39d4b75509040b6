"""Follow faces in a camera or video stream: python examples/stream.py MODEL.onnx [CAMERA_INDEX | VIDEO_FILE]

Each face is tracked; its label turns `real` only after consistent evidence over several
frames (see README, "Streaming"). With a camera, stale frames are dropped so the decision
always refers to what is in front of the camera now. Ctrl-C stops.
"""
import sys

from spoofsdk import LivenessChecker, SourceError, open_source
from spoofsdk.track import SmoothingConfig


def main(model: str, where: str) -> None:
    checker = LivenessChecker(
        model,
        threads=2,  # leave a core for the camera and the detector on a Raspberry Pi
        detect_every=3,  # full face detection every 3rd frame, template tracking in between
        smoothing=SmoothingConfig(min_frames=5, min_seconds=0.3),
    )
    source = open_source(camera=where) if where.isdigit() or "!" in where else open_source(video=where)
    last = {}
    try:
        for result in checker.stream(source):
            for face in result.faces:
                if last.get(face.track_id) != face.label:  # print decisions as they change
                    last[face.track_id] = face.label
                    why = f" ({face.message})" if face.message else ""
                    print(f"t={result.t:6.2f}s face #{face.track_id}: {face.label}{why}")
    except SourceError as e:
        sys.exit(f"stream stopped: {e}")
    except KeyboardInterrupt:
        pass
    finally:
        source.close()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0")
