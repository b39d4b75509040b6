"""Recipes: TOML files in ``trainer/spoofsdk_train/recipes/`` (read with tomllib) with defaults and overrides.

A recipe names everything a run needs: the model and its preprocessing (``[model]``), the
prepared data (``[data]``), the loop (``[train]``), the augmentations (``[augment]``), how the
threshold is chosen (``[eval]``) and what goes into the exported file (``[export]``).
``--set section.key=value`` on the command line overrides any field (value in TOML syntax).
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any, Sequence

__all__ = ["RECIPES_DIR", "DEFAULTS", "load_recipe", "apply_overrides", "list_recipes"]

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

DEFAULTS: dict[str, Any] = {
    "name": "model",
    "description": "",
    "model": {
        "architecture": "edgenet",
        "input_size": 128,
        "crop_scale": 1.5,
        "color_order": "RGB",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "kwargs": {},
    },
    "data": {
        "manifests": [],
        "sampling": "balanced",  # balanced: equal weight per (dataset, class); class: per class; uniform
        "epoch_size": 0,  # samples per epoch over all processes; 0 = size of the training split
        "limit_train": 0,  # keep at most this many training crops per manifest (tests); 0 = all
        "limit_val": 0,
    },
    "train": {
        "epochs": 30,
        "batch_size": 32,
        "loss": "auto",  # auto: label-smoothing CE for logits2, BCE-with-logits for logit1
        "label_smoothing": 0.0,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "scheduler": "cosine",  # cosine | cosine_warm_restarts | constant
        "warmup_epochs": 0,
        "t_max": 0,  # cosine: 0 = epochs - warmup
        "t_0": 5,  # cosine_warm_restarts
        "t_mult": 1,
        "eta_min": 1e-6,
        "clip_grad": 0.0,
        "patience": 0,  # early stopping on `monitor`; 0 = off
        "monitor": "val_loss",  # val_loss (min) | val_eer (min) | val_auc (max)
        "amp": True,  # mixed precision, CUDA only
        "seed": 42,
        "deterministic": True,
        "num_workers": 0,
        "threads": 0,  # torch CPU threads; 0 = leave torch's default
        "log_every": 50,
    },
    "augment": {},
    "eval": {"threshold": "eer"},  # 'eer' or 'apcer:0.05' (lowest threshold with APCER <= 5 % on val)
    "export": {"opset": 17, "parity_tolerance": 1e-4, "license": "research and evaluation use only"},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("augment", "kwargs"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def resolve_recipe_path(recipe: str | Path) -> Path:
    p = Path(recipe)
    if p.is_file():
        return p
    q = RECIPES_DIR / f"{recipe}.toml"
    if q.is_file():
        return q
    raise FileNotFoundError(f"recipe {recipe!r} not found (as a file or in {RECIPES_DIR}: {', '.join(list_recipes())})")


def apply_overrides(recipe: dict, overrides: Sequence[str] = ()) -> dict:
    """Apply ``section.key=value`` overrides; the value is parsed as TOML (strings may be bare)."""
    out = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override must look like section.key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_recipe(recipe: str | Path | dict, overrides: Sequence[str] = ()) -> dict:
    """Read a recipe (path, name in trainer/spoofsdk_train/recipes/, or dict), merge the defaults, apply overrides."""
    if isinstance(recipe, dict):
        raw = recipe
    else:
        with open(resolve_recipe_path(recipe), "rb") as f:
            raw = tomllib.load(f)
    merged = _merge(DEFAULTS, raw)
    merged = apply_overrides(merged, overrides)
    from .augment import Augmenter

    Augmenter(merged["augment"])  # validates the keys
    return merged
