"""Check the faces in image files: python examples/check_image.py photo.jpg [more.jpg ...] [--model MODEL.onnx]

Uses the embedded default model and the bundled YuNet face detector unless --model is given.
Prints one line per face, and the reason when spoofsdk refuses to judge (no face, too small,
too dark...). Bad files are reported and skipped.
"""
import argparse

from spoofsdk import ImageError, LivenessChecker


def main(paths: list[str], model: str | None) -> None:
    checker = LivenessChecker(model)  # model None: the embedded default; detector: the bundled YuNet
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", default=None, help="a spoofsdk ONNX file or embedded model name (default: the embedded default)")
    args = parser.parse_args()
    main(args.images, args.model)
