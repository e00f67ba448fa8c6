r"""Gaussian-mixture guide for one latent site, fitted without reparametrisation."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam

from .._checks import positive_int


def _generator(seed):
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


class GaussianMixtureGuide(PyroModule):
    r"""Non-amortised Gaussian-mixture guide (Appendix A.5.2 of [1]).

    .. math::

        q(z) = \sum_{k=1}^K \pi_k\,\mathcal{N}(z; \mu_k, \operatorname{diag}\sigma_k^2),
        \qquad \pi = \operatorname{softmax}(\text{logits})

    for one latent site with event shape ``[latent_dim]``, sampled as
    ``MixtureSameFamily(Categorical(logits), Independent(Normal(loc, scale), 1))``. The draw goes
    through the discrete component, so it is **not** reparametrisable: use it with objectives that
    sample ``z`` and detach it, such as ``M1Loss(inference="fisher")``, where the parameters get
    gradients only through the analytic score :math:`\nabla_z\log q(z)` (all of loc, scale and the
    weights enter it). Reparametrised objectives (``"kl"``, ``"fisher-reparam"``,
    ``JointFisherLoss``) raise :class:`~pyro_vsm.infer.ScoreObjectiveError` naming the site.

    Initialisation as in Appendix A.5.2: component means are independent draws from the prior
    ``N(0, prior_scale² I)`` (the standard normal prior of the toy problems by default), standard
    deviations ``init_scale = 1.0``, equal weights (zero logits).

    The guide is global: it does not look at the data, so it approximates one posterior ``p(z|x)``
    for a fixed ``x`` (it accepts and ignores the model's arguments). With ``num_posteriors=N`` it
    holds ``N`` independent mixtures, drawn inside ``pyro.plate(plate, N, dim=plate_dim)``; the
    model must sample the site in a plate of the same name, size and dim (e.g. ``N`` copies of one
    problem fitted from different initialisations at once, or ``N`` data points each with its own
    non-amortised posterior). Amortisation over data is not provided.

    Parameters (``pyro.param`` sites ``{name}.loc``, ``{name}.scale``, ``{name}.logits``; the
    default ``name`` is ``"mixture_{site}"``): ``loc`` and ``scale`` of shape
    ``[N,] K, latent_dim`` (``scale`` positive, optimised on the log scale), ``logits`` of shape
    ``[N,] K``.

    :param str site: name of the latent sample site.
    :param int latent_dim: dimension of the site's event.
    :param int num_components: ``K`` (10 in the paper).
    :param int num_posteriors: ``N`` independent mixtures in a plate, or None (no plate).
    :param str plate: the plate's name when ``num_posteriors`` is given.
    :param int plate_dim: the plate's dim.
    :param init_loc: optional tensor ``[N,] K, latent_dim`` replacing the prior draws.
    :param float init_scale: initial standard deviation of every component.
    :param float prior_scale: standard deviation of the prior the initial means are drawn from.
    :param seed: an int or a :class:`torch.Generator` for the initial means (None: the global RNG).
    :param torch.dtype dtype: dtype of the parameters.
    :param torch.device device: device of the parameters.
    :param str name: prefix of the parameter names.

    References:

    [1] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)
    """

    def __init__(
        self,
        site,
        latent_dim,
        num_components=10,
        *,
        num_posteriors=None,
        plate="posteriors",
        plate_dim=-1,
        init_loc=None,
        init_scale=1.0,
        prior_scale=1.0,
        seed=None,
        dtype=torch.float32,
        device=None,
        name=None,
    ):
        super().__init__(name=f"mixture_{site}" if name is None else name)
        positive_int(latent_dim, "latent_dim")
        positive_int(num_components, "num_components")
        if num_posteriors is not None and (
            isinstance(num_posteriors, bool) or int(num_posteriors) != num_posteriors
        ):
            raise ValueError(f"num_posteriors must be None or an integer, got {num_posteriors!r}")
        if not init_scale > 0 or not prior_scale > 0:
            raise ValueError("init_scale and prior_scale must be positive")
        self.site = site
        self.latent_dim = int(latent_dim)
        self.num_components = int(num_components)
        self.num_posteriors = None if num_posteriors is None else int(num_posteriors)
        self.plate = plate
        self.plate_dim = int(plate_dim)
        batch = () if self.num_posteriors is None else (self.num_posteriors,)
        shape = batch + (self.num_components, self.latent_dim)
        if init_loc is None:
            init_loc = prior_scale * torch.randn(shape, generator=_generator(seed), dtype=dtype)
        else:
            init_loc = torch.as_tensor(init_loc, dtype=dtype)
            if init_loc.shape != shape:
                raise ValueError(
                    f"init_loc must have shape {tuple(shape)}, got {tuple(init_loc.shape)}"
                )
        self.loc = PyroParam(init_loc.to(device).clone())
        self.scale = PyroParam(
            torch.full(shape, float(init_scale), dtype=dtype, device=device),
            constraint=dist.constraints.positive,
        )
        self.logits = PyroParam(
            torch.zeros(batch + (self.num_components,), dtype=dtype, device=device)
        )

    @property
    def weights(self):
        r"""Mixture weights ``softmax(logits)``, shape ``[N,] K``."""
        return torch.softmax(self.logits, -1)

    def distribution(self):
        r"""The mixture ``q(z)``: batch shape ``[N]`` (or ``[]``), event shape ``[latent_dim]``."""
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.Normal(self.loc, self.scale).to_event(1),
        )

    def forward(self, *args, **kwargs):
        r"""Samples the site (the model's arguments are accepted and ignored).

        :param args: the model's positional arguments (ignored).
        :param kwargs: the model's keyword arguments (ignored).
        """
        q = self.distribution()
        if self.num_posteriors is None:
            return pyro.sample(self.site, q)
        with pyro.plate(self.plate, self.num_posteriors, dim=self.plate_dim):
            return pyro.sample(self.site, q)
