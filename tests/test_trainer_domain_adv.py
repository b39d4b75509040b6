"""[train] domain_adv: single-side domain-adversarial alignment (spoofsdk_train.domain_adv)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

from spoofsdk_train.data import prepare
from spoofsdk_train.domain_adv import DomainCritic, HeadInput, critic_loss, feature_width, grad_reverse, reversal_coefficient
from spoofsdk_train.recipe import load_recipe
from spoofsdk_train.synthetic import make_synthetic
from spoofsdk_train.train import TrainDataset, load_checkpoint, train
from spoofsdk_train.data import load_crops

SHIPPED_HASH = "4343c84f6622a5df"  # the embedded default's recipe (hybrid_mnv2, distilled, SSDG)
BEFORE_SSDG_HASH = "0c57ba0ad70c8ac7"  # the same recipe before the options existed (the previous default)
TINY = ["model.input_size=32", "data.epoch_size=32", "train.epochs=2", "train.batch_size=8", "train.threads=1", "train.log_every=0",
        "train.patience=0"]


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("adv")
    out = []
    for i, name in enumerate(("camA", "camB")):
        root = make_synthetic(base / "raw" / name, "class_flat", n_subjects=3, per_subject=3, size=40, seed=i)
        out.append(prepare(root, base / "cache", size=32, faces="crop", progress=False).parent)
    return out


def _recipe(domains, *extra):
    r = load_recipe("edgenet", TINY + list(extra))
    r.data.manifests = [str(d) for d in domains]
    return r


def test_gradient_reversal_is_identity_forward_and_negated_scaled_backward():
    x = torch.randn(4, 5, requires_grad=True)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(5.0).expand(4, 5))


def test_reversal_ramps_from_zero_towards_one():
    values = [reversal_coefficient(p) for p in (0.0, 0.1, 0.25, 0.5, 1.0)]
    assert values[0] == 0.0 and all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(2 / (1 + math.exp(-10)) - 1) and values[-1] > 0.99
    assert reversal_coefficient(-1.0) == 0.0 and reversal_coefficient(2.0) == values[-1]  # clamped to the run


def test_the_critic_hears_live_draws_only_on_the_live_side():
    torch.manual_seed(0)
    critic = DomainCritic(6, 3)
    feats = torch.randn(6, 6)
    domains = torch.tensor([0, 1, 2, 0, 1, 2])
    labels = torch.tensor([1, 1, 0, 0, 1, 1])
    synthesized = torch.tensor([False, False, False, False, True, False])  # draw 4: a live crop made into an attack (label 1 here only to test the mask)
    live = torch.tensor([0, 1, 5])
    expected = torch.nn.functional.cross_entropy(critic.net(feats)[live], domains[live])  # the critic normalises over the whole batch
    torch.testing.assert_close(critic_loss(critic, feats, domains, labels, synthesized, "live", 1.0), expected)
    torch.testing.assert_close(critic_loss(critic, feats, domains, labels, synthesized, "all", 1.0),
                               torch.nn.functional.cross_entropy(critic.net(feats), domains))
    # No live draw in the batch: zero, and backward still reaches every critic weight (several processes need that).
    none = critic_loss(critic, feats, domains, torch.zeros(6, dtype=torch.long), synthesized, "live", 1.0)
    none.backward()
    assert float(none.detach()) == 0.0 and all(p.grad is not None for p in critic.parameters())
    with pytest.raises(ValueError, match="domain_adv_side"):
        critic_loss(critic, feats, domains, labels, synthesized, "attacks", 1.0)
    with pytest.raises(ValueError, match="two training domains"):
        DomainCritic(6, 1)


def test_the_model_learns_against_the_critic_and_the_critic_for_itself():
    """The critic's weights descend its loss; the features get the opposite of that gradient (times the ramp)."""
    torch.manual_seed(1)
    encoder = torch.nn.Linear(4, 6)
    critic = DomainCritic(6, 2)
    x, domains = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    labels, synthesized = torch.ones(8, dtype=torch.long), torch.zeros(8, dtype=torch.bool)

    def grads(coeff, reverse):
        encoder.zero_grad(), critic.zero_grad()
        feats = encoder(x)
        if reverse:
            loss = critic_loss(critic, feats, domains, labels, synthesized, "live", coeff)
        else:  # the same loss without the reversal
            loss = torch.nn.functional.cross_entropy(critic.net(feats), domains)
        loss.backward()
        return encoder.weight.grad.clone(), critic.net[1].weight.grad.clone()

    plain_enc, plain_critic = grads(1.0, reverse=False)
    rev_enc, rev_critic = grads(0.4, reverse=True)
    torch.testing.assert_close(rev_critic, plain_critic)
    torch.testing.assert_close(rev_enc, -0.4 * plain_enc)


def test_head_input_is_the_feature_the_head_reads():
    recipe = load_recipe("edgenet", TINY)
    from spoofsdk_train.models import build_model

    model = build_model(recipe.model.architecture, **recipe.model.kwargs)
    width = feature_width(model, 32)
    assert model.training  # the probe pass left the mode as it was
    hook = HeadInput(model)
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    out = model(x)
    assert hook.value.shape == (3, width)
    torch.testing.assert_close(model.head(hook.value), out)
    hook.remove()
    with pytest.raises(ValueError, match="has none"):
        HeadInput(torch.nn.Linear(2, 2))


def test_dataset_items_carry_the_domain_index(two_domains):
    crops = load_crops([str(d) for d in two_domains], "train")
    m = _recipe(two_domains).model
    ds = TrainDataset(crops, None, 32, m.color_order, m.mean, m.std, seed=0)
    assert ds.domains == sorted(set(crops.sets)) and len(ds.domains) == 2
    for i in (0, len(crops) - 1):
        assert ds[i][3] == ds.domains.index(crops.sets[i])


def test_training_with_the_critic_end_to_end_and_resumed(two_domains, tmp_path):
    out = tmp_path / "adv"
    summary = train(_recipe(two_domains, "train.domain_adv=0.5"), out, progress=False)
    assert summary["epochs_run"] == 2
    last = load_checkpoint(out / "last.pt")
    history = last["history"]
    # Two domains, a critic at chance would sit at log 2; it must be a finite cross-entropy, reported each epoch.
    assert all(math.isfinite(row["critic_loss"]) and row["critic_loss"] > 0 for row in history)
    critic_state = last["domain_critic"]
    assert critic_state["net.3.weight"].shape[0] == 2  # one logit per training domain
    assert not any(k.startswith("domain") or "critic" in k for k in last["model"])  # the exported model never holds the critic
    # Resume with more epochs: the critic comes back from last.pt as it was saved, and trains on.
    from spoofsdk_train.train import _build_run, _resume

    longer = _recipe(two_domains, "train.domain_adv=0.5", "train.epochs=3")
    run = _build_run(longer, out, 1, 0, 0)
    critic_group = run.opt.param_groups[-1]  # the critic learns at train.lr x domain_adv_lr_mult (10), without decay
    assert critic_group["initial_lr"] == pytest.approx(10 * longer.train.lr) and critic_group["weight_decay"] == 0.0
    assert {id(p) for p in critic_group["params"]} == {id(p) for p in run.critic.parameters()}
    _resume(run, extend=True)
    restored = run.critic.state_dict()
    assert restored.keys() == critic_state.keys() and all(torch.equal(restored[k], critic_state[k]) for k in restored)
    train(longer, out, progress=False, extend=True)
    resumed = load_checkpoint(out / "last.pt")
    assert len(resumed["history"]) == 3 and "critic_loss" in resumed["history"][-1]
    assert not torch.equal(resumed["domain_critic"]["net.3.weight"], critic_state["net.3.weight"])


def test_domain_adv_settings_are_checked_and_off_by_default(two_domains, tmp_path):
    # Off unless a recipe asks: edgenet's recipe does not; the default's (hybrid_mnv2) uses SSDG's settings.
    assert (load_recipe("edgenet").train.domain_adv, load_recipe("edgenet").train.triplet_weight) == (0.0, 0.0)
    shipped = load_recipe("hybrid_mnv2")
    assert (shipped.train.domain_adv, shipped.train.domain_adv_side, shipped.train.triplet_weight, shipped.train.triplet_margin) == (0.1, "live", 2.0, 0.1)
    assert shipped.training_hash() == SHIPPED_HASH  # the weights embedded as the default were trained under this hash
    # Off (side and margin at their defaults): the training hash is the one the recipe had before the options
    # existed (crossval folds and runs on disk are read back by it).
    off = ["train.domain_adv=0", "train.triplet_weight=0"]
    assert load_recipe("hybrid_mnv2", off).training_hash() == BEFORE_SSDG_HASH
    assert load_recipe("hybrid_mnv2", off + ["train.domain_adv_side=\"live\"", "train.triplet_margin=0.1"]).training_hash() == BEFORE_SSDG_HASH
    assert load_recipe("hybrid_mnv2", ["train.triplet_weight=0"]).training_hash() not in (SHIPPED_HASH, BEFORE_SSDG_HASH)
    with pytest.raises(ValueError, match="domain_adv is the weight"):
        train(_recipe(two_domains, "train.domain_adv=-1"), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="domain_adv_side must be one of live, all"):
        train(_recipe(two_domains, "train.domain_adv=0.1", "train.domain_adv_side=\"attack\""), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="two training domains"):
        train(_recipe(two_domains[:1], "train.domain_adv=0.1"), tmp_path / "c", progress=False)
    # A model without a `head` (SpoofNet's classifier) is refused before any data is read (this data does not exist).
    headless = load_recipe("spoofnet", TINY + ["train.triplet_weight=1", "train.cpu_bf16=false", "train.channels_last=false"])
    headless.data.manifests = [str(tmp_path / "nowhere")]
    with pytest.raises(ValueError, match="SpoofNet has none|has none"):
        train(headless, tmp_path / "d", progress=False)


@pytest.mark.slow
def test_the_critic_trains_in_two_processes(two_domains, tmp_path):
    """Several processes: the critic is DDP-wrapped beside the model; its loss is reported and its state saved."""
    from conftest import train_in_two_processes

    out = tmp_path / "ddp"
    train_in_two_processes(out, two_domains, TINY + ["train.domain_adv=0.5"])
    last = load_checkpoint(out / "last.pt")
    assert "x2 processes" in (out / "train.log").read_text()
    assert all(math.isfinite(row["critic_loss"]) for row in last["history"])
    assert last["domain_critic"]["net.3.weight"].shape[0] == 2


# --- the asymmetric triplet loss (train.triplet_weight) -------------------------------------------------
def _brute_triplet(feats, labels, domains, margin):
    z = torch.nn.functional.normalize(feats, dim=1)
    group = [0 if int(l) == 1 else 1 + int(d) for l, d in zip(labels, domains)]
    losses = []
    n = len(z)
    for a in range(n):
        for p in range(n):
            for q in range(n):
                if p != a and group[p] == group[a] and group[q] != group[a]:
                    v = float(torch.dist(z[a], z[p]) - torch.dist(z[a], z[q]) + margin)
                    if v > 0:
                        losses.append(v)
    return sum(losses) / len(losses) if losses else 0.0


def test_triplet_groups_gather_live_of_every_domain_and_split_attacks_by_domain():
    from spoofsdk_train.domain_adv import triplet_groups

    labels = torch.tensor([1, 1, 0, 0, 0, 1])
    domains = torch.tensor([0, 2, 0, 2, 2, 1])
    assert triplet_groups(labels, domains).tolist() == [0, 0, 1, 3, 3, 0]


def test_asymmetric_triplet_equals_the_triplet_by_triplet_definition():
    from spoofsdk_train.domain_adv import asymmetric_triplet

    torch.manual_seed(3)
    feats = torch.randn(9, 5)
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1, 0])
    domains = torch.tensor([0, 1, 2, 0, 0, 1, 1, 2, 2])
    got = asymmetric_triplet(feats, labels, domains, 0.5)
    assert float(got) == pytest.approx(_brute_triplet(feats, labels, domains, 0.5), rel=1e-5)
    assert float(got) > 0
    # Scale does not matter (normalised features); a batch already separated by the margin costs 0 with a graph.
    assert float(asymmetric_triplet(7 * feats, labels, domains, 0.5)) == pytest.approx(float(got), rel=1e-5)
    live, attack_a, attack_b = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([0, 0, 1.0])
    separated = torch.stack([live, live, attack_a, attack_a, attack_b]).requires_grad_(True)
    zero = asymmetric_triplet(separated, torch.tensor([1, 1, 0, 0, 0]), torch.tensor([0, 1, 0, 0, 1]), 0.1)
    zero.backward()
    assert float(zero.detach()) == 0.0 and separated.grad is not None


def test_the_triplet_gradient_pulls_live_of_two_cameras_together():
    from spoofsdk_train.domain_adv import asymmetric_triplet

    feats = torch.tensor([[1.0, 0.3], [0.3, 1.0], [1.0, -1.0]], requires_grad=True)  # live cam0, live cam1, attack cam0
    loss = asymmetric_triplet(feats, torch.tensor([1, 1, 0]), torch.tensor([0, 1, 0]), 1.0)
    loss.backward()
    z = torch.nn.functional.normalize(feats.detach(), dim=1)
    step = torch.nn.functional.normalize(feats.detach() - 0.1 * feats.grad, dim=1)
    assert torch.dist(step[0], step[1]) < torch.dist(z[0], z[1])  # the two live draws move closer
    assert torch.dist(step[0], step[2]) > torch.dist(z[0], z[2])  # and away from the attack


def test_training_with_the_triplet_loss_reports_it(two_domains, tmp_path):
    out = tmp_path / "trip"
    train(_recipe(two_domains, "train.triplet_weight=2.0", "train.epochs=1"), out, progress=False)
    row = load_checkpoint(out / "last.pt")["history"][0]
    assert math.isfinite(row["triplet_loss"]) and row["triplet_loss"] >= 0 and "critic_loss" not in row
    with pytest.raises(ValueError, match="triplet_weight and train.triplet_margin are >= 0"):
        train(_recipe(two_domains, "train.triplet_weight=-2"), tmp_path / "t", progress=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_ssdg_losses_run_in_fp32_under_autocast(dtype):
    """Under fp16/bf16 autocast a unit vector's distance to itself rounds to 0 and sqrt's gradient to NaN;
    both losses must give the fp32 value and finite gradients (a CUDA GradScaler would skip every step)."""
    from spoofsdk_train.domain_adv import asymmetric_triplet

    torch.manual_seed(4)
    critic = DomainCritic(8, 3)
    feats = torch.randn(12, 8)
    labels, domains = torch.tensor([1, 0] * 6), torch.tensor([0, 1, 2] * 4)
    synthesized = torch.zeros(12, dtype=torch.bool)
    want_t = asymmetric_triplet(feats, labels, domains, 0.1)
    want_c = critic_loss(critic, feats, domains, labels, synthesized, "all", 1.0)
    x = feats.to(dtype).requires_grad_(True)  # the feature as an autocast forward hands it over
    with torch.autocast("cpu", dtype=dtype):
        got_t = asymmetric_triplet(x, labels, domains, 0.1)
        got_c = critic_loss(critic, x, domains, labels, synthesized, "all", 1.0)
    assert got_t.dtype == got_c.dtype == torch.float32
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3  # only the input's rounding differs
    assert float(got_t.detach()) == pytest.approx(float(want_t.detach()), rel=tol) and float(got_c.detach()) == pytest.approx(float(want_c.detach()), rel=tol)
    (got_t + got_c).backward()
    assert torch.isfinite(x.grad.float()).all() and all(torch.isfinite(p.grad).all() for p in critic.parameters())
