"""Check the faces in image files: python examples/check_image.py MODEL.onnx photo.jpg [more.jpg ...]

Prints one line per face, and the reason when spoofsdk refuses to judge (no face, too
small, too dark...). Bad files are reported and skipped.
"""
import sys

from spoofsdk import ImageError, LivenessChecker


def main(model: str, paths: list[str]) -> None:
    checker = LivenessChecker(model)  # detector: Haar (bundled); pass yunet_model=... for YuNet
    for path in paths:
        try:
            result = checker.check(path)
        except ImageError as e:
            print(f"{path}: cannot read ({e})")
            continue
        if not result.faces:
            print(f"{path}: {result.message}")
        for face in result.faces:
            if face.score is None:
                print(f"{path}: face at {face.box}: unknown ({face.message})")
            else:
                print(f"{path}: face at {face.box}: {face.label} (P(live) = {face.score:.3f}, threshold {face.threshold:.3f})")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
