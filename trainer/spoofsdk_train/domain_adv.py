"""Domain-adversarial feature alignment (``[train] domain_adv``): single-side, as in SSDG.

Jia et al., "Single-Side Domain Generalization for Face Anti-Spoofing" (CVPR 2020): a domain critic
tries to tell from the model's features which training camera a crop came from, and a gradient
reversal layer (Ganin & Lempitsky, DANN, 2015) makes the model's features defeat it. SSDG applies
the critic to **live** crops only: live faces look alike on every camera and their features should
not say which camera took them, while attacks (a phone here, a print there) differ by kind and are
left free to spread. ``side = "all"`` aligns both classes (plain DANN) for comparison.
SSDG's second part, the asymmetric triplet loss (``[train] triplet_weight``), gathers the live draws
of every camera and keeps each camera's attacks together but apart from the other cameras' attacks.

The feature the critic reads is the input of the model's ``head`` (for the hybrids: the pooled trunk
and texture statistics), taken with a forward pre-hook so that no model needs a second output.
Nothing of this reaches the exported model: the critic and the hook live only in training. The
SSDG authors' settings: critic weight 0.1, triplet weight 2, margin 0.1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SIDES = ("live", "all")


def _fp32(t: torch.Tensor):
    """Autocast off for these few small ops: under fp16/bf16 autocast a unit vector's distance to
    itself rounds to 0 and its square root's gradient to NaN (which a GradScaler would skip silently)."""
    return torch.autocast(t.device.type, enabled=False)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff: float):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-coeff`` on the way back."""
    return _GradReverse.apply(x, float(coeff))


def reversal_coefficient(progress: float, gamma: float = 10.0) -> float:
    """DANN's ramp ``2 / (1 + exp(-gamma p)) - 1``: 0 at the start (the critic learns first), near 1 by mid-run."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainCritic(nn.Module):
    """Batch-normalised two-layer MLP from the feature to one logit per training domain, behind a gradient reversal.

    The input BatchNorm (and, in the trainer, a learning rate ten times the model's) let the critic
    learn the domains within the first epoch of a short run; measured on the features of a trained
    fold (live crops, ten domains), such a critic is at 96 % accuracy after 46 steps, an unnormalised
    one at the model's rate at 43 %. A critic that knows nothing reverses nothing.
    """

    def __init__(self, features: int, domains: int, hidden: int = 128):
        super().__init__()
        if domains < 2:
            raise ValueError(f"train.domain_adv needs at least two training domains to align, got {domains} "
                             "(train on one with --set train.domain_adv=0)")
        self.net = nn.Sequential(nn.BatchNorm1d(features), nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, domains))

    def forward(self, feats: torch.Tensor, coeff: float) -> torch.Tensor:
        with _fp32(feats):
            return self.net(grad_reverse(feats.float(), coeff))


class HeadInput:
    """Keeps the input of ``model.head`` from the last forward pass (a forward pre-hook)."""

    def __init__(self, model: nn.Module):
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Module):
            raise ValueError(f"train.domain_adv reads the input of the model's `head`; {type(model).__name__} has none")
        self.value: torch.Tensor | None = None
        self._handle = head.register_forward_pre_hook(self._keep)

    def _keep(self, _module, args):
        self.value = args[0]

    def remove(self) -> None:
        self._handle.remove()


def feature_width(model: nn.Module, input_size: int) -> int:
    """Width of the head's input, found by one forward pass in eval mode (no statistics updated)."""
    hook = HeadInput(model)
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=param.device, dtype=param.dtype))
        return int(hook.value.reshape(1, -1).shape[1])
    finally:
        hook.remove()
        model.train(was_training)


def critic_loss(critic: nn.Module, feats: torch.Tensor, domains: torch.Tensor, labels: torch.Tensor, synthesized: torch.Tensor,
                side: str, coeff: float) -> torch.Tensor:
    """Cross-entropy of the critic on the draws of ``side`` (live: real crops the synthesizer left alone).

    Zero (with a graph, so backward still runs) when the batch holds no such draw.
    """
    if side not in SIDES:
        raise ValueError(f"train.domain_adv_side must be one of {', '.join(SIDES)}; got {side!r}")
    # ``labels`` are the trained labels (a synthesized attack is already 0 there); the flag is belt and braces.
    keep = (labels == 1) & ~synthesized if side == "live" else torch.ones_like(labels, dtype=torch.bool)
    logits = critic(feats.reshape(len(feats), -1), coeff)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[keep], domains[keep])


def triplet_groups(labels: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
    """SSDG's asymmetric grouping: every live draw in group 0, the attacks of domain d in group 1 + d.

    ``labels`` are the labels the loss trains on (a live crop the synthesizer made into an attack is an
    attack of its own domain here).
    """
    return torch.where(labels == 1, torch.zeros_like(domains), 1 + domains)


def asymmetric_triplet(feats: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor, margin: float) -> torch.Tensor:
    """SSDG's asymmetric triplet loss on the L2-normalised features, over every valid triplet of the batch.

    Positives share a group (:func:`triplet_groups`): live draws of any two cameras, or attacks of one
    camera; negatives are in another group, so live is pushed from every attack and the attacks of two
    cameras from each other. ``mean(relu(d(a, p) - d(a, n) + margin))`` over the triplets that still
    violate the margin (batch-all, as the SSDG authors train); zero with a graph when none does.
    """
    with _fp32(feats):
        z = nn.functional.normalize(feats.reshape(len(feats), -1).float(), dim=1)
        n = len(z)
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        # Euclidean distance of unit vectors, sqrt(2 - 2 cos); the diagonal (never a triplet's pair) and
        # near-duplicates are kept off 0 so that the square root's gradient stays finite and moderate.
        dist = (2.0 - 2.0 * z @ z.T).masked_fill(eye, 1.0).clamp_min(1e-8).sqrt()
        group = triplet_groups(labels, domains)
        same = group[:, None] == group[None, :]
        valid = (same & ~eye)[:, :, None] & ~same[:, None, :]  # [anchor, positive, negative]: n^3 booleans (batch 64: 262 k)
        losses = torch.relu(dist[:, :, None] - dist[:, None, :] + float(margin))[valid]
    active = losses > 0
    if not bool(active.any()):
        return dist.sum() * 0.0
    return losses[active].mean()
