"""The training loop: data, model, loss, optimiser, schedule, validation, checkpoints, DDP.

Run in one process (``spoofsdk-train train``) or many (``torchrun --nproc_per_node N ...``):
under torchrun the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU)
and each process reads its shard of every epoch through a DistributedSampler.

Reproducible by construction: the sampler draws each epoch from a generator seeded by
(seed, epoch), every augmentation from a generator seeded by (seed, epoch, draw), and the
torch RNG (dropout) is re-seeded at each epoch start; with ``deterministic = true`` torch
is told to use deterministic algorithms. So two CPU runs of one recipe give identical
weights, and a resumed run continues exactly where it stopped.

Checkpoints hold only tensors and plain Python values and load with
``torch.load(path, weights_only=True)``: ``last.pt`` (everything to resume) and ``best.pt``
(the weights with the best validation figure, the recipe and the validation metrics).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from spoofsdk.crop import resize_square, to_tensor
from spoofsdk import metrics
from spoofsdk.errors import SpoofSDKError

from .augment import Augmenter
from .synth import AttackSynthesizer, maybe_synthesize, pick_reference
from .data import CropSet, load_crops, read_manifest
from .models import build_model, count_macs, count_params, get_spec
from .recipe import DataConfig, Recipe, TrainConfig, load_recipe
from .domain_adv import SIDES as DOMAIN_ADV_SIDES, DomainCritic, HeadInput, asymmetric_triplet, critic_loss, feature_width, reversal_coefficient
from .teachers import check_distill_gate, get_teacher, heard_teacher

log = logging.getLogger("spoofsdk_train.train")

__all__ = ["train", "TrainDataset", "BalancedSampler", "predict_scores", "load_checkpoint", "model_from_checkpoint", "check_resumable",
           "CheckpointError", "setup_logging"]


# --- logging ---------------------------------------------------------------------------
def setup_logging(out_dir: Path | None = None, rank: int = 0, level: int = logging.INFO) -> None:
    root = logging.getLogger("spoofsdk_train")
    root.setLevel(level if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        root.addHandler(h)
    if out_dir is not None and rank == 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = str(Path(out_dir) / "train.log")
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == os.path.abspath(path) for h in root.handlers):
            fh = logging.FileHandler(path)
            fh.setFormatter(fmt)
            root.addHandler(fh)
    root.propagate = False


@contextlib.contextmanager
def run_log(out_dir: Path, rank: int = 0):
    """Logging for one run: ``setup_logging(out_dir)``, and the run's ``train.log`` handler removed when
    it ends, so a process that trains several runs (crossval's folds in one worker) writes each run's
    lines to that run's file only."""
    root = logging.getLogger("spoofsdk_train")
    before = set(root.handlers)
    setup_logging(out_dir, rank)
    try:
        yield
    finally:
        for h in set(root.handlers) - before:
            if isinstance(h, logging.FileHandler):
                root.removeHandler(h)
                h.close()


# --- data -------------------------------------------------------------------------------
class TrainDataset(Dataset):
    """Augmented training crops as normalised CHW tensors.

    Indices above ``len(crops)`` encode repeated draws of one crop (``i % len``) so that a
    crop drawn twice in an epoch gets two different augmentations, still reproducibly.
    """

    def __init__(self, crops: CropSet, augment: Augmenter | None, input_size: int, color_order: str, mean, std, seed: int,
                 synth: AttackSynthesizer | None = None):
        self.crops = crops
        self.augment = augment
        # Attack synthesis ([synth]): a live crop may become a synthesized attack (label 0) before the
        # ordinary augmentations, so capture noise/blur/JPEG then hit both classes alike.
        self.synth = synth if synth is not None and (synth.cfg.p_synth > 0 or synth.cfg.p_style_mix > 0) else None
        self.size = int(input_size)
        self.color_order, self.mean, self.std = color_order, tuple(mean), tuple(std)
        self.seed = int(seed)
        self.epoch = 0
        # Domain index of every crop (sorted set names): what the domain critic ([train] domain_adv) guesses.
        self.domains = sorted(set(crops.sets))
        index = {name: k for k, name in enumerate(self.domains)}
        self.domain_ids = np.asarray([index[name] for name in crops.sets], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        n = len(self.crops)
        idx = int(i) % n
        img = self.crops.images[idx]
        label = int(self.crops.labels[idx])
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        original = label
        if self.synth is not None:
            # Style mixing borrows the look of a crop from another domain (set), never the label.
            j = pick_reference(self.crops.sets, idx, rng) if self.synth.cfg.p_style_mix > 0 else None
            img, label = maybe_synthesize(img, label, rng, self.synth, ref=None if j is None else self.crops.images[j])
        if self.augment is not None:
            img = self.augment(img, rng)
        img = resize_square(img, self.size)
        x = to_tensor(img[None], self.color_order, self.mean, self.std)[0]
        if self.augment is not None:
            x = self.augment.erase(x, rng)
        # The third item says "a live crop made into an attack here": its distillation target is the
        # label, and the domain critic (side "live") skips it. The fourth: the crop's domain index.
        return torch.from_numpy(np.ascontiguousarray(x)), label, label != original, int(self.domain_ids[idx])


class BalancedSampler(DistributedSampler):
    """A DistributedSampler that draws each epoch with replacement from per-group weights.

    ``sampling``: 'balanced' gives every (dataset, class) group the same total weight,
    'class' every class, 'uniform' every crop (then it is a plain seeded shuffle without
    replacement). The full epoch is drawn identically in every process from (seed, epoch)
    and each process takes its ``rank::world`` share.
    """

    def __init__(self, crops: CropSet, sampling: str, epoch_size: int, num_replicas: int, rank: int, seed: int):
        super().__init__(_Len(len(crops)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.sampling = sampling
        n = len(crops)
        if sampling == "balanced":
            keys = [f"{s}/{l}" for s, l in zip(crops.sets, crops.labels.tolist())]
        elif sampling == "class":
            keys = [str(l) for l in crops.labels.tolist()]
        elif sampling == "uniform":
            keys = ["all"] * n
        else:
            raise ValueError(f"sampling must be balanced, class or uniform, got {sampling!r}")
        groups = {k: keys.count(k) for k in set(keys)}
        self.weights = torch.tensor([1.0 / groups[k] for k in keys], dtype=torch.float64)
        self.groups = groups
        total = int(epoch_size) if epoch_size else n
        self.num_samples = int(math.ceil(total / num_replicas))
        self.total_size = self.num_samples * num_replicas
        self.n = n

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + self.epoch)
        if self.sampling == "uniform":
            reps = int(math.ceil(self.total_size / self.n))
            idx = torch.cat([torch.randperm(self.n, generator=g) for _ in range(reps)])[: self.total_size]
        else:
            idx = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        # Encode the k-th repeat of a crop as idx + k*n, so repeats get different augmentations.
        seen: dict[int, int] = {}
        out = []
        for i in idx.tolist():
            k = seen.get(i, 0)
            seen[i] = k + 1
            out.append(i + k * self.n)
        return iter(out[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class _Len:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def _worker_init(_):
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# --- model outputs ----------------------------------------------------------------------
def probs_real(logits: torch.Tensor, output: str) -> torch.Tensor:
    """P(real) from the model's raw output."""
    if output == "logit1":
        return torch.sigmoid(logits.reshape(-1).float())
    return torch.softmax(logits.float(), dim=1)[:, 1]


def make_loss(recipe: Recipe, output: str):
    kind = recipe.train.loss
    if kind == "auto":
        kind = "ce" if output == "logits2" else "bce"
    # ``y``: class indices, or (distillation) a float P(real) per crop, a soft target.
    if kind == "ce":
        ce = nn.CrossEntropyLoss(label_smoothing=float(recipe.train.label_smoothing))
        return lambda logits, y: ce(logits.float(), torch.stack([1.0 - y, y], 1) if y.is_floating_point() else y)
    if kind == "bce":
        bce = nn.BCEWithLogitsLoss()
        return lambda logits, y: bce(logits.reshape(-1).float(), y.float())
    raise ValueError(f"loss must be auto, ce or bce, got {kind!r}")


def distill_targets(labels: torch.Tensor, teacher_p_live: torch.Tensor, synthesized: torch.Tensor, alpha: float,
                    gate: str = "none") -> torch.Tensor:
    """Soft P(real) targets: ``(1 - alpha) * label + alpha * teacher``.

    A live crop that the synthesizer made into an attack keeps its label as the whole target: the
    teacher would score the look of the replay we painted, and the label is what we know. With
    ``gate="agree"`` so does every draw the teacher puts on the wrong side of 0.5.
    """
    y = labels.float()
    teacher = heard_teacher(labels, teacher_p_live, synthesized, gate)
    return (1.0 - alpha) * y + alpha * teacher


@torch.no_grad()
def predict_scores(model: nn.Module, crops: CropSet, recipe: Recipe, device: torch.device | str = "cpu", batch_size: int = 128) -> np.ndarray:
    """P(real) for every crop, with the evaluation preprocessing (the runtime's to_tensor)."""
    m = recipe.model
    output = get_spec(m.architecture).output
    model.eval()
    out = []
    for s in range(0, len(crops), batch_size):
        imgs = [resize_square(im, m.input_size) for im in crops.images[s : s + batch_size]]
        x = torch.from_numpy(to_tensor(imgs, m.color_order, m.mean, m.std)).to(device)
        out.append(probs_real(model(x), output).cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _cpu_bf16(train: TrainConfig, device: torch.device | str) -> bool:
    """bf16 autocast on CPU: the one decision the training step and validation both follow."""
    return bool(train.cpu_bf16) and torch.device(device).type == "cpu"


def _scores_and_loss(model, crops: CropSet, recipe: Recipe, loss_fn, device, batch_size: int = 128) -> tuple[np.ndarray, float]:
    """P(real) for every crop and the mean loss, in one pass."""
    m = recipe.model
    output = get_spec(m.architecture).output
    model.eval()
    scores, total = [], 0.0
    # Validation only picks the best epoch, so it runs in the training's CPU precision (bf16: ~3x faster);
    # evaluate/export score in fp32.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16) if _cpu_bf16(recipe.train, device) else contextlib.nullcontext():
        for s in range(0, len(crops), batch_size):
            imgs = [resize_square(im, m.input_size) for im in crops.images[s : s + batch_size]]
            x = torch.from_numpy(to_tensor(imgs, m.color_order, m.mean, m.std)).to(device)
            if recipe.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(crops.labels[s : s + batch_size]).to(device)
            logits = model(x)
            total += float(loss_fn(logits, y)) * len(y)
            scores.append(probs_real(logits, output).cpu().double().numpy())
    return (np.concatenate(scores) if scores else np.zeros(0)), total / max(len(crops), 1)


def validate(model, crops: CropSet, recipe: Recipe, loss_fn, device) -> dict[str, Any]:
    """Per-set loss, AUC and EER on the validation crops, and their means over sets."""
    scores, losses = np.zeros(len(crops)), {}
    for name, part in crops.by_set().items():
        idx = [i for i, s in enumerate(crops.sets) if s == name]
        scores[idx], losses[name] = _scores_and_loss(model, part, recipe, loss_fn, device)
    return set_figures(crops, scores, losses)


def set_figures(crops: CropSet, scores: np.ndarray, losses: dict[str, float] | None = None) -> dict[str, Any]:
    """Per-set AUC, EER, accuracy at 0.5 (and loss, when given) of scored crops, and their means over sets.

    Without losses (a probe fitted on cached statistics), ``val_loss`` is the mean binary cross-entropy of the scores.
    """
    out: dict[str, Any] = {"sets": {}}
    for name in sorted(set(crops.sets)):
        idx = np.asarray([i for i, s in enumerate(crops.sets) if s == name])
        labels, s = crops.labels[idx], np.clip(scores[idx], 1e-7, 1 - 1e-7)
        loss = losses[name] if losses else float(-np.mean(labels * np.log(s) + (1 - labels) * np.log(1 - s)))
        entry = {"loss": loss, "n": len(idx)}
        if 0 < labels.sum() < len(idx):
            entry["auc"] = metrics.roc_auc(labels, s)
            entry["eer"] = metrics.eer(labels, s)[0]
        entry["acc@0.5"] = float(((s >= 0.5) == (labels == 1)).mean())
        out["sets"][name] = entry
    sets = out["sets"].values()
    out["val_loss"] = float(np.mean([e["loss"] for e in sets]))
    aucs = [e["auc"] for e in sets if "auc" in e]
    eers = [e["eer"] for e in sets if "eer" in e]
    out["val_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    out["val_eer"] = float(np.mean(eers)) if eers else float("nan")
    return out


# --- optimiser and schedule ----------------------------------------------------------
def make_optimizer(model: nn.Module, t: TrainConfig, critic: nn.Module | None = None) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(t.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    if critic is not None:
        # The domain critic: its own rate (the schedule scales it like the others), no decay.
        groups.append({"params": list(critic.parameters()), "weight_decay": 0.0, "lr": float(t.lr) * float(t.domain_adv_lr_mult)})
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=float(t.lr))
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=float(t.lr), momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be adamw or sgd, got {t.optimizer!r}")


def make_scheduler(opt, t: TrainConfig):
    """Stepped once per epoch (CosineAnnealingWarmRestarts also gets fractional steps inside the epoch)."""
    epochs, warm = int(t.epochs), int(t.warmup_epochs)
    kind = t.scheduler
    if kind == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(t.t_max) or max(1, epochs - warm), eta_min=float(t.eta_min))
    elif kind == "cosine_warm_restarts":
        main = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=int(t.t_0), T_mult=int(t.t_mult), eta_min=float(t.eta_min))
    elif kind == "constant":
        main = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"scheduler must be cosine, cosine_warm_restarts or constant, got {kind!r}")
    if warm > 0 and kind != "cosine_warm_restarts":
        warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm)
        return torch.optim.lr_scheduler.SequentialLR(opt, [warmup, main], milestones=[warm])
    return main


# --- checkpoints ---------------------------------------------------------------------
class CheckpointError(SpoofSDKError):
    """A checkpoint is missing or unreadable, or does not fit the run it is meant to resume."""


def _plain(obj):
    """Recipe/metrics as plain Python values (what weights_only loading accepts)."""
    return json.loads(json.dumps(obj, default=float))


def load_checkpoint(path: str | os.PathLike) -> dict:
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} not found (train writes best.pt and last.pt into its --out folder)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from e


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, Recipe, dict]:
    """(model in eval mode, recipe, checkpoint) from a best.pt/last.pt file."""
    ck = load_checkpoint(path)
    recipe = Recipe.from_dict(ck["recipe"])
    model = build_model(recipe.model.architecture, **recipe.model.kwargs)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, recipe, ck


def check_resumable(saved: Recipe, recipe: Recipe, extend: bool = False) -> None:
    """Refuse to resume a run folder whose last.pt was trained with a different recipe.

    With ``extend`` the number of epochs may grow (everything else must match): the run goes on
    under the longer schedule.
    """
    if saved.training_hash() == recipe.training_hash():
        return
    grown = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=saved.train.epochs))
    only_epochs = grown.training_hash() == saved.training_hash() and recipe.train.epochs > saved.train.epochs
    if extend and only_epochs:
        return
    changes = "; ".join(saved.differences(recipe))
    hint = "pass --extend to continue with more epochs, or --fresh to start over" if only_epochs else "pass --fresh to start over (or use another --out)"
    raise CheckpointError(f"the run folder was trained with a different recipe ({changes}); {hint}")


# --- distributed -----------------------------------------------------------------------
def _dist_setup() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)  # before the first collective (train's barrier), or NCCL guesses the GPU from the rank
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return world, rank, local


# --- the run -------------------------------------------------------------------------
def _device(t: TrainConfig, local_rank: int) -> torch.device:
    """The device, thread count and determinism switches; seeds Python, numpy and torch."""
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        device = torch.device("cpu")
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    random.seed(t.seed)
    np.random.seed(t.seed)
    torch.manual_seed(t.seed)
    return device


def _load_data(d: DataConfig) -> tuple[CropSet, CropSet]:
    manifests = [read_manifest(p) for p in d.manifests]
    if not manifests:
        raise ValueError("the recipe names no prepared data: set data.manifests or pass --data")
    train_crops = load_crops(manifests, "train", limit=d.limit_train or None)
    val_crops = load_crops(manifests, "val", limit=d.limit_val or None)
    for split, crops in (("train", train_crops), ("val  ", val_crops)):
        for name, part in crops.by_set().items():
            log.info("%s %-8s %5d crops (real %d, attack %d)", split, name, len(part), int(part.labels.sum()), int(len(part) - part.labels.sum()))
    return train_crops, val_crops


@dataclass
class _Run:
    """Everything one training process holds: the pieces built from the recipe and the progress so far."""

    recipe: Recipe
    out: Path
    world: int
    rank: int
    device: torch.device
    model: nn.Module
    ddp_model: nn.Module
    output: str  # the architecture's output kind (logit1 | logits2)
    params: int
    macs: int
    val_crops: CropSet
    ds: TrainDataset
    sampler: BalancedSampler
    loader: DataLoader
    loss_fn: Any
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    use_amp: bool  # CUDA fp16 autocast with a GradScaler
    autocast_dtype: torch.dtype | None  # the autocast dtype of the forward pass (fp16 on CUDA, bf16 on CPU), None = fp32
    start_epoch: int = 0
    best: dict | None = None
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    swa: Any = None  # torch.optim.swa_utils.AveragedModel when train.swa_start > 0
    teacher: Any = None  # a frozen module giving P(live) of the training batch when train.distill_alpha > 0
    teacher_record: dict | None = None  # its name, weight and checkpoint SHA-256s
    critic: Any = None  # the domain critic (DomainCritic, DDP-wrapped with several processes) when train.domain_adv > 0
    head_input: Any = None  # HeadInput: the feature the critic and the triplet loss read, kept from the model's forward pass

    @property
    def swa_first_step(self) -> int:
        """The first step (0-based, over the whole run) whose weights enter the average."""
        return int(self.recipe.train.swa_start * self.recipe.train.epochs * len(self.loader))

    @property
    def averaging(self) -> bool:
        return self.swa is not None and int(self.swa.n_averaged) > 0

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


def _build_run(recipe: Recipe, out: Path, world: int, rank: int, local_rank: int) -> _Run:
    t, m, d = recipe.train, recipe.model, recipe.data
    device = _device(t, local_rank)
    spec = get_spec(m.architecture)
    model = build_model(m.architecture, **m.kwargs).to(device)
    params, macs = count_params(model), count_macs(model, m.input_size)
    if t.domain_adv > 0 or t.triplet_weight > 0:
        width = feature_width(model, m.input_size)  # refuses a model without a `head` before minutes of data loading
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_crops, val_crops = _load_data(d)
    use_amp = t.amp and device.type == "cuda"
    # bf16 keeps fp32's exponent range, so CPU autocast needs no loss scaling (GradScaler stays CUDA-only).
    autocast_dtype = torch.float16 if use_amp else torch.bfloat16 if _cpu_bf16(t, device) else None
    log.info("recipe %s (%s): %s at %d px, %s params, %.1f M MACs, device %s, world %d, autocast %s, channels_last %s",
             recipe.name, recipe.training_hash(), m.architecture, m.input_size, f"{params:,}", macs / 1e6, device, world,
             str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "off", t.channels_last)
    ds = TrainDataset(train_crops, Augmenter(recipe.augment), m.input_size, m.color_order, m.mean, m.std, t.seed,
                      synth=AttackSynthesizer(recipe.synth))
    if ds.synth is not None:  # the only trace in a run's log that its attacks were partly made here
        sc = ds.synth.cfg
        log.info("attack synthesis: p_synth %.2f (replay %.2f / print %.2f) on %s crops, style mixing p %.2f (%s)",
                 sc.p_synth, sc.p_replay, sc.p_print, sc.apply_to.replace("_only", ""), sc.p_style_mix, sc.style_method)
    sampler = BalancedSampler(train_crops, d.sampling, d.epoch_size, world, rank, t.seed)
    per_rank_batch = max(1, t.batch_size // world)
    loader = DataLoader(ds, batch_size=per_rank_batch, sampler=sampler, num_workers=t.num_workers,
                        worker_init_fn=_worker_init if t.num_workers else None, drop_last=len(sampler) > per_rank_batch,
                        pin_memory=device.type == "cuda")
    critic = None
    if t.domain_adv > 0:
        critic = DomainCritic(width, len(ds.domains)).to(device)
        log.info("domain-adversarial alignment (%s side), weight %.3f: a critic over %d training domains %s", t.domain_adv_side,
                 t.domain_adv, len(ds.domains), ds.domains)
    # The critic trains with the model, in the same optimiser and schedule (it is not part of the exported model).
    opt = make_optimizer(model, t, critic)
    ddp_args = {"device_ids": [local_rank] if device.type == "cuda" else None}
    ddp_model = nn.parallel.DistributedDataParallel(model, **ddp_args) if world > 1 else model
    run = _Run(recipe, out, world, rank, device, model, ddp_model, spec.output, params, macs, val_crops, ds, sampler, loader,
               make_loss(recipe, spec.output), opt, make_scheduler(opt, t), torch.amp.GradScaler("cuda", enabled=use_amp), use_amp, autocast_dtype)
    if t.swa_start > 0 and rank == 0:  # only rank 0 validates and saves
        # Buffers (BatchNorm running statistics) are averaged with the weights, so the mean model
        # needs no extra pass over the data to re-estimate them. avg_fn: tensor by tensor; the
        # default foreach kernels (CUDA) refuse BatchNorm's integer num_batches_tracked.
        run.swa = torch.optim.swa_utils.AveragedModel(model, use_buffers=True, avg_fn=torch.optim.swa_utils.get_swa_avg_fn())
    if critic is not None:
        run.critic = nn.parallel.DistributedDataParallel(critic, **ddp_args) if world > 1 else critic
    if critic is not None or t.triplet_weight > 0:  # after the average's copy of the model, which must not carry the hook
        run.head_input = HeadInput(model)
        if t.triplet_weight > 0:
            log.info("asymmetric triplet loss (SSDG), weight %.3f, margin %.3f", t.triplet_weight, t.triplet_margin)
    if t.distill_alpha > 0:
        run.teacher = get_teacher(t.teacher).batch_module(m.color_order, m.mean, m.std).to(device)
        run.teacher_record = teacher_record(t)
        log.info("distillation: %s, alpha %.2f, on every augmented draw", t.teacher, t.distill_alpha)
    return run


def teacher_record(t: TrainConfig) -> dict | None:
    """Which weights taught a run (None without distillation): saved in its checkpoints, named in the export's metadata."""
    if t.distill_alpha <= 0:
        return None
    teacher = get_teacher(t.teacher)
    return {"name": teacher.name, "alpha": t.distill_alpha, "checkpoints": teacher.checkpoints()}


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _resume(run: _Run, extend: bool) -> None:
    """Continue from last.pt: weights, optimiser, schedule, best figure and history."""
    ck = load_checkpoint(run.last_path)
    check_resumable(Recipe.from_dict(ck["recipe"]), run.recipe, extend)
    run.model.load_state_dict(ck["model"])
    start = ck["epoch"] + 1
    if ck["recipe"]["train"]["epochs"] != run.recipe.train.epochs and run.recipe.train.scheduler != "cosine_warm_restarts":
        # Extended: the schedule is the new recipe's, advanced to where the run stands.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()"
            for _ in range(start):
                run.sched.step()
        run.opt.load_state_dict(ck["optimizer"])
        for group, lr in zip(run.opt.param_groups, run.sched.get_last_lr()):
            group["lr"] = lr
        log.info("extending %s from %d to %d epochs", run.out, ck["recipe"]["train"]["epochs"], run.recipe.train.epochs)
    else:
        run.opt.load_state_dict(ck["optimizer"])
        run.sched.load_state_dict(ck["scheduler"])
    if run.use_amp and ck.get("scaler"):
        run.scaler.load_state_dict(ck["scaler"])
    if run.swa is not None and ck.get("swa"):
        run.swa.load_state_dict(ck["swa"])
    if run.critic is not None:
        _unwrap(run.critic).load_state_dict(ck["domain_critic"])
    run.start_epoch, run.best, run.bad_epochs, run.history = start, ck.get("best"), ck.get("bad_epochs", 0), ck.get("history", [])
    log.info("resumed from %s at epoch %d", run.last_path, run.start_epoch)


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict:
    """One pass over the epoch's draws; returns the row of figures the history keeps (before validation)."""
    from tqdm import tqdm

    t, device = run.recipe.train, run.device
    t0 = time.time()
    torch.manual_seed(t.seed * 7919 + epoch * 31 + run.rank)
    run.sampler.set_epoch(epoch)
    run.ds.set_epoch(epoch)
    run.ddp_model.train()
    iters = len(run.loader)
    tot_loss, tot_correct, tot_n, tot_critic, tot_triplet = 0.0, 0, 0, 0.0, 0.0
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not (progress and run.rank == 0), unit="batch", leave=False)
    for it, (x, y, synthesized, domain) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        # Soft targets from the teacher's view of this very (augmented) batch, in fp32 outside autocast.
        target = y if run.teacher is None else distill_targets(y, run.teacher(x), synthesized.to(device), t.distill_alpha, t.distill_gate)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=run.autocast_dtype) if run.autocast_dtype else contextlib.nullcontext():
            logits = run.ddp_model(x)
            loss = run.loss_fn(logits, target)
            if run.critic is not None:
                # The reversal ramps up over the whole run (DANN): the critic learns the domains first.
                coeff = reversal_coefficient((epoch * iters + it) / max(1, t.epochs * iters))
                adv = critic_loss(run.critic, run.head_input.value, domain.to(device), y, synthesized.to(device), t.domain_adv_side, coeff)
                tot_critic += float(adv.detach()) * len(y)
                loss = loss + t.domain_adv * adv
            if t.triplet_weight > 0:
                trip = asymmetric_triplet(run.head_input.value, y, domain.to(device), t.triplet_margin)
                tot_triplet += float(trip.detach()) * len(y)
                loss = loss + t.triplet_weight * trip
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if t.clip_grad > 0:
            run.scaler.unscale_(run.opt)
            # Every trained parameter, the domain critic's included (it sits in the same optimiser).
            nn.utils.clip_grad_norm_([p for g in run.opt.param_groups for p in g["params"]], t.clip_grad)
        run.scaler.step(run.opt)
        run.scaler.update()
        if t.scheduler == "cosine_warm_restarts":
            run.sched.step(epoch + (it + 1) / iters)
        if run.swa is not None and epoch * iters + it >= run.swa_first_step:
            run.swa.update_parameters(run.model)
        with torch.no_grad():
            pred = (probs_real(logits.detach(), run.output) >= 0.5).long()
            tot_correct += int((pred == y).sum())
        tot_loss += float(loss.detach()) * len(y)
        tot_n += len(y)
        if run.rank == 0 and not progress and t.log_every and (it + 1) % t.log_every == 0:
            log.info("  epoch %d it %d/%d loss %.4f acc %.4f (%.1f img/s)", epoch + 1, it + 1, iters, tot_loss / tot_n, tot_correct / tot_n,
                     tot_n * run.world / (time.time() - t0))
        bar.set_postfix(loss=f"{tot_loss / max(tot_n, 1):.4f}")
    lr = run.opt.param_groups[0]["lr"]
    if t.scheduler != "cosine_warm_restarts":
        run.sched.step()
    train_time = time.time() - t0
    if run.world > 1:
        stats = torch.tensor([tot_loss, tot_correct, tot_n, tot_critic, tot_triplet], dtype=torch.float64, device=run.device)  # NCCL: CUDA tensors only
        dist.all_reduce(stats)
        tot_loss, tot_correct, tot_n, tot_critic, tot_triplet = float(stats[0]), int(stats[1]), int(stats[2]), float(stats[3]), float(stats[4])
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": tot_loss / max(tot_n, 1), "train_acc": tot_correct / max(tot_n, 1),
           "t0": t0, "train_time_s": train_time}
    if run.critic is not None:
        # The critic's cross-entropy (every process's draws): near log(domains) once the features no longer tell the cameras apart.
        row["critic_loss"] = tot_critic / max(tot_n, 1)
    if t.triplet_weight > 0:
        row["triplet_loss"] = tot_triplet / max(tot_n, 1)
    return row


def _end_epoch(run: _Run, row: dict) -> bool:
    """Rank 0: validate, keep the history, write best.pt/last.pt; True when early stopping says stop."""
    t = run.recipe.train
    monitor = t.monitor
    sign = -1.0 if monitor == "val_auc" else 1.0  # minimise sign * value
    t0 = row.pop("t0")
    train_time = row.pop("train_time_s")
    # Averaging: the running mean is the run's answer (validated and saved as best.pt every epoch
    # once it has begun); the monitor only reports.
    model = run.swa.module if run.averaging else run.model
    val = validate(model, run.val_crops, run.recipe, run.loss_fn, run.device)
    value = val[monitor]
    improved = run.averaging or run.best is None or (not math.isnan(value) and sign * value < sign * run.best["value"] - 1e-6)
    row.update({"val_loss": val["val_loss"], "val_auc": val["val_auc"], "val_eer": val["val_eer"], "val_sets": val["sets"],
                "epoch_time_s": time.time() - t0, "train_time_s": train_time})
    run.history.append(_plain(row))
    epoch = row["epoch"] - 1
    common = {"epoch": epoch, "recipe": run.recipe.to_dict(), "recipe_hash": run.recipe.training_hash(), "params": run.params,
              "macs": run.macs, "history": run.history}
    if run.teacher_record is not None:
        common["teacher"] = run.teacher_record
    if improved:
        run.best = {"epoch": epoch + 1, "value": float(value), "monitor": monitor, "val": _plain(val)}
        run.bad_epochs = 0
        extra = {"averaged_steps": int(run.swa.n_averaged)} if run.averaging else {}
        torch.save({"model": model.state_dict(), "val": _plain(val), **extra, **common}, run.best_path)
    else:
        run.bad_epochs += 1
    torch.save({"model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                "scaler": run.scaler.state_dict() if run.use_amp else {}, "best": run.best, "bad_epochs": run.bad_epochs,
                "swa": run.swa.state_dict() if run.swa is not None else {},
                "domain_critic": _unwrap(run.critic).state_dict() if run.critic is not None else {}, **common}, run.last_path)
    (run.out / "history.json").write_text(json.dumps(run.history, indent=1))
    sets_txt = "  ".join(f"{k}: auc {v.get('auc', float('nan')):.4f} eer {v.get('eer', float('nan')):.4f} loss {v['loss']:.4f}" for k, v in val["sets"].items())
    # The train loss includes the SSDG terms at their weights; each is also shown on its own.
    aux = "".join(f" ({k.removesuffix('_loss')} {row[k]:.4f})" for k in ("critic_loss", "triplet_loss") if k in row)
    log.info("epoch %d/%d  lr %.2e  train loss %.4f%s acc %.4f  val loss %.4f auc %.4f eer %.4f  [%s]  %.0fs%s",
             epoch + 1, t.epochs, row["lr"], row["train_loss"], aux, row["train_acc"], val["val_loss"], val["val_auc"], val["val_eer"], sets_txt,
             row["epoch_time_s"], f"  *averaged over {int(run.swa.n_averaged)} steps*" if run.averaging else "  *best*" if improved else "")
    if t.patience and run.bad_epochs >= t.patience:
        log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)", monitor, run.bad_epochs, run.best["value"], run.best["epoch"])
        if run.swa is not None:
            log.warning("early stopping came before weight averaging began (train.swa_start): best.pt is the monitor's best epoch, not an average")
        return True
    return False


def _train_probe(recipe: Recipe, out: Path) -> dict:
    """``train.mode = "probe"``: fit a frozen-trunk model's head on cached trunk statistics (spoofsdk_train.probe)."""
    from .probe import train_probe

    t, m = recipe.train, recipe.model
    _device(t, 0)
    model = build_model(m.architecture, **m.kwargs)
    if not hasattr(model, "head_logit"):
        raise ValueError(f"train.mode 'probe' needs a frozen-trunk architecture (mnv2probe), got {m.architecture!r}")
    params, macs = count_params(model), count_macs(model, m.input_size)
    train_crops, val_crops = _load_data(recipe.data)
    log.info("recipe %s (%s): %s probe at %d px, %s params, %.1f M MACs", recipe.name, recipe.training_hash(), m.architecture,
             m.input_size, f"{params:,}", macs / 1e6)
    val, row = train_probe(recipe, out, train_crops, val_crops, model)
    row.update({"val_loss": val["val_loss"], "val_auc": val["val_auc"], "val_eer": val["val_eer"], "val_sets": val["sets"]})
    history = [_plain(row)]
    best = {"epoch": t.epochs, "value": float(val[t.monitor]), "monitor": t.monitor, "val": _plain(val)}
    common = {"epoch": t.epochs - 1, "recipe": recipe.to_dict(), "recipe_hash": recipe.training_hash(), "params": params, "macs": macs,
              "history": history}
    record = teacher_record(t)
    if record is not None:
        common["teacher"] = record
    torch.save({"model": model.state_dict(), "val": _plain(val), **common}, out / "best.pt")
    torch.save({"model": model.state_dict(), "best": best, "bad_epochs": 0, **common}, out / "last.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    log.info("probe fitted in %.0f s: val auc %.4f eer %.4f [%s]", row["epoch_time_s"], val["val_auc"], val["val_eer"],
             "  ".join(f"{k}: auc {v.get('auc', float('nan')):.4f}" for k, v in val["sets"].items()))
    summary = {"out": str(out), "best": best, "epochs_run": t.epochs, "early_stopped": False, "params": params, "macs": macs,
               "recipe_hash": recipe.training_hash()}
    (out / "train_summary.json").write_text(json.dumps(_plain(summary), indent=1))
    return summary


def train(recipe: Recipe | dict, out_dir: str | os.PathLike, resume: bool = True, progress: bool | None = None, extend: bool = False) -> dict:
    """Run (or resume) training for a loaded recipe; writes checkpoints and history into ``out_dir``.

    ``resume``: continue from ``out_dir/last.pt`` when it exists; it must have been written by the
    same recipe (:meth:`Recipe.training_hash`), except that ``extend`` lets ``train.epochs`` grow.
    Returns a summary dict (best epoch, best validation figures, paths).
    """
    recipe = load_recipe(recipe)
    out = Path(out_dir)
    world, rank, local_rank = _dist_setup()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    with run_log(out, rank):
        return _train(recipe, out, world, rank, local_rank, resume, progress, extend)


def _train(recipe: Recipe, out: Path, world: int, rank: int, local_rank: int, resume: bool, progress: bool | None, extend: bool) -> dict:
    if not 0.0 <= recipe.train.swa_start < 1.0:
        raise ValueError(f"train.swa_start is the fraction of the run after which weights are averaged, in [0, 1); got {recipe.train.swa_start}")
    if recipe.train.swa_start > 0 and recipe.train.mode != "full":
        raise ValueError(f"train.swa_start (weight averaging) is for train.mode = 'full', not {recipe.train.mode!r}")
    if recipe.train.swa_start > 0 and extend:
        # The average's window is a fraction of the run: more epochs would move it under the mean
        # already taken. Train again (a new --out) with the new epochs instead.
        raise ValueError("--extend cannot change the length of a run with weight averaging (train.swa_start > 0): train again instead")
    if not 0.0 <= recipe.train.distill_alpha <= 1.0:
        raise ValueError(f"train.distill_alpha is the teacher's share of the target, in [0, 1]; got {recipe.train.distill_alpha}")
    check_distill_gate(recipe.train.distill_gate)
    if recipe.train.domain_adv < 0:
        raise ValueError(f"train.domain_adv is the weight of the domain critic's loss, >= 0; got {recipe.train.domain_adv}")
    if recipe.train.domain_adv_lr_mult <= 0:
        raise ValueError(f"train.domain_adv_lr_mult scales the critic's learning rate, > 0; got {recipe.train.domain_adv_lr_mult}")
    if recipe.train.domain_adv_side not in DOMAIN_ADV_SIDES:
        raise ValueError(f"train.domain_adv_side must be one of {', '.join(DOMAIN_ADV_SIDES)}; got {recipe.train.domain_adv_side!r}")
    if recipe.train.triplet_weight < 0 or recipe.train.triplet_margin < 0:
        raise ValueError(f"train.triplet_weight and train.triplet_margin are >= 0; got {recipe.train.triplet_weight}, {recipe.train.triplet_margin}")
    if (recipe.train.domain_adv > 0 or recipe.train.triplet_weight > 0) and recipe.train.mode != "full":
        raise ValueError(f"train.domain_adv and train.triplet_weight (SSDG) are for train.mode = 'full', not {recipe.train.mode!r}")
    if recipe.train.distill_alpha > 0:
        get_teacher(recipe.train.teacher).check_available()  # before minutes of data loading, not after
    if recipe.train.mode == "probe":
        return _train_probe(recipe, out)
    if recipe.train.mode != "full":
        raise ValueError(f"train.mode must be 'full' or 'probe', got {recipe.train.mode!r}")
    run = _build_run(recipe, out, world, rank, local_rank)
    if resume and run.last_path.exists():
        _resume(run, extend)
    if progress is None:
        progress = sys.stderr.isatty()
    log.info("%d epochs x %d iterations of batch %d (x%d processes), sampling %s %s", recipe.train.epochs, len(run.loader),
             run.loader.batch_size, world, recipe.data.sampling, {k: v for k, v in sorted(run.sampler.groups.items())})
    stop = False
    for epoch in range(run.start_epoch, recipe.train.epochs):
        row = _train_epoch(run, epoch, progress)
        flag = torch.zeros(1, device=run.device)  # NCCL broadcasts CUDA tensors only
        if rank == 0 and _end_epoch(run, row):
            flag[0] = 1
        if world > 1:
            dist.broadcast(flag, 0)
        if flag.item():
            stop = True
            break
    summary = {"out": str(out), "best": run.best, "epochs_run": len(run.history), "early_stopped": stop, "params": run.params,
               "macs": run.macs, "recipe_hash": recipe.training_hash()}
    if rank == 0:
        (out / "train_summary.json").write_text(json.dumps(_plain(summary), indent=1))
        if run.best:
            log.info("done: best %s %.4f at epoch %d -> %s", recipe.train.monitor, run.best["value"], run.best["epoch"], run.best_path)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
