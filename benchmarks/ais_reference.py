"""Reference AIS implementations on linear-Gaussian VAEs, for the benchmarks.

For ``p(z) = N(0, I)``, ``p(x|z) = N(Wz + b, γI)`` every intermediate distribution of AIS from
the prior, ``p(z) p(x|z)^β``, is Gaussian with precision ``I + β WᵀW/γ``. That gives:

* :func:`perfect_ais`: AIS whose transitions draw exactly from each intermediate distribution
  (what any MCMC kernel can at best achieve on a given schedule);
* :func:`oracle_schedule`: the schedule of equal thermodynamic length computed from the exact
  ``Var_β[log p(x|z)]`` (what the adaptive schedule estimates from its pilot chains);
* :func:`plain_hmc_ais`: the library's HMC-AIS algorithm written by hand in plain torch on this
  model (same chains, schedule, leapfrog steps, transitions per temperature, momentum
  persistence and step-size adaptation), the reference of the throughput benchmark.
"""

import math

import torch

from pyro_vsm.datasets import LinearGaussian
from pyro_vsm.samplers import thermodynamic_schedule


def make_problem(seed, dx=6, dz=3, gamma=0.2, points=20, device="cpu"):
    """A random linear-Gaussian VAE (noise variance ``gamma``), its data and exact log p(x)."""
    lg = LinearGaussian(dx=dx, dz=dz, seed=seed, device=device)
    lg.gamma = torch.as_tensor(gamma, dtype=lg.W.dtype, device=lg.W.device)
    x = lg.sample_data(points)
    return lg, x, lg.log_marginal(x)


def _log_lik(lg, x, z):
    r = x - z @ lg.W.T - lg.b
    return -0.5 * (r * r).sum(-1) / lg.gamma - 0.5 * x.shape[-1] * torch.log(2 * math.pi * lg.gamma)


def bridge(lg, x, betas):
    """Mean ``[..., N, dz]`` and covariance ``[..., N, dz, dz]`` of ``p(z) p(x|z)^β``, where
    ``betas`` has shape ``[..., N]``."""
    W = lg.W
    eye = torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
    cov = torch.linalg.inv(eye + betas[..., None, None] * (W.T @ W) / lg.gamma)
    mean = (cov @ (betas[..., None] * ((x - lg.b) @ W / lg.gamma))[..., None])[..., 0]
    return mean, cov


def perfect_ais(lg, x, betas, num_chains, generator=None):
    """AIS from the prior with exact transitions; ``betas`` is ``[T+1]`` or ``[T+1, N]``."""
    if betas.dim() == 1:
        betas = betas[:, None].expand(-1, x.shape[0])
    mean, cov = bridge(lg, x, betas[:-1])  # z_{t-1} ~ p_{t-1}, t = 1..T
    chol = torch.linalg.cholesky(cov)
    shape = (betas.shape[0] - 1, num_chains) + tuple(mean.shape[1:])
    eps = torch.randn(shape, dtype=x.dtype, device=x.device, generator=generator)
    z = mean[:, None] + (chol[:, None] @ eps[..., None])[..., 0]
    log_w = ((betas[1:] - betas[:-1])[:, None, :] * _log_lik(lg, x, z)).sum(0)
    return torch.logsumexp(log_w, 0) - math.log(num_chains)


def log_lik_variance(lg, x, betas):
    """Exact ``Var[log p(x|z)]`` under ``p(z) p(x|z)^β`` (``betas`` ``[..., N]``)."""
    mean, cov = bridge(lg, x, betas)
    a = ((x - lg.b) - mean @ lg.W.T) @ lg.W / lg.gamma
    A = lg.W.T @ lg.W / lg.gamma
    AS = A @ cov
    linear = (a[..., None, :] @ cov @ a[..., None])[..., 0, 0]
    return linear + 0.5 * (AS @ AS).diagonal(dim1=-2, dim2=-1).sum(-1)


def oracle_schedule(lg, x, num_temperatures, grid_size=20001):
    """``[T+1, N]`` inverse temperatures of equal thermodynamic length, from the exact variance."""
    grid = torch.linspace(0, 1, grid_size, dtype=x.dtype, device=x.device) ** 2
    var = log_lik_variance(lg, x, grid[:, None].expand(-1, x.shape[0]))
    return thermodynamic_schedule(grid, var, num_temperatures)


def plain_hmc_ais(
    lg,
    x,
    betas,
    num_chains,
    num_leapfrog=1,
    steps_per_temperature=10,
    persistence=0.8,
    jitter=0.0,
    step_size=0.1,
    target_accept=0.65,
    adapt_rate=0.05,
):
    """HMC-AIS from the prior, written by hand: the library's algorithm on this model."""
    W, b, gamma = lg.W, lg.b, lg.gamma
    n, dz = x.shape[0], W.shape[1]
    kw = dict(dtype=x.dtype, device=x.device)
    const_x = -0.5 * x.shape[1] * torch.log(2 * math.pi * gamma)
    const_z = -0.5 * dz * math.log(2 * math.pi)
    refresh = math.sqrt(1 - persistence**2)

    def parts(z):
        r = x - z @ W.T - b
        return -0.5 * (z * z).sum(-1) + const_z, -0.5 * (r * r).sum(-1) / gamma + const_x

    def potential(z, beta):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_prior, log_lik = parts(z)
            u = -(log_prior + beta * log_lik)
            (g,) = torch.autograd.grad(u.sum(), z)
        return u.detach(), g, log_lik.detach()

    z = torch.randn(num_chains, n, dz, **kw)
    p = torch.randn(num_chains, n, dz, **kw)
    log_lik = parts(z)[1]
    log_w = torch.zeros(num_chains, n, **kw)
    log_eps = torch.full((n,), math.log(step_size), **kw)
    num_steps = betas.shape[0] - 1
    for t in range(1, num_steps + 1):
        log_w = log_w + (betas[t] - betas[t - 1]) * log_lik
        if t == num_steps:
            break
        beta = betas[t]
        u, g, log_lik = potential(z, beta)
        for _ in range(steps_per_temperature):
            p0 = (
                persistence * p + refresh * torch.randn_like(p)
                if persistence
                else torch.randn_like(p)
            )
            eps = log_eps.exp().expand(num_chains, n)
            if jitter:
                eps = eps * (1 + jitter * (2 * torch.rand_like(eps) - 1))
            eps = eps[..., None]
            pn = p0 - 0.5 * eps * g
            zn = z
            for i in range(num_leapfrog):
                zn = zn + eps * pn
                un, gn, lln = potential(zn, beta)
                if i < num_leapfrog - 1:
                    pn = pn - eps * gn
            pn = pn - 0.5 * eps * gn
            log_ratio = u - un + 0.5 * ((p0 * p0).sum(-1) - (pn * pn).sum(-1))
            accept_prob = log_ratio.nan_to_num(nan=-math.inf).clamp(max=0).exp()
            accepted = torch.rand_like(accept_prob) < accept_prob
            m = accepted[..., None]
            z, p, g = torch.where(m, zn, z), torch.where(m, pn, -p0), torch.where(m, gn, g)
            u, log_lik = torch.where(accepted, un, u), torch.where(accepted, lln, log_lik)
            log_eps = log_eps + adapt_rate * (accept_prob.mean(0) - target_accept)
    return torch.logsumexp(log_w, 0) - math.log(num_chains)
