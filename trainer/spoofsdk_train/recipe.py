"""Recipes: TOML files in ``trainer/spoofsdk_train/recipes/`` (read with tomllib) checked against typed defaults.

A recipe names everything a run needs: the model and its preprocessing (``[model]``), the
prepared data (``[data]``), the loop (``[train]``), the augmentations (``[augment]``), how the
threshold is chosen (``[eval]``), what goes into the exported file (``[export]``) and the
attack synthesis (``[synth]``, :mod:`spoofsdk_train.synth`). Each section is a dataclass
whose fields are the defaults; a key that is not a field, or a value of the wrong type, is
refused with the nearest known key as a hint (a typo must not train silently with the
default). ``[augment]`` and ``[synth]`` are checked against their
owners' own keys and ``model.kwargs`` is passed to the architecture as given.

``--set section.key=value`` on the command line overrides one field (value in TOML syntax).

A recipe may take sections from another one instead of repeating them::

    [base]
    recipe = "probe"                  # a name in recipes/ or a path (relative to this file)
    sections = ["data", "augment"]    # taken from it; keys written here in those sections win

Only the named sections are inherited (a recipe never picks up, say, the base's training loop
by accident). Bases may have bases; a cycle is refused.

:meth:`Recipe.training_hash` fingerprints everything that shapes the weights; checkpoints
store it so that a run folder is never resumed with a different recipe by accident.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from spoofsdk.errors import SpoofSDKError

__all__ = [
    "RECIPES_DIR", "RecipeError", "Recipe", "ModelConfig", "DataConfig", "TrainConfig", "EvalConfig", "ExportConfig",
    "load_recipe", "list_recipes", "resolve_recipe_path",
]

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeError(SpoofSDKError, ValueError):
    """A recipe (file, dict or ``--set`` override) names an unknown key or gives a value of the wrong type."""

    exit_code = 2  # a usage mistake, like a bad command-line option


@dataclass
class ModelConfig:
    architecture: str = "edgenet"
    input_size: int = 128
    crop_scale: float = 1.5
    color_order: str = "RGB"
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    kwargs: dict[str, Any] = field(default_factory=dict)  # the architecture's own keyword arguments


@dataclass
class DataConfig:
    manifests: list[str] = field(default_factory=list)
    sampling: str = "balanced"  # balanced: equal weight per (dataset, class); class: per class; uniform
    epoch_size: int = 0  # samples per epoch over all processes; 0 = size of the training split
    limit_train: int = 0  # keep at most this many training crops per manifest (tests); 0 = all
    limit_val: int = 0


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    loss: str = "auto"  # auto: label-smoothing CE for logits2, BCE-with-logits for logit1
    label_smoothing: float = 0.0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | cosine_warm_restarts | constant
    warmup_epochs: int = 0
    t_max: int = 0  # cosine: 0 = epochs - warmup
    t_0: int = 5  # cosine_warm_restarts
    t_mult: int = 1
    eta_min: float = 1e-6
    clip_grad: float = 0.0
    patience: int = 0  # early stopping on `monitor`; 0 = off
    monitor: str = "val_loss"  # val_loss (min) | val_eer (min) | val_auc (max)
    amp: bool = True  # mixed precision on CUDA: fp16 autocast + GradScaler
    # CPU speed switches (off by default: they pay for large plain convolutions such as SpoofNet's,
    # measured 6.7 -> 26.5 img/s with both, and not necessarily for depthwise models).
    cpu_bf16: bool = False  # bf16 autocast on CPU (no GradScaler: bf16 has fp32's exponent range)
    channels_last: bool = False  # NHWC memory format for the model and its training batches
    seed: int = 42
    deterministic: bool = True
    num_workers: int = 0
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    log_every: int = 50
    # "full": the whole network is trained on augmented images. "probe": a frozen-trunk model
    # (mnv2probe) whose head is fitted on cached trunk statistics of `probe_views` views of every
    # crop (spoofsdk_train.probe): view 0 = the crop, views 1.. = synthesis + augmentation.
    mode: str = "full"
    probe_views: int = 3
    probe_cache: str = "cache/probe"
    # Distillation: the loss mixes the label with the teacher's P(live) at this weight (0 = off).
    # Probe mode: the teacher's scores of the cached views. Full mode: the teacher scores every
    # augmented training batch as the student sees it (spoofsdk_train.models.minifasnet.PairTeacher).
    distill_alpha: float = 0.0
    teacher: str = "minifasnet_pair"
    # "agree": the teacher's score counts only where it is on the label's side of 0.5 (live above,
    # attack below); where it disagrees the target is the label alone. The teacher then passes on how
    # sure it is, never the opposite class (it ranks lestari15 and gc535 backwards). "none": always.
    distill_gate: str = "none"
    # Weight averaging (SWA; SWAD, Cha et al. 2021, for domain generalisation): from this fraction
    # of the run's steps on, every step's weights go into a running mean, and best.pt holds that
    # mean at the end (a flat-minimum solution, no monitor selection). 0 = off.
    swa_start: float = 0.0
    # Single-side domain-adversarial alignment (SSDG, Jia et al. 2020; spoofsdk_train.domain_adv): a
    # critic guesses the training domain of each live draw from the features the head reads, and a
    # gradient reversal makes the model defeat it. The weight of the critic's loss; 0 = off.
    domain_adv: float = 0.0
    domain_adv_side: str = "live"  # live (SSDG: live draws only) | all (DANN: both classes)
    # The critic's learning rate is train.lr times this (no weight decay): at the model's own rate it was
    # still at chance after a 3-epoch run, so its reversed gradient carried nothing (docs/TRAINING.md).
    domain_adv_lr_mult: float = 10.0
    # SSDG's asymmetric triplet loss on the same (L2-normalised) features: live draws of every domain
    # together, each domain's attacks together and apart from other domains' attacks. Weight; 0 = off.
    triplet_weight: float = 0.0
    triplet_margin: float = 0.1


@dataclass
class EvalConfig:
    threshold: str | float = "eer"  # 'eer', 'apcer:0.05' (lowest threshold with APCER <= 5 % on val) or a number


@dataclass
class ExportConfig:
    opset: int = 17
    parity_tolerance: float = 1e-4
    license: str = "research and evaluation use only"


# Fields added after runs were made, left out of the training hash while at these values, so that
# older runs' hashes (resume, crossval fold reuse) stay valid.
_HASH_OMITS_AT_DEFAULT = {"train.swa_start": 0.0, "train.distill_gate": "none", "train.domain_adv": 0.0, "train.domain_adv_side": "live", "train.domain_adv_lr_mult": 10.0,
                          "train.triplet_weight": 0.0, "train.triplet_margin": 0.1}

# Fields that do not change the weights a run produces: they may differ when a run is resumed.
_BOOKKEEPING = {"name", "description", "eval", "export", "train.num_workers", "train.threads", "train.log_every", "train.probe_cache"}


@dataclass
class Recipe:
    name: str = "model"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: dict[str, Any] = field(default_factory=dict)  # keys of spoofsdk_train.augment.DEFAULTS
    synth: dict[str, Any] = field(default_factory=dict)  # fields of spoofsdk_train.synth.SynthConfig
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    @classmethod
    def from_dict(cls, raw: dict) -> "Recipe":
        """A recipe from its TOML/checkpoint form; unknown keys and wrong types raise :class:`RecipeError`."""
        recipe = _build(cls, raw, "")
        _check_tables(recipe)
        return recipe

    def to_dict(self) -> dict:
        """Plain Python values (what TOML, JSON and ``torch.load(weights_only=True)`` accept)."""
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: Sequence[str] = ()) -> "Recipe":
        """A copy with ``section.key=value`` overrides applied (value parsed as TOML; bare strings allowed)."""
        raw = self.to_dict()
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise RecipeError(f"override must look like section.key=value, got {item!r}")
            try:
                value = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                value = text
            *parents, leaf = key.strip().split(".")
            node, path = raw, ""
            for part in parents:
                path = f"{path}.{part}" if path else part
                if not isinstance(node.get(part), dict):
                    raise RecipeError(_unknown(path, list(node)))
                node = node[part]
            node[leaf] = value  # unknown leaves are caught by from_dict (free tables: augment keys, model.kwargs)
        return Recipe.from_dict(raw)

    def training_hash(self) -> str:
        """SHA-256 (16 hex digits) of every field that shapes the weights (not names, threads, eval or export)."""
        raw = self.to_dict()
        for key in _BOOKKEEPING:
            section, _, leaf = key.partition(".")
            if leaf:
                raw[section].pop(leaf, None)
            else:
                raw.pop(section, None)
        for key, default in _HASH_OMITS_AT_DEFAULT.items():
            section, _, leaf = key.partition(".")
            if raw.get(section, {}).get(leaf) == default:
                raw[section].pop(leaf)
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: "Recipe") -> list[str]:
        """``key: this -> other`` for every leaf that differs (for error messages)."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("augment", "synth", "kwargs"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _unknown(key: str, known: Sequence[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(known), n=1)
    hint = f"did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?" if close else f"known: {', '.join(known)}"
    return f"unknown recipe key {key!r} ({hint})"


def _build(cls, raw: Any, path: str):
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path or 'root'} must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        where = f"{path}.{key}" if path else key
        if key not in names:
            raise RecipeError(_unknown(where, names))
        hint = hints[key]
        values[key] = _build(hint, value, where) if dataclasses.is_dataclass(hint) else _coerce(value, hint, where)
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except RecipeError:
                continue
        raise RecipeError(f"recipe key {where!r} must be {' or '.join(_type_name(t) for t in typing.get_args(hint))}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"recipe key {where!r} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key {where!r} must be a table, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise RecipeError(f"recipe key {where!r} must be {_type_name(hint)}, got {value!r}")
    return value


def _type_name(t: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(t, getattr(t, "__name__", str(t)))


def _check_tables(recipe: Recipe) -> None:
    """The free tables are checked by their owners' key lists: [augment] and [synth]."""
    from .augment import DEFAULTS as AUGMENT_DEFAULTS
    from .synth import SynthConfig

    known = {"augment": list(AUGMENT_DEFAULTS), "synth": [f.name for f in dataclasses.fields(SynthConfig)]}
    for section, keys in known.items():
        for key in getattr(recipe, section):
            if key not in keys:
                raise RecipeError(_unknown(f"{section}.{key}", keys))
    if recipe.synth:
        try:
            SynthConfig.from_mapping(recipe.synth)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"recipe section [synth]: {e}") from e


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def resolve_recipe_path(recipe: str | Path) -> Path:
    p = Path(recipe)
    if p.is_file():
        return p
    q = RECIPES_DIR / f"{recipe}.toml"
    if q.is_file():
        return q
    raise RecipeError(f"recipe {str(recipe)!r} not found (as a file or in {RECIPES_DIR}: {', '.join(list_recipes())})")


def _read_toml(recipe: str | Path, relative_to: Path | None = None, seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file's table with its ``[base]`` sections filled in from the base recipe."""
    candidate = (relative_to / recipe) if relative_to is not None and not Path(recipe).is_absolute() else Path(recipe)
    path = (candidate if candidate.is_file() else resolve_recipe_path(recipe)).resolve()
    if path in seen:
        raise RecipeError(f"recipe base cycle: {' -> '.join(str(p.name) for p in seen + (path,))}")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: {e}") from e
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, dict) or set(base) != {"recipe", "sections"} or not isinstance(base["sections"], list):
        raise RecipeError(f"{path}: [base] must be exactly recipe = \"name\" and sections = [\"section\", ...]")
    parent = _read_toml(base["recipe"], path.parent, seen + (path,))
    sections = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "description")]
    for section in base["sections"]:
        if section not in sections:
            raise RecipeError(f"{path}: [base] section {section!r} is not a recipe section ({', '.join(sections)})")
        if section in parent:
            raw[section] = {**parent[section], **raw.get(section, {})}
    return raw


def load_recipe(recipe: str | Path | dict | Recipe, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe (path, name in trainer/spoofsdk_train/recipes/, dict or Recipe) and apply ``--set`` overrides."""
    if isinstance(recipe, Recipe):
        base = recipe
    elif isinstance(recipe, dict):
        base = Recipe.from_dict(recipe)
    else:
        path = resolve_recipe_path(recipe)
        raw = _read_toml(path)
        try:
            base = Recipe.from_dict(raw)
        except RecipeError as e:
            raise RecipeError(f"{path}: {e}") from e
    return base.with_overrides(overrides)
