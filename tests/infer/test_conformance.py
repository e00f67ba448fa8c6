"""Conformance suite: every exported loss, one parametrized suite (the style of Pyro's
``tests/infer/test_gradient.py``).

A loss joins by adding one :class:`Case` to ``CASES``: how to build it, which model it trains (a
Gaussian VAE, or a VAE with an energy-based prior), how many steps cover its phases twice, which
tensors each phase must leave untouched, and why it cannot run on the ``meta`` device if it
cannot. Each test builds tiny float64 PyroModules (the guide produces loc and scale from one
shared output layer).
"""

import copy
import math
from dataclasses import dataclass, field

import pyro
import pytest
import torch
from pyro.infer import SVI
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from pyro.optim import SGD, Adam, ClippedAdam
from torch import nn

import pyro_vsm
from pyro_vsm import (
    AAELoss,
    AdversarialPriorLoss,
    BetaELBO,
    ImplicitELBO,
    ImplicitWAELoss,
    ImportanceWeightedPriorLoss,
    JointFisherLoss,
    LaggingInferenceELBO,
    LiBILoss,
    M1Loss,
    M2Loss,
    M3Loss,
    MMDWAELoss,
    MVLLoss,
    MVLPriorLoss,
    NonFiniteLossError,
    SSMPriorLoss,
    VGHLoss,
)
from pyro_vsm.checkpoint import load_checkpoint, restore, save_checkpoint
from pyro_vsm.distributions import ConditionalQuadraticFormEnergy, EnergyDistribution
from pyro_vsm.guides import DiagonalNormalEncoder, GaussianVariationalPrior
from pyro_vsm.models import EnergyPriorVAE, GaussianVAE, data_plate, mlp

D64 = torch.float64
DX, DZ, N = 3, 2, 8


class QuadraticEnergy(nn.Module):
    """E(z) = ½(z − μ)ᵀ(LLᵀ)(z − μ): a learnable Gaussian energy."""

    def __init__(self, dz=DZ):
        super().__init__()
        self.mu = nn.Parameter(0.1 * torch.randn(dz))
        self.L = nn.Parameter(torch.eye(dz) + 0.1 * torch.randn(dz, dz).tril(-1))
        self.event_shape = torch.Size([dz])

    def forward(self, z):
        r = (z - self.mu) @ self.L
        return 0.5 * r.pow(2).sum(-1)


class UnnormalizedModel(PyroModule):
    """An energy-based model of the data, e^{-E(x)} with a learnable quadratic energy."""

    def __init__(self):
        super().__init__()
        energy = QuadraticEnergy(DX)
        to_pyro_module_(energy)
        self.energy = energy

    def forward(self, x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample("x", EnergyDistribution(self.energy), obs=x)


class NoGuide(PyroModule):
    """The guide of a model without latent sites."""

    def forward(self, x, num_data=None):
        return None


def decoder_params(model, guide):
    return [p for n, p in model.named_parameters() if not n.startswith("energy")]


def guide_params(model, guide):
    return list(guide.parameters())


def scale_rows(model, guide):
    """The rows of the guide's shared output layer that produce the scale."""
    out = guide.encoder[-1]
    return [out.weight[DZ:], out.bias[DZ:]]


def latent_energy(cond_dim=0):
    """A small E(z, x) (or E(z)), initialised identically in every test (RNG untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ConditionalQuadraticFormEnergy(DZ, cond_dim, hidden=(4,), dtype=D64)


@dataclass
class Case:
    make: object  # **kwargs -> loss
    energy: bool = False  # the model has an energy-based prior
    unnormalized: bool = False  # the model is an energy-based model of the data (no latents)
    steps: int = 4  # steps that cover every phase twice
    frozen: dict = field(default_factory=dict)  # phase -> (model, guide) -> tensors untouched
    meta: str | None = None  # why the loss cannot run on the meta device (None: it can)
    particles: int = 1  # the least number of particles the loss accepts


ALTERNATING = {"guide": decoder_params, "model": guide_params}


def model_and_guide_params(model, guide):
    return list(model.parameters()) + list(guide.parameters())


def discriminator(dim):
    """A tiny MLP with a fixed initialisation (every build of a case's loss is the same loss)."""
    with torch.random.fork_rng():
        torch.manual_seed(dim)
        return mlp(dim, (4,), 1).to(D64)


HYBRID = {
    "encoder": decoder_params,
    "generator": guide_params,
    "data_discriminator": model_and_guide_params,
    "code_discriminator": model_and_guide_params,
}

CASES = {
    "M1Loss(kl)": Case(lambda **kw: M1Loss("kl", **kw), frozen=ALTERNATING),
    "M1Loss(fisher)": Case(lambda **kw: M1Loss("fisher", **kw), frozen=ALTERNATING),
    "M1Loss(fisher-reparam)": Case(
        lambda **kw: M1Loss("fisher-reparam", guide_steps=2, **kw), steps=6, frozen=ALTERNATING
    ),
    "M2Loss": Case(lambda **kw: M2Loss("kl", **kw), frozen=ALTERNATING, particles=2),
    "M3Loss": Case(lambda **kw: M3Loss("fisher", **kw), frozen=ALTERNATING, particles=2),
    "M3Loss(bilevel)": Case(
        lambda **kw: M3Loss("kl", bilevel_steps=1, bilevel_lr=1e-3, **kw),
        frozen=ALTERNATING,
        particles=2,
    ),
    "JointFisherLoss": Case(lambda **kw: JointFisherLoss(**kw), steps=2),
    "SSMPriorLoss": Case(lambda **kw: SSMPriorLoss(**kw), energy=True, steps=2),
    "AdversarialPriorLoss": Case(
        lambda **kw: AdversarialPriorLoss(GaussianVariationalPrior(DZ, dtype=D64), **kw),
        energy=True,
        steps=2,
    ),
    "AAELoss": Case(
        lambda **kw: AAELoss(code_discriminator=discriminator(DZ), **kw), steps=6, frozen=HYBRID
    ),
    "VGHLoss(vgh++)": Case(
        lambda **kw: VGHLoss(discriminator(DX), discriminator(DZ), variant="vgh++", **kw),
        steps=8,
        frozen=HYBRID,
    ),
    "ImportanceWeightedPriorLoss": Case(
        lambda **kw: ImportanceWeightedPriorLoss(**kw), energy=True, steps=2
    ),
    "MVLPriorLoss": Case(lambda **kw: MVLPriorLoss(**kw), energy=True, steps=2),
    "MVLLoss": Case(lambda **kw: MVLLoss(**kw), unnormalized=True, steps=2),
    "MVLLoss(cd1)": Case(lambda **kw: MVLLoss(estimator="cd1", **kw), unnormalized=True, steps=2),
    "MVLLoss(svgd)": Case(lambda **kw: MVLLoss(estimator="svgd", **kw), unnormalized=True, steps=2),
    "BetaELBO": Case(lambda **kw: BetaELBO(0.5, anneal_steps=2, **kw), steps=3),
    "ImplicitELBO": Case(
        lambda **kw: ImplicitELBO(
            latent_energy(DX),
            updates="alternating",
            **kw,
        ),
        frozen={"energy": lambda model, guide: _params(model, guide)},
    ),
    "ImplicitWAELoss": Case(
        lambda **kw: ImplicitWAELoss(latent_energy(), **kw),
        steps=2,
    ),
    "MMDWAELoss": Case(lambda **kw: MMDWAELoss(10.0, **kw), steps=2),
    "LaggingInferenceELBO": Case(
        lambda **kw: LaggingInferenceELBO(inner_window=1, max_inner_steps=2, **kw),
        steps=8,
        frozen={"guide": decoder_params, "model": guide_params},
        meta="its inner stopping rule reads each guide step's value on the host",
    ),
    "LiBILoss": Case(
        lambda **kw: LiBILoss(
            2, 2, 2, eps_sigma=5.0, eps_mu=5.0, validation=lambda m, g, x, n=None: 0.0, **kw
        ),
        steps=8,
        frozen={"likelihood": scale_rows, "inference": decoder_params},
        meta="its rounds are scored on the host (a float validation score)",
    ),
}

#: every loss the package exports is in the suite
EXPORTED = {
    name
    for name in pyro_vsm.__all__
    if isinstance(getattr(pyro_vsm, name), type)
    and issubclass(getattr(pyro_vsm, name), pyro.infer.ELBO)
    and name != "GroupedLoss"
}


def test_every_exported_loss_is_in_the_suite():
    covered = {name.split("(")[0] for name in CASES}
    assert EXPORTED <= covered, EXPORTED - covered


def _build(case, seed=0, device=None):
    torch.manual_seed(seed)
    if case.unnormalized:
        return UnnormalizedModel().to(dtype=D64, device=device), NoGuide()
    if case.energy:
        model = EnergyPriorVAE(mlp(DZ, (4,), DX), QuadraticEnergy())
    else:
        model = GaussianVAE.mlp(DX, DZ, hidden=(4,))
    guide = DiagonalNormalEncoder.mlp(DX, DZ, hidden=(4,))
    model, guide = model.to(dtype=D64, device=device), guide.to(dtype=D64, device=device)
    return model, guide


def _data(device=None, n=N, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DX, generator=g, dtype=D64).to(device)


def _loss(case, **kw):
    kw.setdefault("num_particles", case.particles)
    return case.make(max_plate_nesting=1, **kw)


def _params(model, guide):
    return [p for m in (model, guide) for p in m.parameters()]


def _snapshot(tensors):
    return [t.detach().clone() for t in tensors]


NAMES = sorted(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_float64_steps_and_terms(name):
    case = CASES[name]
    model, guide = _build(case)
    loss = _loss(case)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=loss)
    x = _data()
    for _ in range(case.steps):
        value = svi.step(x)
        assert isinstance(value, float) and math.isfinite(value)
        assert loss.last_terms and all(t.dtype == D64 for t in loss.last_terms.values())
    assert loss.step == case.steps
    assert all(p.dtype == D64 for p in _params(model, guide))
    assert math.isfinite(svi.evaluate_loss(x))


@pytest.mark.parametrize("name", NAMES)
def test_plate_subsampling_scales_like_trace_elbo(name):
    """A minibatch of B points of a data set of size N gives N/B times the minibatch's value."""
    case = CASES[name]
    model, guide = _build(case)
    loss = _loss(case)
    x = _data()
    pyro.set_rng_seed(3)
    batch = loss.loss(model, guide, x)
    pyro.set_rng_seed(3)
    scaled = loss.loss(model, guide, x, 5 * N)
    assert scaled == pytest.approx(5 * batch, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_vectorized_and_looped_particles_agree_in_expectation(name):
    case = CASES[name]
    model, guide = _build(case)
    x = _data()
    means, variances = [], []
    for vectorize in (False, True):
        loss = _loss(case, num_particles=2, vectorize_particles=vectorize)
        pyro.set_rng_seed(5)
        values = torch.tensor([loss.loss(model, guide, x) for _ in range(40)], dtype=D64)
        means.append(values.mean())
        variances.append(values.var() / len(values))
    se = (variances[0] + variances[1]).sqrt()
    assert (means[0] - means[1]).abs() <= 4 * se + 1e-8 * means[0].abs(), (means, se)


OPTIMS = {
    "adam": lambda: Adam({"lr": 0.05}),
    "clipped_adam": lambda: ClippedAdam({"lr": 0.05, "lrd": 0.9}),
    "momentum_sgd": lambda: SGD({"lr": 1e-5, "momentum": 0.9}),
}


@pytest.mark.parametrize("optim", sorted(OPTIMS))
@pytest.mark.parametrize("name", NAMES)
def test_inactive_groups_stay_bit_identical(name, optim):
    case = CASES[name]
    model, guide = _build(case)
    loss = _loss(case)
    svi = SVI(model, guide, OPTIMS[optim](), loss=loss)
    x = _data()
    start = _snapshot(_params(model, guide))
    checked = 0
    for _ in range(case.steps):
        spec = case.frozen.get(loss.phase)
        frozen = spec(model, guide) if spec else []
        before = _snapshot(frozen)
        svi.step(x)
        for b, t in zip(before, frozen, strict=True):
            assert torch.equal(b, t), (name, loss.phase)
            checked += 1
    assert checked or not case.frozen
    moved = [not torch.equal(a, p) for a, p in zip(start, _params(model, guide), strict=True)]
    assert any(moved)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("validation", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_loss_raises_before_anything_moves(name, validation):
    case = CASES[name]
    pyro.enable_validation(validation)
    model, guide = _build(case)
    loss = _loss(case)
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=loss)
    x = _data()
    svi.step(x)  # optimizer state exists, so a zero gradient would move parameters
    before = _snapshot(_params(model, guide))
    step = loss.step
    with pytest.raises(NonFiniteLossError, match=rf"{type(loss).__name__}.*step {step}.*phase"):
        svi.step(x * 1e200)  # finite data whose squares overflow: an infinite loss
    assert all(torch.equal(b, p) for b, p in zip(before, _params(model, guide), strict=True))
    assert loss.step == step
    if not validation:  # a NaN parameter makes a NaN loss
        with torch.no_grad():
            next(iter(model.parameters())).fill_(float("nan"))
        before = _snapshot(_params(model, guide))
        with pytest.raises(NonFiniteLossError, match="non-finite loss"):
            svi.step(x)
        after = _params(model, guide)
        assert all(
            torch.allclose(b, p, rtol=0, atol=0, equal_nan=True)
            for b, p in zip(before, after, strict=True)
        )


def _train(case, steps, x, path=None, resume_from=None, checkpoint_at=None):
    pyro.clear_param_store()
    model, guide = _build(case)
    loss = _loss(case)
    optim = Adam({"lr": 0.02})
    start = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        restore(state, model=model, guide=guide, optim=optim, loss=loss)
        start = state["step"]
    else:
        pyro.set_rng_seed(11)
    svi = SVI(model, guide, optim, loss=loss)
    for step in range(start, steps):
        if step == checkpoint_at:
            save_checkpoint(
                path, config={}, step=step, model=model, guide=guide, optim=optim, loss=loss
            )
            return None
        svi.step(x)
    return _snapshot(_params(model, guide)), loss.state_dict()


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_resume_is_bit_identical(name, tmp_path):
    case = CASES[name]
    x = _data()
    steps = case.steps + 1
    whole, whole_state = _train(case, steps, x)
    path = str(tmp_path / "ckpt.pt")
    _train(case, steps, x, path=path, checkpoint_at=steps // 2 + 1)
    resumed, resumed_state = _train(case, steps, x, resume_from=path)
    assert all(torch.equal(a, b) for a, b in zip(whole, resumed, strict=True))
    assert resumed_state["schedule"] == whole_state["schedule"]


@pytest.mark.parametrize("name", NAMES)
def test_elbo_module_with_a_torch_optimizer_reproduces_svi(name):
    case = CASES[name]
    x = _data()
    model, guide = _build(case)
    pyro.set_rng_seed(7)
    svi = SVI(model, guide, Adam({"lr": 0.02}), loss=_loss(case))
    for _ in range(case.steps):
        svi.step(x)
    expected = _snapshot(_params(model, guide))

    pyro.clear_param_store()
    with pyro.settings.context(module_local_params=True):
        model, guide = _build(case)
        loss = _loss(case)
        module = loss(model, guide)
        opt = torch.optim.Adam(module.parameters(), lr=0.02)
        pyro.set_rng_seed(7)
        for _ in range(case.steps):
            opt.zero_grad()
            module(x).backward()
            opt.step()
    got = _params(model, guide)
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(e, g, rtol=1e-7, atol=1e-10), name


@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_differentiable_loss_on_the_meta_device(name, vectorize):
    """A tensor created without ``device=`` is a CPU tensor and mixing it with meta tensors
    raises, so this catches such tensors without a GPU (Pyro's validation reads values back to
    the host, which meta tensors refuse, so it is off)."""
    case = CASES[name]
    if case.meta:
        pytest.skip(f"exempt: {case.meta}")
    pyro.enable_validation(False)
    model, guide = _build(case, device="meta")
    loss = _loss(case, num_particles=max(2, case.particles), vectorize_particles=vectorize)
    loss.owned_modules.to("meta")
    x = torch.empty(N, DX, dtype=D64, device="meta")
    for _ in range(case.steps):  # every phase, with fresh gradients each time
        value = loss.differentiable_loss(model, guide, x)
        assert value.device.type == "meta"
        value.backward()


def test_shared_output_layer_stays_fixed_through_a_later_round():
    """The case of the issue: LiBI's phase 1 moves the loc rows of a shared output layer and must
    hold its scale rows even once phase 2 has given them Adam momentum."""
    case = CASES["LiBILoss"]
    model, guide = _build(case)
    loss = _loss(case)
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=loss)
    x = _data()
    while loss.round == 0:
        svi.step(x)
    assert loss.phase == "likelihood"
    rows = _snapshot(scale_rows(model, guide))
    loc_rows = _snapshot([guide.encoder[-1].weight[:DZ]])
    svi.step(x)
    assert all(torch.equal(a, b) for a, b in zip(rows, scale_rows(model, guide), strict=True))
    assert not torch.equal(loc_rows[0], guide.encoder[-1].weight[:DZ])


def test_routing_keeps_grad_none_outside_the_active_group():
    case = CASES["M1Loss(kl)"]
    model, guide = _build(case)
    loss = _loss(case)
    x = _data()
    loss.loss_and_grads(model, guide, x)  # a guide step, without SVI
    assert all(p.grad is None for p in decoder_params(model, guide))
    assert all(p.grad is not None for p in guide.parameters())


def test_state_dict_is_weights_only_and_strict(tmp_path):
    case = CASES["LiBILoss"]
    model, guide = _build(case)
    loss = _loss(case)
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=loss)
    for _ in range(5):
        svi.step(_data())
    path = tmp_path / "state.pt"
    torch.save(loss.state_dict(), path)
    state = torch.load(path, weights_only=True)
    other = _loss(case)
    other.load_state_dict(state)
    assert other.step == 5 and other.round_scores == loss.round_scores
    with pytest.raises(ValueError, match="saved by 'LiBILoss'"):
        M1Loss().load_state_dict(copy.deepcopy(state))
