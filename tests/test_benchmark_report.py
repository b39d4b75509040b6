"""benchmarks/report.py renders RESULTS.md from results data, templates and the targets file (no suites run)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO

report = pytest.importorskip("benchmarks.report", reason="benchmarks need the repository checkout")

RESULTS = REPO / "benchmarks" / "results"


def _stored():
    files = [p for p in sorted(RESULTS.glob("*.json")) if "machine" in json.loads(p.read_text())]
    if not files:
        pytest.skip("no stored benchmark results in benchmarks/results/")
    return json.loads(files[0].read_text())


def test_every_template_is_used_and_filled():
    res = _stored()
    text = report.render(res, "plot.png")
    assert set(report.templates()) == set(report.SECTIONS)
    assert "$" not in text.replace("$\\", "")  # no unfilled placeholder
    for heading in ("## Machine", "## Targets", "## Model latency", "## Model size", "## How it was measured"):
        assert heading in text


def test_no_machine_specific_prose():
    res = dict(_stored(), load_start=[0.1, 0.1, 0.1], load_end=[0.2, 0.1, 0.1])
    text = report.render(res, None)
    assert "training job" not in text and "2-core" not in text
    assert "[0.1, 0.1, 0.1]" in text and "## Latency against accuracy" not in text  # no plot, no plot section


def test_targets_come_from_the_config():
    res = _stored()
    goals = report.targets()
    assert goals["latency"]["max_ms"] > 0
    strict = {**goals, "latency": {**goals["latency"], "max_ms": 1e-6}}
    loose = {**goals, "latency": {**goals["latency"], "max_ms": 1e6}}
    row = lambda text: next(line for line in text.splitlines() if line.startswith("| default model per-face latency"))  # noqa: E731
    assert "1e-06 ms" in row(report.render(res, None, strict)) and row(report.render(res, None, strict)).endswith("**not met** |")
    assert row(report.render(res, None, loose)).endswith("| met |")
    without = {k: v for k, v in goals.items() if k != "latency"}
    assert "per-face latency, b1" not in report.render(res, None, without)


def test_a_machine_whose_latest_run_measured_an_older_default_is_marked_superseded():
    """One section per machine keeps each machine's latest run; one that measured another default model than
    the newest run of all says so under its heading (its default-model rows describe the earlier default)."""
    res = _stored()
    machine = lambda cpu: {**res["machine"], "cpu": cpu}  # noqa: E731
    new = dict(res, machine=machine("Board New"), started="2026-11-30 11:00:00 UTC", default_model="model_b")
    old = dict(res, machine=machine("Board Old"), started="2026-11-22 13:00:00 UTC", default_model="model_a")
    same = dict(res, machine=machine("Board Same"), started="2026-11-21 09:00:00 UTC", default_model="model_b")

    def sections(text):
        return {part.split(",", 1)[0]: part for part in text.split("\n## ")[1:]}

    for order in ([new, old, same], [old, same, new]):  # the newest run decides, wherever it comes in the list
        by_cpu = sections(report.render_all([(r, None) for r in order]))
        assert set(by_cpu) == {"Board New", "Board Old", "Board Same"}
        note = by_cpu["Board Old"].split("\n\n")[1]
        assert note.startswith("> **Superseded:**") and "`model_a`" in note and "`model_b`" in note
        assert "2026-11-22 13:00:00 UTC" in note and "Board New, 2026-11-30 11:00:00 UTC" in note
        assert "Superseded" not in by_cpu["Board New"] and "Superseded" not in by_cpu["Board Same"]
    assert "Superseded" not in report.render_all([(old, None)])  # a single machine has nothing newer


def test_a_default_retrained_under_the_same_name_is_marked_superseded():
    """A new default may keep the old one's name and architecture (new weights): the recipe hash of its table
    and its FP32 file tell the runs apart; a field one run did not record (older results) is not compared."""
    res = _stored()
    name = res["default_model"]

    def run(cpu, started, recipe_hash, size, sha=None):
        entry = dict(res["models"][name], loso=dict(res["models"][name]["loso"] or {}, recipe_hash=recipe_hash),
                     fp32=dict(res["models"][name]["fp32"], size_bytes=size))
        if sha is None:
            entry["fp32"].pop("sha256", None)
        else:
            entry["fp32"]["sha256"] = sha
        return dict(res, machine={**res["machine"], "cpu": cpu}, started=started, models=dict(res["models"], **{name: entry}))

    new = run("Board New", "2026-12-01 10:00:00 UTC", "bbbb", 2_000, "f" * 64)
    old = run("Board Old", "2026-11-30 17:00:00 UTC", "aaaa", 1_000)  # recorded before file hashes were kept
    same = run("Board Same", "2026-11-30 18:00:00 UTC", "bbbb", 2_000)
    text = report.render_all([(new, None), (old, None), (same, None)])
    by_cpu = {part.split(",", 1)[0]: part for part in text.split("\n## ")[1:]}
    note = by_cpu["Board Old"].split("\n\n")[1]
    assert note.startswith("> **Superseded:**") and "(recipe aaaa)" in note and "(recipe bbbb)" in note
    assert "Superseded" not in by_cpu["Board Same"] and "Superseded" not in by_cpu["Board New"]
    retrained = run("Board Same", "2026-11-30 18:00:00 UTC", "bbbb", 2_000, "e" * 64)  # same recipe, other file
    assert "Superseded" in report.render_all([(new, None), (retrained, None)]).split("## Board Same")[1]


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = report.plot(_stored(), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------
# Shipped models, their leave-one-source-out figures and the MiniFASNet reference
# ------------------------------------------------------------------------------------------
models = pytest.importorskip("benchmarks.models", reason="benchmarks need the repository checkout")
ASSETS = REPO / "spoofsdk" / "assets"


def _metrics(path):
    from spoofsdk.model import read_metadata_props

    return json.loads(read_metadata_props(path.read_bytes()).get("metrics", "{}"))


def _quantized_only_assets():
    """(name, precision, file) of the embedded models shipped without an FP32 file."""
    from spoofsdk.model import EMBEDDED_MODELS

    return [(name, p, ASSETS / v[p][0]) for name, v in EMBEDDED_MODELS.items() if name != "default" and "fp32" not in v for p in v]


def test_discover_measures_the_int8_only_assets_themselves():
    shipped = _quantized_only_assets()
    assert shipped, "the zoo ships no quantized-only model: this test would prove nothing"
    entries = {e.key: e for e in models.discover()}
    for name, precision, path in shipped:
        e = entries[name]
        assert e.kind == "asset" and e.shipped
        assert e.paths[precision] == path  # the shipped file is the one timed and scored, not a re-quantized copy
        assert (e.fp32 is None) == ("no FP32" in e.note)
        if e.fp32 is not None:  # paired with the trainer's export of the same name and architecture
            from spoofsdk.model import read_metadata_props

            props = read_metadata_props(e.fp32.read_bytes())
            assert (props["name"], props["architecture"], props["precision"]) == (name, e.architecture, "fp32")
            assert str(e.fp32.relative_to(REPO)) in e.note
    trained_archs = {e.architecture for e in entries.values() if e.kind in ("asset", "trained")}
    assert not [k for k, e in entries.items() if e.kind == "untrained" and e.architecture in trained_archs]


def test_quantized_only_asset_pairs_with_a_same_name_fp32_and_tolerates_none(tmp_path):
    """An INT8-only asset takes the FP32 of a runs/ export with its name and architecture; another quantized
    file beside that export does not replace the shipped one; without an FP32 the INT8 is measured alone."""
    import onnx

    name, precision, shipped = _quantized_only_assets()[0]
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / shipped.name).write_bytes(shipped.read_bytes())
    alone = {e.key: e for e in models.discover(assets=assets, runs=tmp_path / "no-runs")}[name]
    assert alone.fp32 is None and alone.paths == {precision: assets / shipped.name} and "no FP32" in alone.note
    assert models.build_fp32(alone) is None
    assert models.ensure_variants(alone, log=lambda m: None) == {precision: assets / shipped.name}  # nothing built, nothing raised

    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    m = onnx.load(str(shipped))  # its metadata is all discover reads: relabelled FP32, it stands in for the export
    for prop in m.metadata_props:
        if prop.key == "precision":
            prop.value = "fp32"
    onnx.save(m, str(run / f"{name}.onnx"))
    (run / f"{name}.int8.onnx").write_bytes(shipped.read_bytes()[:-1] + b" ")  # a decoy quantized sibling
    other = tmp_path / "runs" / "a_other_run"  # another run of the recipe, found first: its threshold differs
    other.mkdir()
    for prop in m.metadata_props:
        if prop.key == "threshold":
            prop.value = "0.123"
    m.graph.doc_string = "another run"  # another graph, or discover would measure the two once
    onnx.save(m, str(other / f"{name}.onnx"))
    paired = {e.key: e for e in models.discover(assets=assets, runs=tmp_path / "runs")}
    e = paired[name]
    assert e.kind == "asset" and e.fp32 == run / f"{name}.onnx" and e.paths[precision] == assets / shipped.name
    assert str(run / f"{name}.onnx") in e.note and "same threshold" in e.note
    assert paired[f"{name}-a_other_run"].kind == "trained"  # the other run stays an unshipped export


def test_default_entry_is_the_embedded_default_by_file(monkeypatch):
    from spoofsdk import model as spoof_model

    entries = models.discover()
    default_files = {f for f, _ in spoof_model.EMBEDDED_MODELS[spoof_model.DEFAULT_MODEL].values()}
    d = models.default_entry(entries)
    assert {p.name for p in d.files()} & default_files
    name, precision, path = _quantized_only_assets()[0]  # the lead may switch the default to such a model
    monkeypatch.setitem(spoof_model.EMBEDDED_MODELS, spoof_model.DEFAULT_MODEL, {precision: (path.name, "0" * 64)})
    assert models.default_entry(entries).key == name


def test_loso_figures_are_the_metadata_numbers():
    checked = 0
    for path in sorted(ASSETS.glob("*.onnx")):
        if path.name.startswith("face_detection"):
            continue
        raw = _metrics(path).get("loso")
        lo = models.read_loso(path)
        if raw is None:
            assert lo is None
            continue
        checked += 1
        # every run of the recipe (the table and its replicates, other seeds) weighs the same
        runs = [{d: v["auc"] for d, v in raw["domains"].items()}] + [r["auc"] for r in raw.get("replicates", [])]
        aucs = [[a for a in run.values() if a is not None] for run in runs]
        assert lo["seeds"] == len(runs) and lo["n_domains"] == len(aucs[0])
        assert lo["auc_mean"] == pytest.approx(np.mean([np.mean(a) for a in aucs]))
        assert lo["auc_worst"] == pytest.approx(np.mean([min(a) for a in aucs]))
        summaries = [raw["summary"]] + [r["summary"] for r in raw.get("replicates", [])]
        assert lo["auc_mean_per_seed"] == pytest.approx([x["auc"]["mean"] for x in summaries])
        assert lo["bpcer_at_apcer_5_mean"] == pytest.approx(np.mean([x["bpcer_at_apcer_5"]["mean"] for x in summaries]))
        assert (lo["recipe"], lo["recipe_hash"]) == (raw["recipe"], raw["recipe_hash"])
    assert checked >= 2  # the default and mnv2probe carry their tables


def test_reference_mean_is_over_the_loso_domains():
    crossval = pytest.importorskip("spoofsdk_train.crossval")
    lo = next(models.read_loso(p) for p in sorted(ASSETS.glob("*.onnx")) if models.read_loso(p))
    domains = [d for d, auc in lo["domains"].items() if auc is not None]
    ref = models.reference_loso(domains)
    # the trainer's own reading of the same file (the column crossval prints beside every LOSO table)
    theirs = crossval._load_reference(models.REFERENCE_TABLE, domains)["auc"]
    assert set(ref["domains"]) == set(theirs) == set(domains) and ref["n_domains"] == len(domains) and not ref["missing"]
    assert {d: v["auc"] for d, v in ref["domains"].items()} == theirs
    assert ref["auc_mean"] == pytest.approx(sum(theirs.values()) / len(theirs)) and ref["auc_worst"] == min(theirs.values())
    assert ref["domains"]["gc535"]["source"] == "gc535/test"  # gc535/train (also scored there) is not a LOSO domain
    own = json.loads(models.REFERENCE_TABLE.read_text())["summary"]["pair"]["loso"]  # the reference run's own 11-domain summary
    assert own["domains"] == len(domains) and ref["auc_mean"] == pytest.approx(own["mean_auc"])
    assert models.reference_loso(domains[:3])["n_domains"] == 3
    assert models.reference_loso(["nowhere"]) is None


def _with_loso(res):
    """Stored results plus the shipped models' rows as a current run records them (facts and LOSO from
    the real assets, latency rows with known numbers)."""
    res = json.loads(json.dumps(res))
    res["models"] = {k: d for k, d in res["models"].items() if d["kind"] == "reference"}
    res["latency"] = [r for r in res["latency"] if r["model"] in res["models"]]
    res["reference"] = [dict(r, threads=t, reference_median_ms=6.5 + t) for t in (1, 2) for r in res.get("reference", [])[:1]]
    entries = [e for e in models.discover() if e.kind == "asset"]
    for i, e in enumerate(entries):
        files = {p: path for p, path in [("fp32", e.fp32), *e.paths.items()] if path is not None}
        if e.fp32 is not None and e.fp32.parent == ASSETS and "int8" not in files:  # found beside it by ensure_variants
            files["int8"] = models._sibling(e.fp32, "int8")
        res["models"][e.key] = {"kind": "asset", "architecture": e.architecture, "note": e.note, "scored": True,
                                "shipped": [p for p, path in files.items() if path.parent == ASSETS], "loso": models.entry_loso(e),
                                **{p: models.model_facts(path) for p, path in files.items()}}
        for p in files:
            res["latency"] += [{"model": e.key, "precision": p, "threads": t, "batch": 1, "ms_per_face": 1.0 + i + t / 10 + (p == "int8") / 100,
                                "rounds": 9, "speedup_vs_fp32": None} for t in (1, 2)]
    domains = [d for e in entries if (lo := models.entry_loso(e)) for d, a in lo["domains"].items() if a is not None]
    res["loso_reference"] = models.reference_loso(list(dict.fromkeys(domains)))
    res["default_model"] = models.default_entry(entries).key
    return res, entries


def test_loso_section_shows_every_shipped_model_and_precision():
    res, entries = _with_loso(_stored())
    text = report.render(res, "plot.png")
    section = text.split("## Latency against leave-one-source-out AUC", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `") or line.startswith("| MiniFASNet")]
    notes = report.loso_notes()
    for i, e in enumerate(entries):
        lo = models.entry_loso(e)
        mine = [r for r in rows if r.startswith(f"| `{e.key}`")]
        assert len(mine) == len({"fp32", "int8"} & set(res["models"][e.key])), e.key
        for r in mine:
            cells = [c.strip() for c in r.strip("|").split("|")]
            assert cells[3] == f"{1.0 + i + 0.1 + (cells[1] == 'INT8') / 100:.3f}"  # 1-thread latency of that precision
            assert cells[5] == f"{res['models'][e.key][cells[1].lower()]['size_bytes'] / 1e6:.2f}"
            if lo:
                seeds = f" ({' / '.join(f'{m:.3f}' for m in lo['auc_mean_per_seed'])})" if lo["seeds"] > 1 else ""
                assert cells[8:11] == [f"{lo['auc_mean']:.3f}{seeds}", f"{lo['auc_worst']:.3f}", f"{lo['bpcer_at_apcer_5_mean']:.3f}"]
                assert lo["recipe_hash"] in cells[12] and (f"{lo['seeds']} seeds" in cells[12]) == (lo["seeds"] > 1)
            else:
                assert cells[8].startswith("not measured")
        if lo is None:
            assert notes.get(e.key, "no `loso` in its metadata") in section
        if e.key == res["default_model"]:
            assert all("(default)" in r for r in mine)
    ref = res["loso_reference"]
    pair = next(r for r in rows if r.startswith("| MiniFASNet"))
    assert f"| {ref['auc_mean']:.3f} | {ref['auc_worst']:.3f} |" in pair and "| 7.500 | 8.500 |" in pair
    assert f"over the {ref['n_domains']} domains" in section and "gc535 = its `gc535/test`" in section
    assert "FP32 recipe's folds" in section
    # a run from before LOSO figures were collected renders without the section
    old = {k: v for k, v in res.items() if k != "loso_reference"}
    assert "leave-one-source-out AUC" not in report.render(old, None).split("## Latency against accuracy")[0]


def test_loso_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    res, _ = _with_loso(_stored())
    points = [pt for pt in report.loso_points(res) if pt["loso"]]
    assert any(pt.get("reference") for pt in points) and len(points) >= 3
    assert report.plot(res, tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
