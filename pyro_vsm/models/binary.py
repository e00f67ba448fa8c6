r"""A VAE with binary latents, trained through their Concrete relaxation (Wenliang, 2022,
Appendix B.2: "a VAE model with binary :math:`z`; a factorised Bernoulli :math:`q` whose
parameters are optimised by Gumbel softmax")."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from torch.distributions import constraints

from .._checks import check_positive
from ..distributions.relaxed import LogitRelaxedBernoulli
from .networks import ConvDecoder, data_plate, mlp

__all__ = ["BinaryLatentVAE", "check_probability"]


def check_probability(value, name):
    r"""``value`` as a float if it lies strictly between 0 and 1, else ``ValueError``.

    :param value: the value to check.
    :param str name: the argument's name, for the message.
    """
    value = check_positive(value, name)
    if not value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return value


class BinaryLatentVAE(PyroModule):
    r"""A Gaussian VAE with binary latents :math:`z \in \{0, 1\}^d`:

    .. math::

        p(z) = \prod_i \operatorname{Bernoulli}(z_i; \pi), \qquad
        p_\theta(x|z) = \mathcal N(x; g_\theta(z), \gamma).

    Two modes share the parameters (:attr:`relaxed`, switched together with the guide's, e.g.
    :class:`~pyro_vsm.guides.BernoulliEncoder`):

    * ``relaxed=True`` (training): site ``"z"`` holds the *logit* :math:`y` of a relaxed Bernoulli
      (binary Concrete) variable with temperature :math:`\tau`,
      :class:`~pyro_vsm.distributions.LogitRelaxedBernoulli` with logits
      :math:`\operatorname{logit}\pi`, and the decoder reads :math:`\operatorname{sigmoid}(y)
      \in (0, 1)^d`. The guide is then reparametrisable, so ``Trace_ELBO`` and the KL inference
      of :class:`~pyro_vsm.M1Loss` apply, and the model's scores in :math:`x` at fixed latents
      are those of a Gaussian likelihood, so M1 applies too;
    * ``relaxed=False`` (evaluation): site ``"z"`` is the discrete Bernoulli variable, the decoder
      reads :math:`z \in \{0, 1\}^d`, and importance sampling with a Bernoulli guide estimates
      :math:`\log p(x) = \log\sum_z p(z)p(x|z)` of the binary model.

    Call it as ``model(x, num_data=None)`` (the convention of
    :class:`~pyro_vsm.models.GaussianVAE`: latent site ``"z"``, observed site ``"x"``, plate
    ``"data"``).

    :param torch.nn.Module decoder: maps ``(..., latent_dim)`` to ``(...,) + obs_shape`` means.
    :param int latent_dim: :math:`d`.
    :param tuple obs_shape: shape of one observation.
    :param float temperature: :math:`\tau > 0` of the relaxation (prior and guide).
    :param float prior_probs: :math:`\pi \in (0, 1)`.
    :param gamma: ``"scalar"`` (learnable) or a fixed positive variance.
    :param float gamma_init: initial variance when learnable.

    References:

    [1] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)

    [2] `The Concrete Distribution: A Continuous Relaxation of Discrete Random Variables`,
        Chris J. Maddison, Andriy Mnih, Yee Whye Teh (2017)
    """

    def __init__(
        self,
        decoder,
        latent_dim,
        obs_shape,
        temperature=0.5,
        prior_probs=0.5,
        gamma="scalar",
        gamma_init=1.0,
    ):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.obs_shape = tuple(obs_shape)
        self.temperature = check_positive(temperature, "temperature")
        self.prior_probs = check_probability(prior_probs, "prior_probs")
        self.relaxed = True
        to_pyro_module_(decoder)
        self.decoder = decoder
        if gamma == "scalar":
            self.gamma = PyroParam(torch.tensor(float(gamma_init)), constraint=constraints.positive)
        else:
            self.register_buffer("_fixed_gamma", torch.tensor(check_positive(gamma, "gamma")))
            self.gamma = None

    @classmethod
    def mlp(cls, data_dim, latent_dim, hidden=(30, 30), **kwargs):
        r"""A binary-latent VAE with a fully connected decoder."""
        return cls(mlp(latent_dim, hidden, data_dim), latent_dim, (data_dim,), **kwargs)

    @classmethod
    def conv(cls, latent_dim, channels=1, width=64, image_size=32, **kwargs):
        r"""A binary-latent VAE for square images with a DCGAN-style decoder."""
        shape = (channels, image_size, image_size)
        return cls(
            ConvDecoder(latent_dim, channels, width, image_size), latent_dim, shape, **kwargs
        )

    def variance(self):
        r"""The observation variance :math:`\gamma`."""
        return self._fixed_gamma if self.gamma is None else self.gamma

    def prior(self, like):
        r"""The prior of site ``"z"`` in the current mode (dtype and device of ``like``)."""
        p = torch.full((self.latent_dim,), self.prior_probs, dtype=like.dtype, device=like.device)
        if self.relaxed:
            tau = torch.tensor(self.temperature, dtype=like.dtype, device=like.device)
            return LogitRelaxedBernoulli(tau, logits=torch.logit(p)).to_event(1)
        return dist.Bernoulli(probs=p).to_event(1)

    def decoder_input(self, z):
        r""":math:`\operatorname{sigmoid}(y)` in the relaxed mode, :math:`z` itself otherwise."""
        return torch.sigmoid(z) if self.relaxed else z

    def decode(self, z):
        r"""The mean :math:`g_\theta` of :math:`p(x|z)` at latents of the current mode."""
        return self.decoder(self.decoder_input(z))

    def forward(self, x, num_data=None):
        with data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            loc = self.decode(z)
            scale = self.variance().to(loc).sqrt().expand(loc.shape)
            return pyro.sample("x", dist.Normal(loc, scale).to_event(len(self.obs_shape)), obs=x)
