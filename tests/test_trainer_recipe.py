"""Recipes are typed: typos and wrong types are refused; the training hash guards resumes; CLI mistakes are one line."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")

from spoofsdk_train.cli import main  # noqa: E402
from spoofsdk_train.data import prepare  # noqa: E402
from spoofsdk_train.recipe import Recipe, RecipeError, list_recipes, load_recipe  # noqa: E402
from spoofsdk_train.synthetic import make_synthetic  # noqa: E402
from spoofsdk_train.train import CheckpointError, load_checkpoint, train  # noqa: E402

TINY = ["model.input_size=32", "data.epoch_size=16", "train.epochs=1", "train.batch_size=8", "train.threads=1",
        "train.log_every=0", "train.warmup_epochs=0", "train.patience=0"]


@pytest.mark.parametrize("name", list_recipes())
def test_shipped_recipes_load_and_round_trip(name):
    r = load_recipe(name)
    assert r.name == name and isinstance(r.train.epochs, int) and isinstance(r.train.lr, float)
    again = Recipe.from_dict(r.to_dict())
    assert again == r and again.training_hash() == r.training_hash()


@pytest.mark.parametrize("override, hint", [
    ("train.epoch=1", "train.epochs"),
    ("trian.epochs=1", "train"),
    ("augment.hflp=0.2", "augment.hflip"),
    ("model.input_sise=64", "model.input_size"),
    ("synth.p_synt=0.5", "synth.p_synth"),
])
def test_typos_are_refused_with_the_nearest_key(override, hint):
    with pytest.raises(RecipeError, match=hint.replace(".", r"\.")):
        load_recipe("edgenet", [override])


@pytest.mark.parametrize("override", ["train.epochs=1.5", "train.amp=1", "model.mean=0.5", "train.lr='fast'", "train.epochs"])
def test_wrong_types_are_refused(override):
    with pytest.raises(RecipeError):
        load_recipe("edgenet", [override])


def test_values_are_typed_and_free_tables_stay_free():
    r = load_recipe("edgenet", ["train.lr=1", "train.scheduler=constant", "model.kwargs.dropout=0.1", "augment.hflip=0"])
    assert r.train.lr == 1.0 and isinstance(r.train.lr, float) and r.train.scheduler == "constant"
    assert r.model.kwargs == {"dropout": 0.1} and r.augment["hflip"] == 0
    with pytest.raises(RecipeError, match="unknown recipe key 'colour'"):
        Recipe.from_dict({"colour": "blue"})


def test_base_sections_are_inherited_and_overridden_key_by_key(tmp_path):
    """[base] takes only the named sections from another recipe; keys written in the recipe win."""
    (tmp_path / "parent.toml").write_text('name = "parent"\n[data]\nmanifests = ["a", "b"]\nsampling = "class"\n'
                                          '[train]\nlr = 0.5\n[augment]\nhflip = 0.0\nnoise_p = 0.3\n')
    (tmp_path / "child.toml").write_text('name = "child"\n[base]\nrecipe = "parent.toml"\nsections = ["data", "augment"]\n'
                                         '[data]\nepoch_size = 64\n[augment]\nhflip = 0.5\n')
    child = load_recipe(tmp_path / "child.toml")
    assert child.data.manifests == ["a", "b"] and child.data.sampling == "class" and child.data.epoch_size == 64
    assert child.augment == {"hflip": 0.5, "noise_p": 0.3}
    assert child.train.lr == Recipe().train.lr  # [train] was not named: never inherited
    # The shipped hybrids take the default's data and augmentation: the same values, one source.
    for name in ("hybrid_mnv2", "hybrid"):
        assert load_recipe(name).data.manifests == load_recipe("probe").data.manifests
        assert load_recipe(name).augment == load_recipe("probe").augment
    (tmp_path / "bad.toml").write_text('[base]\nrecipe = "parent.toml"\nsections = ["trian"]\n')
    with pytest.raises(RecipeError, match="not a recipe section"):
        load_recipe(tmp_path / "bad.toml")
    (tmp_path / "loop.toml").write_text('[base]\nrecipe = "loop.toml"\nsections = ["data"]\n')
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "loop.toml")


def test_training_hash_covers_what_shapes_the_weights():
    base = load_recipe("edgenet")
    assert base.training_hash() != base.with_overrides(["train.lr=0.01"]).training_hash()
    assert base.training_hash() != base.with_overrides(["augment.hflip=0.1"]).training_hash()
    assert base.training_hash() != base.with_overrides(["synth.p_synth=0.3"]).training_hash()
    assert base.training_hash() != base.with_overrides(["data.manifests=['other']"]).training_hash()
    for harmless in ("train.threads=1", "train.log_every=5", "eval.threshold='apcer:0.01'", "export.opset=13", "name='x'"):
        assert base.training_hash() == base.with_overrides([harmless]).training_hash(), harmless


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("recipe")
    root = make_synthetic(base / "syn", "class_subject", n_subjects=7, per_subject=3, size=40)
    return prepare(root, base / "cache", size=32, faces="crop", progress=False).parent


def _recipe(data: Path, *extra: str) -> Recipe:
    return load_recipe("edgenet", TINY + [f"data.manifests=['{data}']", *extra])


def test_resume_refuses_a_changed_recipe_unless_fresh(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(_recipe(tiny_data), run, progress=False)
    assert load_checkpoint(run / "last.pt")["recipe_hash"] == _recipe(tiny_data).training_hash()
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.002 -> 0\.01.*--fresh"):
        train(_recipe(tiny_data, "train.lr=0.01"), run, progress=False)
    train(_recipe(tiny_data, "train.lr=0.01"), run, resume=False, progress=False)
    assert load_checkpoint(run / "last.pt")["recipe"]["train"]["lr"] == 0.01


@pytest.mark.slow
def test_extend_continues_on_the_longer_schedule(tiny_data, tmp_path):
    """1 epoch, then --extend to 2, gives the weights and learning rates of an uninterrupted 2-epoch run."""
    full = train(_recipe(tiny_data, "train.epochs=2"), tmp_path / "full", progress=False)
    train(_recipe(tiny_data), tmp_path / "ext", progress=False)
    with pytest.raises(CheckpointError, match="--extend"):
        train(_recipe(tiny_data, "train.epochs=2"), tmp_path / "ext", progress=False)
    ext = train(_recipe(tiny_data, "train.epochs=2"), tmp_path / "ext", extend=True, progress=False)
    assert ext["epochs_run"] == full["epochs_run"] == 2
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "ext" / "last.pt")
    assert [h["lr"] for h in a["history"]] == [h["lr"] for h in b["history"]]
    assert all((a["model"][k] == b["model"][k]).all() for k in a["model"])


def test_cli_mistakes_are_one_line(tiny_data, tmp_path, capsys):
    def run(*args) -> tuple[int, str]:
        code = main(list(args))
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err
        return code, err

    code, err = run("train", "--recipe", "edgenet", "--out", str(tmp_path / "r"), "--set", "train.epoch=1")
    assert code == 2 and err.count("\n") == 0 and "did you mean train.epochs?" in err
    code, err = run("evaluate", str(tmp_path / "nope" / "best.pt"))
    assert code == 1 and err.count("\n") == 0 and "not found" in err
    code, err = run("train", "--recipe", "edgenet", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "cache" / "nuaa"))
    assert code == 1 and err.count("\n") == 0 and "spoofsdk-train prepare" in err
    code, err = run("train", "--recipe", "no-such-recipe", "--out", str(tmp_path / "r"))
    assert code == 2 and "edgenet" in err
