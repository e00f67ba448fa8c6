r"""A linear-Gaussian VAE whose marginal, posterior, Fisher divergences and score-matching
objectives are exact (:class:`LinearGaussian`)."""

import pyro
import pyro.distributions as dist
import torch

__all__ = ["LinearGaussian"]


class LinearGaussian:
    r"""A linear-Gaussian VAE with every quantity in closed form: the ground truth of tests and
    benchmarks of the estimators.

    .. math::

        p(z) = \mathcal N(0, I), \qquad p(x|z) = \mathcal N(Wz + b, \gamma I), \qquad
        q(z|x) = \mathcal N(Ax + c, \operatorname{diag} s^2),

    with random ``W, b, A, c, s`` drawn from ``seed`` and :math:`\gamma = 0.4`. The marginal
    :math:`p(x) = \mathcal N(b, WW^\top + \gamma I)` and the posterior are Gaussian, so
    :meth:`log_marginal`, :meth:`posterior`, :meth:`posterior_fisher`, :meth:`m1`, :meth:`m2`,
    :meth:`m3`, :meth:`score_matching_loss` and :meth:`reconstruction_mse` are exact.

    :param int dx: data dimension.
    :param int dz: latent dimension.
    :param int seed: seed of the random parameters.
    :param bool learnable: make decoder (``W, b, log γ``) and encoder (``A, c, log s``) Pyro params
        named ``dec_*`` and ``enc_*``.
    :param torch.dtype dtype: the parameters' dtype.
    :param torch.device device: the parameters' device (default: torch's default device).

    :meth:`m1`, :meth:`m2` and :meth:`m3` are eqs. 8, 13 and 15 of [1].

    References:

    [1] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)
    """

    def __init__(self, dx=3, dz=2, seed=0, learnable=False, dtype=torch.float64, device=None):
        device = torch.get_default_device() if device is None else device
        g = torch.Generator().manual_seed(seed)
        kw = dict(dtype=dtype, device="cpu")
        self.W = (torch.randn(dx, dz, generator=g, **kw) * 0.8).to(device)
        self.b = (torch.randn(dx, generator=g, **kw) * 0.3).to(device)
        self.gamma = torch.tensor(0.4, dtype=dtype).to(device)
        self.A = (torch.randn(dz, dx, generator=g, **kw) * 0.4).to(device)
        self.c = (torch.randn(dz, generator=g, **kw) * 0.1).to(device)
        self.s = (0.3 + torch.rand(dz, generator=g, **kw)).to(device)
        self.dx, self.dz, self.learnable = dx, dz, learnable

    def decoder_params(self):
        r"""``(W, b, γ)``, as Pyro params when ``learnable``."""
        if not self.learnable:
            return self.W, self.b, self.gamma
        return (
            pyro.param("dec_W", self.W.clone()),
            pyro.param("dec_b", self.b.clone()),
            pyro.param("dec_log_gamma", self.gamma.log()).exp(),
        )

    def encoder_params(self):
        r"""``(A, c, s)``, as Pyro params when ``learnable``."""
        if not self.learnable:
            return self.A, self.c, self.s
        return (
            pyro.param("enc_A", self.A.clone()),
            pyro.param("enc_c", self.c.clone()),
            pyro.param("enc_log_s", self.s.log()).exp(),
        )

    def params(self):
        r"""``decoder_params() + encoder_params()``."""
        return self.decoder_params() + self.encoder_params()

    def model(self, x):
        r"""The Pyro model: :math:`z \sim \mathcal N(0, I)`,
        :math:`x|z \sim \mathcal N(Wz + b, \gamma I)`, sites ``"z"`` and ``"x"`` in plate
        ``"data"``.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        W, b, gamma = self.decoder_params()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(
                "z", dist.Normal(torch.zeros_like(b[: self.dz]), 1.0).expand([self.dz]).to_event(1)
            )
            pyro.sample("x", dist.Normal(z @ W.T + b, gamma.sqrt()).to_event(1), obs=x)

    def guide(self, x):
        r"""The Pyro guide :math:`q(z|x) = \mathcal N(Ax + c, \operatorname{diag} s^2)`.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        A, c, s = self.encoder_params()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ A.T + c, s).to_event(1))

    def exact_guide(self, x):
        r"""The exact posterior :math:`p(z|x)` as a guide.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        mu, P = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mu, precision_matrix=P))

    def sample_data(self, n, seed=1):
        r"""``n`` draws from the marginal :math:`p(x)`, shape ``(n, dx)``.

        :param int n: number of points.
        :param int seed: the same seed gives the same points.
        """
        g = torch.Generator().manual_seed(seed)
        kw = dict(generator=g, dtype=self.W.dtype, device="cpu")
        z = torch.randn(n, self.dz, **kw).to(self.W.device)
        eps = torch.randn(n, self.dx, **kw).to(self.W.device)
        return z @ self.W.T + self.b + self.gamma.sqrt() * eps

    # ---- closed forms, per data point (shape [N]) ----
    def m1(self, x):
        r"""M1 (eq. 8) of the guide, including the guide-only term, shape ``[N]``.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        W, b, gamma, A, c, s = self.W, self.b, self.gamma, self.A, self.c, self.s
        m = x @ A.T + c
        S = torch.diag(s**2)
        resid = ((x - m @ W.T - b) ** 2).sum(-1)
        tr = torch.trace(W @ S @ W.T)
        guide_term = 0.5 * torch.trace(A.T @ torch.diag(s**-2) @ A)
        return (resid + tr) / (2 * gamma**2) - self.dx / gamma + guide_term

    def m2(self, x):
        r"""Eq. 13 with the guide N(Ax + c, diag s²): (½‖r‖² + tr WSWᵀ)/γ² − d/γ, r = x − Wm − b.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        m = x @ self.A.T + self.c
        r2 = ((x - m @ self.W.T - self.b) ** 2).sum(-1)
        tr = torch.trace(self.W @ torch.diag(self.s**2) @ self.W.T)
        return (0.5 * r2 + tr) / self.gamma**2 - self.dx / self.gamma

    def m3(self, x):
        r"""Eq. 15 with the guide N(Ax + c, diag s²): tr(AW)/γ − d/γ + ½‖r‖²/γ².

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        m = x @ self.A.T + self.c
        r2 = ((x - m @ self.W.T - self.b) ** 2).sum(-1)
        return (
            torch.trace(self.A @ self.W) / self.gamma
            - self.dx / self.gamma
            + 0.5 * r2 / self.gamma**2
        )

    def posterior(self, x):
        r"""The exact posterior :math:`p(z|x) = \mathcal N(\mu, P^{-1})` as ``(mu, P)``:
        means ``(N, dz)`` and the precision ``(dz, dz)``.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        W, b, gamma = self.W, self.b, self.gamma
        P = torch.eye(self.dz, dtype=W.dtype, device=W.device) + W.T @ W / gamma
        mu = torch.linalg.solve(P, ((x - b) @ W).T / gamma).T
        return mu, P

    def posterior_fisher(self, x):
        r"""The guide's posterior Fisher divergence
        :math:`\tfrac12\mathbb E_q\lVert\nabla_z\log q(z|x) - \nabla_z\log p(z|x)\rVert^2`,
        shape ``[N]``.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        mu, P = self.posterior(x)
        m = x @ self.A.T + self.c
        mean_term = (((m - mu) @ P.T) ** 2).sum(-1)
        half = torch.diag(self.s)
        cov_term = ((P @ half - torch.diag(1 / self.s)) ** 2).sum()
        return 0.5 * (mean_term + cov_term)

    def marginal_cov(self):
        r"""The covariance :math:`WW^\top + \gamma I` of the marginal :math:`p(x)`."""
        eye = torch.eye(self.dx, dtype=self.W.dtype, device=self.W.device)
        return self.W @ self.W.T + self.gamma * eye

    def log_marginal(self, x):
        r""":math:`\log p(x)`, shape ``[N]``.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        return dist.MultivariateNormal(self.b, self.marginal_cov()).log_prob(x)

    def score_matching_loss(self, x):
        r"""Hyvärinen's J(x) = ½‖∇ log p(x)‖² + Δ log p(x) of the marginal N(b, WWᵀ + γI).

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        prec = torch.linalg.inv(self.marginal_cov())
        score = -(x - self.b) @ prec
        return 0.5 * (score**2).sum(-1) - torch.trace(prec)

    def reconstruction_mse(self, x):
        r"""Mean squared error of the decoder mean at the guide mean, per data point, ``[N]``.

        :param torch.Tensor x: data, shape ``(N, dx)``.
        """
        m = x @ self.A.T + self.c
        return ((x - m @ self.W.T - self.b) ** 2).mean(-1)
