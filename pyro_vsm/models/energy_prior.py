r"""VAEs with learnable priors: an energy-based prior and the VampPrior baseline.

* :class:`EnergyPriorVAE`: :math:`p_\beta(z) \propto e^{-E_\beta(z)}` (an
  :class:`~pyro_vsm.distributions.EnergyDistribution` at site ``"z"``), trained with
  :class:`~pyro_vsm.infer.SSMPriorLoss`, :class:`~pyro_vsm.infer.AdversarialPriorLoss` or
  :class:`~pyro_vsm.infer.ImportanceWeightedPriorLoss` ("Variational inference with unnormalized
  priors");
* :class:`VampPriorVAE`: the VampPrior of Tomczak & Welling (2018), a uniform mixture of the
  encoder's posteriors at ``K`` learnable pseudo-inputs; normalised, so it trains with
  ``Trace_ELBO``.

Both follow :class:`~pyro_vsm.models.GaussianVAE`'s convention: ``model(x, num_data=None)``,
latent site ``"z"`` and observed site ``"x"`` inside plate ``"data"``; pair them with a guide
using the same names, e.g. :class:`pyro_vsm.guides.DiagonalNormalEncoder`. Observations are
``"gaussian"`` (the decoder gives means, variance ``gamma``) or ``"bernoulli"`` (the decoder
gives logits).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from torch.distributions import constraints

from .._checks import positive_int
from ..distributions import EnergyDistribution, GRBMEnergy
from .networks import data_plate

__all__ = ["EnergyPriorVAE", "VampPriorVAE"]

OBSERVATIONS = ("gaussian", "bernoulli")


class _Likelihood(PyroModule):
    r"""The decoder and the observation model shared by the VAEs of this module."""

    def _init_likelihood(self, decoder, obs, obs_shape, gamma, gamma_init):
        if obs not in OBSERVATIONS:
            raise ValueError(f"obs must be one of {OBSERVATIONS}, got {obs!r}")
        if not isinstance(decoder, torch.nn.Module):
            raise ValueError(f"decoder must be a torch.nn.Module, got {type(decoder).__name__}")
        self.obs = obs
        self.obs_shape = None if obs_shape is None else tuple(obs_shape)
        to_pyro_module_(decoder)
        self.decoder = decoder
        self.gamma = None
        if obs == "bernoulli":
            return
        if gamma == "scalar":
            self.gamma = PyroParam(torch.tensor(float(gamma_init)), constraint=constraints.positive)
        elif gamma == "diagonal":
            if self.obs_shape is None:
                raise ValueError("gamma='diagonal' needs obs_shape (the shape of one observation)")
            self.gamma = PyroParam(
                torch.full(self.obs_shape, float(gamma_init)), constraint=constraints.positive
            )
        else:
            try:
                ok = float(gamma) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(
                    f"gamma must be 'scalar', 'diagonal' or a positive number, got {gamma!r}"
                )
            # float64 so that the fixed value is exact whatever the dtype of the decoder
            self.register_buffer("_fixed_gamma", torch.tensor(float(gamma), dtype=torch.float64))

    def variance(self):
        r"""The observation variance ``γ`` (``None`` for Bernoulli observations)."""
        if self.obs == "bernoulli":
            return None
        return self._fixed_gamma if self.gamma is None else self.gamma

    def likelihood(self, z, event_dim):
        r""":math:`p(x|z)` for latents ``z`` (``event_dim`` = number of observation dims)."""
        out = self.decoder(z)
        if self.obs == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(event_dim)
        scale = self.variance().to(out).sqrt().expand(out.shape)
        return dist.Normal(out, scale).to_event(event_dim)

    def _observe(self, z, x):
        return pyro.sample("x", self.likelihood(z, x.dim() - 1), obs=x)

    def decode(self, z):
        r"""The mean of :math:`p(x|z)` (probabilities for Bernoulli observations)."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.obs == "bernoulli" else out


def _default_sampler(energy):
    from ..samplers import GibbsLangevinSampler, LangevinSampler

    if isinstance(energy, GRBMEnergy):
        return GibbsLangevinSampler(num_steps=100)
    return LangevinSampler(step_size=0.01, num_steps=200)


class EnergyPriorVAE(_Likelihood):
    r"""A VAE with an energy-based prior :math:`p_\beta(z) = e^{-E_\beta(z)}/Z_\beta`:

    .. math::

        z \sim e^{-E_\beta(z)}/Z_\beta, \qquad x \mid z \sim \mathcal N(g_\alpha(z), \gamma)
        \ \text{or}\ \operatorname{Bernoulli}(\operatorname{sigmoid} g_\alpha(z)).

    The latent site ``"z"`` is an :class:`~pyro_vsm.distributions.EnergyDistribution` (its
    ``log_prob`` is the unnormalized :math:`-E(z)`) inside plate ``"data"``; the observed site is
    ``"x"``. Train it with an energy-prior loss (:class:`~pyro_vsm.infer.SSMPriorLoss`, ...),
    evaluate it with :func:`pyro_vsm.evaluation.energy_prior_log_likelihood`.

    The energy and the decoder are converted in place to :class:`~pyro.nn.PyroModule` s, so their
    parameters live in Pyro's param store under ``"energy.*"`` and ``"decoder.*"``.

    :param torch.nn.Module decoder: maps ``(..., latent_dim)`` to ``(...,) + obs_shape`` means
        (Gaussian) or logits (Bernoulli).
    :param torch.nn.Module energy: ``(..., d) -> (...)`` with ``event_shape`` ``(d,)``, e.g.
        :class:`~pyro_vsm.distributions.GRBMEnergy` (the paper's prior).
    :param str obs: ``"gaussian"`` or ``"bernoulli"``.
    :param tuple obs_shape: shape of one observation (needed only for ``gamma="diagonal"``).
    :param gamma: Gaussian variance: ``"scalar"``, ``"diagonal"`` or a fixed positive number.
    :param float gamma_init: initial variance when learnable.
    :param sampler: ``sampler=`` of the prior (used when the model runs without a guide, e.g.
        :class:`~pyro.infer.Predictive`, and by :meth:`generate`); default: Gibbs–Langevin for a
        GRBM, 200 Langevin steps otherwise.
    """

    def __init__(
        self,
        decoder,
        energy,
        obs="gaussian",
        *,
        obs_shape=None,
        gamma="scalar",
        gamma_init=1.0,
        sampler=None,
    ):
        super().__init__()
        if not isinstance(energy, torch.nn.Module):
            raise ValueError(
                f"energy must be a torch.nn.Module (z -> E(z)), got {type(energy).__name__}"
            )
        event_shape = getattr(energy, "event_shape", None)
        if event_shape is None or len(event_shape) != 1:
            raise ValueError(
                "energy must declare event_shape = torch.Size([latent_dim]) (as the energies of "
                f"pyro_vsm.distributions do), got {event_shape!r}"
            )
        self.latent_dim = int(event_shape[0])
        self._init_likelihood(decoder, obs, obs_shape, gamma, gamma_init)
        to_pyro_module_(energy)
        self.energy = energy
        self.sampler = _default_sampler(energy) if sampler is None else sampler

    def prior(self):
        r"""The unnormalized prior :math:`e^{-E(z)}` as an ``EnergyDistribution``."""
        return EnergyDistribution(self.energy, sampler=self.sampler)

    def forward(self, x, num_data=None):
        with data_plate(x, num_data):
            z = pyro.sample("z", self.prior())
            return self._observe(z, x)

    @torch.no_grad()
    def generate(self, num_samples, sampler=None):
        r"""``(z, mean of p(x|z))`` for ``num_samples`` approximate prior draws (MCMC)."""
        num_samples = positive_int(num_samples, "num_samples")
        prior = EnergyDistribution(self.energy, sampler=sampler or self.sampler)
        with torch.enable_grad():
            z = prior.sample((num_samples,))
        return z, self.decode(z)


class VampPriorVAE(_Likelihood):
    r"""A VAE with the VampPrior (Tomczak & Welling, 2018):

    .. math::

        p_\lambda(z) = \frac1K \sum_{k=1}^K q_\phi(z \mid u_k),

    a uniform mixture of the encoder's posteriors at ``K`` learnable pseudo-inputs :math:`u_k`.
    The prior shares the encoder with the guide: pass the guide itself (e.g. a
    :class:`~pyro_vsm.guides.DiagonalNormalEncoder`), which must provide
    ``distribution(x)``, the distribution :math:`q(z|x)` with batch shape ``x.shape[:1]``. The
    prior is normalised, so ``Trace_ELBO`` and
    :func:`~pyro_vsm.evaluation.importance_log_likelihood` apply as they are.

    :param torch.nn.Module decoder: as for :class:`EnergyPriorVAE`.
    :param encoder: the guide, with ``distribution(x)`` and ``latent_dim``.
    :param int num_pseudo_inputs: ``K``.
    :param str obs: ``"gaussian"`` or ``"bernoulli"``.
    :param tuple obs_shape: shape of one observation; needed unless ``pseudo_inputs`` is given.
    :param torch.Tensor pseudo_inputs: initial pseudo-inputs, shape ``(K,) + obs_shape`` (e.g.
        a random subset of the training data); default ``pseudo_init_scale`` times standard
        normal noise (uniform on ``(0, 1)`` for Bernoulli observations).
    :param float pseudo_init_scale: scale of the default initialisation.
    :param gamma: as for :class:`EnergyPriorVAE`.
    :param gamma_init: as for :class:`EnergyPriorVAE`.
    """

    def __init__(
        self,
        decoder,
        encoder,
        num_pseudo_inputs=16,
        obs="gaussian",
        *,
        obs_shape=None,
        pseudo_inputs=None,
        pseudo_init_scale=1.0,
        gamma="scalar",
        gamma_init=1.0,
    ):
        super().__init__()
        if not callable(getattr(encoder, "distribution", None)):
            raise ValueError(
                "encoder must provide distribution(x) -> q(z|x) (e.g. "
                f"pyro_vsm.guides.DiagonalNormalEncoder), got {type(encoder).__name__}"
            )
        k = positive_int(num_pseudo_inputs, "num_pseudo_inputs")
        if pseudo_inputs is None:
            if obs_shape is None:
                raise ValueError("VampPriorVAE: pass obs_shape or pseudo_inputs")
            shape = (k,) + tuple(obs_shape)
            if obs == "bernoulli":
                pseudo_inputs = torch.rand(shape)
            else:
                pseudo_inputs = float(pseudo_init_scale) * torch.randn(shape)
        else:
            pseudo_inputs = torch.as_tensor(pseudo_inputs)
            if pseudo_inputs.dim() < 1 or pseudo_inputs.shape[0] != k:
                raise ValueError(
                    f"pseudo_inputs must have shape (num_pseudo_inputs={k}, *obs_shape), got "
                    f"{tuple(pseudo_inputs.shape)}"
                )
            if obs_shape is not None and tuple(pseudo_inputs.shape[1:]) != tuple(obs_shape):
                raise ValueError(
                    f"pseudo_inputs has observation shape {tuple(pseudo_inputs.shape[1:])}, "
                    f"obs_shape is {tuple(obs_shape)}"
                )
            obs_shape = tuple(pseudo_inputs.shape[1:])
        self._init_likelihood(decoder, obs, obs_shape, gamma, gamma_init)
        self.num_pseudo_inputs = k
        self.latent_dim = getattr(encoder, "latent_dim", None)
        self.encoder = encoder
        self.pseudo_inputs = PyroParam(pseudo_inputs.detach().clone())

    def prior(self):
        r""":math:`\frac1K\sum_k q(z|u_k)` as a ``MixtureSameFamily`` (batch shape ``()``)."""
        components = self.encoder.distribution(self.pseudo_inputs)
        loc = components.mean
        logits = torch.zeros(self.num_pseudo_inputs, dtype=loc.dtype, device=loc.device)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)

    def forward(self, x, num_data=None):
        prior = self.prior()
        with data_plate(x, num_data):
            z = pyro.sample("z", prior)
            return self._observe(z, x)

    @torch.no_grad()
    def generate(self, num_samples):
        r"""``(z, mean of p(x|z))`` for ``num_samples`` exact prior draws."""
        z = self.prior().sample((positive_int(num_samples, "num_samples"),))
        return z, self.decode(z)
