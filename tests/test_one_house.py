"""Each idea is written once (docs/ARCHITECTURE.md, "Who owns which idea"): no second class-name list,
extension list, image reader, conversion, timing loop or MAC counter anywhere in the source.

Source here: spoofsdk/, trainer/, benchmarks/, scripts/, examples/ (not tests/, whose fixtures
build their own inputs on purpose).
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from conftest import REPO

ROOTS = ("spoofsdk", "trainer/spoofsdk_train", "benchmarks", "scripts", "examples")
FILES = sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py") if ".venv" not in p.parts)

# Words only a labelled-folder vocabulary uses ("real"/"spoof" alone are also class-order names).
FOLDER_WORDS = {"live", "living", "bonafide", "bona_fide", "genuine", "fake", "impostor", "imposter"}
CLASS_WORDS = FOLDER_WORDS | {"real", "attack", "spoof", "spoofing", "print", "replay"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@functools.cache
def _parsed() -> tuple[tuple[str, ast.AST], ...]:
    return tuple((_rel(path), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) for path in FILES)


def _trees():
    return _parsed()


def _literal_strings(node) -> set[str]:
    if isinstance(node, ast.Dict):
        items = node.keys
    elif isinstance(node, (ast.Set, ast.List, ast.Tuple)):
        items = node.elts
    else:
        return set()
    return {e.value.lower() for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def _calls(tree, name: str) -> int:
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        (isinstance(n.func, ast.Attribute) and n.func.attr == name) or (isinstance(n.func, ast.Name) and n.func.id == name)))


def _owners(predicate) -> set[str]:
    return {rel for rel, tree in _trees() if predicate(tree)}


def test_sources_are_found():
    assert len(FILES) > 30 and any(p.name == "folders.py" for p in FILES)


def test_one_class_name_list():
    def defines(tree):
        return any((words := _literal_strings(n)) & FOLDER_WORDS and len(words & CLASS_WORDS) >= 2 for n in ast.walk(tree))

    # synthetic.py writes test datasets whose folders use the synonyms on purpose (one pair per layout)
    assert _owners(defines) - {"trainer/spoofsdk_train/synthetic.py"} == {"spoofsdk/folders.py"}


def test_one_extension_list():
    assert _owners(lambda tree: any(len(_literal_strings(n) & IMAGE_EXTS) >= 2 for n in ast.walk(tree))) == {"spoofsdk/sources.py"}


def test_one_image_reader():
    assert _owners(lambda tree: _calls(tree, "imread") > 0) == set()
    # augment.py decodes the bytes it has just JPEG-encoded (compression artefacts), not a file
    assert _owners(lambda tree: _calls(tree, "imdecode") > 0) - {"trainer/spoofsdk_train/augment.py"} == {"spoofsdk/sources.py"}


@pytest.mark.parametrize("call", ["convert_float_to_float16", "quantize_static", "quant_pre_process"])
def test_one_conversion(call):
    assert _owners(lambda tree: _calls(tree, call) > 0) == {"trainer/spoofsdk_train/convert.py"}


# Clock readings in a loop that are not a timing loop: the checker times its own stages once per face
# (instrumentation of one frame, reported with the result).
NOT_TIMING_LOOPS = {"spoofsdk/checker.py"}


def test_one_timing_loop():
    """A loop that reads the clock twice per pass, or a function with rounds/runs/warm-up that reads it,
    is a timing loop: only spoofsdk.timing has them (its loops call its own ``call_ms``)."""
    def times_in_a_loop(tree):
        return any(isinstance(n, (ast.For, ast.While)) and sum(_calls(b, "perf_counter") for b in n.body) >= 2 for n in ast.walk(tree))

    def repeats_and_reads_the_clock(tree):
        knobs = {"rounds", "runs", "warmup", "repeat", "repeats", "reps"}
        return any(isinstance(n, ast.FunctionDef) and knobs & {a.arg for a in n.args.args + n.args.kwonlyargs}
                   and _calls(n, "perf_counter") for n in ast.walk(tree))

    assert _owners(times_in_a_loop) - NOT_TIMING_LOOPS == set()
    assert _owners(repeats_and_reads_the_clock) == set()
    strings = [rel for rel, tree in _trees() for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.count("perf_counter()") >= 2 and "for " in n.value]
    assert strings == []  # no timing loop hidden in a code string run in a subprocess either


def test_one_mac_counter():
    def counts_macs(tree):
        return any(isinstance(n, ast.FunctionDef) and "macs" in n.name.lower() and (
            _calls(n, "register_forward_hook") or _calls(n, "infer_shapes")) for n in ast.walk(tree))

    assert _owners(counts_macs) == {"trainer/spoofsdk_train/macs.py", "trainer/spoofsdk_train/models/__init__.py"}


def test_the_test_command_is_written_once():
    """README's test command is the one .ci/run runs, character for character."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in readme.splitlines() if "-m pytest" in line and line.startswith("python3 -m venv"))
    assert command in ci.splitlines() and "slow or not slow" in command


# Memory probes run as subprocesses and read the process's RSS before importing anything: argparse is
# part of the interpreter already, click would be counted.
MEMORY_PROBES = {"benchmarks/stream_memory.py", "benchmarks/stream_soak.py"}


def test_one_cli_stack():
    """Every command line is click with the shared error handler (spoofsdk.clitools)."""
    def uses_argparse(tree):
        return any(isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in ((getattr(n, "module", None) or "") + " ".join(a.name for a in n.names))
                   for n in ast.walk(tree))

    # examples/ are the user's own scripts, written with the standard library on purpose
    assert {rel for rel in _owners(uses_argparse) if not rel.startswith("examples/")} - MEMORY_PROBES == set()
    for rel, tree in _trees():
        groups = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and n.func.attr in ("group", "command") and isinstance(n.func.value, ast.Name) and n.func.value.id == "click"]
        for call in groups:
            assert any(k.arg == "cls" for k in call.keywords), f"{rel}: click.{call.func.attr}() without the shared cls (clitools.Group/Command)"
