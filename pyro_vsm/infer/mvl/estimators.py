r"""Minimum-velocity estimators of the score-matching objective in :math:`\mathbb R^d`.

Wang, Cheng, Li, Zhu and Zhang (2020), Sections 3--3.4 and Appendices A--B. With the model
:math:`q_\theta(x) \propto e^{-E_\theta(x)}`, data :math:`x \sim p` and
:math:`\xi \sim \mathcal N(0, I)`, every estimator takes one step of a sampler from the data
with step size :math:`\epsilon`, measures the decrease of the energy and divides by
:math:`\epsilon`; Hyvärinen's score-matching integrand

.. math::

    J(x) = \tfrac12\lVert\nabla E(x)\rVert^2 - \Delta E(x),
    \qquad \mathbb E_p[J] = D_F(p\,\|\,q_\theta) - \tfrac12\mathbb E_p\lVert\nabla\log p\rVert^2,

is what :func:`langevin_mvl` and :func:`dsm` estimate (exactly what sliced score matching
estimates), with a bias that vanishes as :math:`\epsilon \to 0` and, thanks to the control
variate :math:`\sqrt{2\epsilon}\,\xi\cdot\nabla E(x)` (the inner product of the energy gradient
with the diffusion term of the step), a variance that stays bounded as :math:`\epsilon \to 0`
(without it the variance grows like :math:`1/\epsilon`).

Conventions shared by all estimators:

* ``energy`` maps ``x`` of shape ``[..., d]`` to :math:`E(x)` of shape ``[...]``; ``x`` has
  shape ``[B, d]`` and is detached (the values are functions of the energy's parameters);
* the result has shape ``[B]``, one value per data point, differentiable in the energy's
  parameters: the input gradient :math:`\nabla E` is taken with ``create_graph=True``, so the
  parameter gradient flows through the moved point :math:`x^-` and through the control
  variate (detaching either gives a wrong or a very noisy gradient);
* ``noise`` (a tensor of ``x``'s shape) fixes :math:`\xi` (common random numbers); otherwise it
  is drawn with ``generator`` (default: torch's global generator), one draw per data point;
* the energy is evaluated several times per call inside
  ``torch.nn.utils.parametrize.cached()``, so parametrised layers (spectral normalisation) are
  computed once and every evaluation sees the same function (a power iteration between the
  evaluations would change the energy by far more than the :math:`O(\epsilon)` decrease being
  measured).

In float64 the estimators are accurate down to :math:`\epsilon \approx 10^{-6}` and beyond; in
float32 the difference :math:`E(x) - E(x^-)` loses about :math:`|E|\,u/\epsilon` to rounding
(:math:`u \approx 6\cdot 10^{-8}`), which limits :func:`langevin_mvl`, :func:`cd1`,
:func:`svgd_mvl` and :func:`spos_mvl` to :math:`\epsilon \gtrsim 10^{-4}`; :func:`dsm` is
computed in a form without that cancellation and stays accurate below.

References:

[1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
[2] `Estimation of Non-Normalized Statistical Models by Score Matching`,
    Aapo Hyvärinen (2005)
[3] `Connections Between Score Matching, Contrastive Divergence, and Pseudolikelihood for Continuous-Valued Variables`,
    Aapo Hyvärinen (2007)
[4] `A Connection Between Score Matching and Denoising Autoencoders`,
    Pascal Vincent (2011)
[5] `Stein Variational Gradient Descent: A General Purpose Bayesian Inference Algorithm`,
    Qiang Liu, Dilin Wang (2016)
[6] `A Kernelized Stein Discrepancy for Goodness-of-fit Tests`,
    Qiang Liu, Jason D. Lee, Michael Jordan (2016)
[7] `Stochastic Particle-Optimization Sampling and the Non-Asymptotic Convergence Theory`,
    Jianyi Zhang, Ruiyi Zhang, Lawrence Carin, Changyou Chen (2020)
"""

import math

import torch
from torch.nn.utils import parametrize

from ..._checks import check_positive
from ._checks import check_energy, check_inputs

__all__ = ["cd1", "dsm", "langevin_mvl", "median_bandwidth", "spos_mvl", "svgd_mvl"]


def _draw(x, noise, generator):
    if noise is not None:
        return noise
    return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


def _energy_and_grad(fn, energy, x, create_graph):
    r"""``(E(x), ∇E(x))``, the gradient taken at a leaf copy of the (detached) ``x``."""
    x0 = x.detach().requires_grad_(True)
    e = check_energy(fn, energy(x0), x0)
    if not e.requires_grad:
        raise ValueError(
            f"{fn}: energy(x) is not differentiable in x (the result has no autograd graph)"
        )
    (g,) = torch.autograd.grad(
        e.sum(), x0, create_graph=create_graph, retain_graph=True, allow_unused=True
    )
    if g is None:
        g = torch.zeros_like(x0)
    return e, g


def langevin_mvl(energy, x, step_size, *, control_variate=True, noise=None, generator=None):
    r"""Minimum-velocity estimate of Hyvärinen's :math:`J` by one Langevin step (Section 3.2.1).

    One step of Langevin dynamics targeting :math:`q^{1/2} \propto e^{-E/2}` (the :math:`\tfrac12`
    is on the drift only),

    .. math::

        x^- = x - \frac\epsilon2\nabla E(x) + \sqrt{2\epsilon}\,\xi,
        \qquad
        \hat J_\epsilon(x, \xi) = \frac{E(x) - E(x^-) + \sqrt{2\epsilon}\,\xi\cdot\nabla E(x)}
                                       {\epsilon}.

    By Taylor expansion :math:`\hat J_\epsilon = \tfrac12\lVert\nabla E\rVert^2 -
    \xi^\top\nabla^2E\,\xi + O(\sqrt\epsilon)`, which is the variance-reduced sliced
    score-matching integrand with the Gaussian projection :math:`v = \xi`; so
    :math:`\mathbb E_\xi\hat J_\epsilon \to J(x)` as :math:`\epsilon \to 0`, and with common
    noise :math:`\hat J_\epsilon - \widehat{\mathrm{SSM}}_{v=\xi} = O(\sqrt\epsilon)` pointwise.
    This is the paper's :math:`\hat L_\epsilon / 2`; dividing by :math:`\epsilon` makes the value
    equal :math:`J` and compare directly with sliced score matching. (Eq. 17 of the paper is
    printed with the wrong overall sign.) Without the control variate the value is
    :math:`[E(x) - E(x^-)]/\epsilon`, with the same mean and a variance that grows like
    :math:`1/\epsilon`.

    The parameter gradient flows through :math:`x^-` (the drift's :math:`\nabla E` is kept in
    the graph) and through the control variate. Detaching :math:`x^-` would give the gradient of
    :math:`\tfrac14\lVert\nabla E\rVert^2 - \Delta E`; detaching the control variate leaves the
    :math:`O(\epsilon^{-1/2})` noise term in the gradient.

    Cost: two evaluations of the energy and one input gradient (with ``create_graph``).

    :param energy: callable ``x[..., d] -> E[...]``.
    :param torch.Tensor x: data ``[B, d]``.
    :param float step_size: :math:`\epsilon > 0`.
    :param bool control_variate: add :math:`\sqrt{2\epsilon}\,\xi\cdot\nabla E(x)`.
    :param torch.Tensor noise: :math:`\xi` ``[B, d]`` (common random numbers), or ``None``.
    :param torch.Generator generator: draws :math:`\xi` when ``noise`` is ``None``.
    :returns: :math:`\hat J_\epsilon` per data point, shape ``[B]``.
    """
    fn = "langevin_mvl"
    x, eps, noise = check_inputs(fn, energy, x, step_size, noise, generator)
    with torch.enable_grad(), parametrize.cached():
        e0, g = _energy_and_grad(fn, energy, x, create_graph=True)
        xi = _draw(x, noise, generator)
        scale = math.sqrt(2 * eps)
        e1 = check_energy(fn, energy(x - 0.5 * eps * g + scale * xi), x)
        diff = e0 - e1
        if control_variate:
            diff = diff + scale * (xi * g).sum(-1)
        return diff / eps


def dsm(energy, x, step_size, *, control_variate=True, noise=None, generator=None):
    r"""Variance-reduced denoising score matching (eq. 15), normalised to estimate :math:`J`.

    With :math:`\tilde x = x + \sqrt\epsilon\,\xi` (noise level :math:`\sigma^2 = \epsilon`) and
    the denoiser :math:`\epsilon\nabla E`, the paper's estimator is
    :math:`\hat L_{\mathrm{dsm}} = \lVert\sqrt\epsilon\,\xi - \epsilon\nabla E(\tilde x)\rVert^2`
    and the value returned is

    .. math::

        \frac{\hat L_{\mathrm{dsm}} - \epsilon\lVert\xi\rVert^2
              + 2\epsilon^{3/2}\,\xi\cdot\nabla E(x)}{2\epsilon^2}
        = \tfrac12\lVert\nabla E(\tilde x)\rVert^2
          - \frac{\xi\cdot\big(\nabla E(\tilde x) - \nabla E(x)\big)}{\sqrt\epsilon}

    (computed in the right-hand form, which has no cancellation), :math:`=
    \tfrac12\lVert\nabla E\rVert^2 - \xi^\top\nabla^2E\,\xi + O(\sqrt\epsilon)`, so its mean
    tends to :math:`J` (Appendix A). ``control_variate=False`` subtracts only the
    :math:`\theta`-free :math:`\epsilon\lVert\xi\rVert^2` (the value is then
    :math:`\tfrac12\lVert\nabla E(\tilde x)\rVert^2 - \xi\cdot\nabla E(\tilde x)/\sqrt\epsilon`,
    whose parameter gradient is exactly plain DSM's, :math:`\nabla_\theta\hat
    L_{\mathrm{dsm}}/(2\epsilon^2)`); its variance grows like :math:`1/\epsilon`. The control
    variate :math:`2\epsilon^{3/2}\xi\cdot\nabla E(x)` needs the gradient at the clean
    :math:`x`.

    Cost: one energy evaluation and input gradient at :math:`\tilde x` (and at :math:`x`, in the
    same batched call, with the control variate), with ``create_graph``.

    :param energy: callable ``x[..., d] -> E[...]``.
    :param torch.Tensor x: data ``[B, d]``.
    :param float step_size: :math:`\epsilon = \sigma^2 > 0`.
    :param bool control_variate: add :math:`2\epsilon^{3/2}\,\xi\cdot\nabla E(x)/(2\epsilon^2)`.
    :param torch.Tensor noise: :math:`\xi` ``[B, d]`` (common random numbers), or ``None``.
    :param torch.Generator generator: draws :math:`\xi` when ``noise`` is ``None``.
    :returns: the normalised DSM value per data point, shape ``[B]``.
    """
    fn = "dsm"
    x, eps, noise = check_inputs(fn, energy, x, step_size, noise, generator)
    xi = _draw(x, noise, generator)
    root = math.sqrt(eps)
    noisy = x + root * xi
    with torch.enable_grad(), parametrize.cached():
        if control_variate:
            _, g = _energy_and_grad(fn, energy, torch.cat([noisy, x]), create_graph=True)
            g_noisy, g_clean = g.chunk(2)
            shift = g_noisy - g_clean
        else:
            _, g_noisy = _energy_and_grad(fn, energy, noisy, create_graph=True)
            shift = g_noisy
        return 0.5 * g_noisy.pow(2).sum(-1) - (xi * shift).sum(-1) / root


def cd1(energy, x, step_size, *, control_variate=True, noise=None, generator=None):
    r"""The (variance-reduced) CD-1 surrogate of Section 3.3: its gradient estimates
    :math:`\nabla_\theta J`; **its value does not estimate** :math:`J`.

    One Langevin step targeting :math:`q` itself (full drift), detached from the graph (CD-1
    does not differentiate through the sampler):

    .. math::

        x^- = \operatorname{stopgrad}\big(x - \epsilon\nabla E(x) + \sqrt{2\epsilon}\,\xi\big),
        \qquad
        s_\epsilon(x, \xi) = \frac{E(x) - E(x^-) + \sqrt{2\epsilon}\,\xi\cdot\nabla E(x)}
                                  {\epsilon}.

    Its parameter gradient is :math:`\tfrac12\nabla_\theta\lVert\nabla E\rVert^2 -
    \xi^\top\nabla_\theta\nabla^2E\,\xi + O(\sqrt\epsilon)`, whose mean tends to
    :math:`\nabla_\theta J(x)` (Hyvärinen 2007, rescaled by :math:`1/\epsilon`); the control
    variate (differentiable in :math:`\theta`) cancels the :math:`O(\epsilon^{-1/2})` noise term
    of the gradient (VR-CD-1). Without it (``control_variate=False``, classic CD-1 with Langevin
    dynamics) the value is :math:`[E(x) - E(x^-)]/\epsilon` and the gradient's variance grows like
    :math:`1/\epsilon`. The *value* tends to :math:`\lVert\nabla E\rVert^2 - \xi^\top\nabla^2E\,
    \xi`, whose mean is :math:`J + \tfrac12\lVert\nabla E\rVert^2`, not :math:`J`: use it only
    through its gradient and monitor training with another estimator (e.g.
    :func:`langevin_mvl` or sliced score matching).

    Cost: two energy evaluations and one input gradient (with ``create_graph`` only for the
    control variate).

    :param energy: callable ``x[..., d] -> E[...]``.
    :param torch.Tensor x: data ``[B, d]``.
    :param float step_size: :math:`\epsilon > 0`.
    :param bool control_variate: add :math:`\sqrt{2\epsilon}\,\xi\cdot\nabla E(x)` (VR-CD-1).
    :param torch.Tensor noise: :math:`\xi` ``[B, d]`` (common random numbers), or ``None``.
    :param torch.Generator generator: draws :math:`\xi` when ``noise`` is ``None``.
    :returns: the surrogate per data point, shape ``[B]`` (differentiate it; do not report it).
    """
    fn = "cd1"
    x, eps, noise = check_inputs(fn, energy, x, step_size, noise, generator)
    with torch.enable_grad(), parametrize.cached():
        e0, g = _energy_and_grad(fn, energy, x, create_graph=control_variate)
        xi = _draw(x, noise, generator)
        scale = math.sqrt(2 * eps)
        x_minus = (x - eps * g + scale * xi).detach()
        diff = e0 - check_energy(fn, energy(x_minus), x)
        if control_variate:
            diff = diff + scale * (xi * g).sum(-1)
        return diff / eps


# ----------------------------------------------------------------------------------------------
# SVGD and SPOS (Appendix B)
# ----------------------------------------------------------------------------------------------
def median_bandwidth(x):
    r"""The median-heuristic bandwidth of SVGD, :math:`h = \operatorname{med}_{i,j}\lVert x_i -
    x_j\rVert^2 / (2\log(B + 1))` for the kernel :math:`k(x, y) = \exp(-\lVert x - y\rVert^2 /
    (2h))` (Liu and Wang 2016; the median runs over all :math:`B^2` pairs, the diagonal included,
    and :math:`h` is floored at :math:`10^{-5}`). A 0-d tensor, detached.

    :param torch.Tensor x: points ``[B, d]``.
    """
    x = x.detach()
    sq = torch.cdist(x, x).pow(2)
    h = sq.flatten().median() / (2 * math.log(x.shape[0] + 1))
    return h.clamp_min(1e-5)


def _rbf(bandwidth):
    def kernel(a, b):
        return torch.exp(-(a - b).pow(2).sum(-1) / (2 * bandwidth))

    return kernel


def _svgd_direction(fn, x, g, kernel):
    r""":math:`\phi^*(x_i) = \frac1B\sum_j[-\frac12 k(x_j, x_i)\nabla E(x_j) + \nabla_{x_j}
    k(x_j, x_i)]`, the SVGD direction towards :math:`q^{1/2}`; the kernel's gradients by one
    backward pass over the :math:`B^2` pairs."""
    B = x.shape[0]
    if kernel is None:
        kernel = _rbf(median_bandwidth(x))
    elif not callable(kernel):
        raise ValueError(f"{fn}: kernel must be None or a callable k(x, y), got {kernel!r}")
    with torch.enable_grad():
        first = x.detach()[:, None, :].expand(B, B, x.shape[-1]).clone().requires_grad_(True)
        k = kernel(first, x.detach()[None, :, :])  # k[j, i] = k(x_j, x_i)
        if not torch.is_tensor(k) or k.shape != (B, B):
            got = tuple(k.shape) if torch.is_tensor(k) else type(k).__name__
            raise ValueError(
                f"{fn}: kernel(x[:, None], x[None]) must have shape ({B}, {B}), got {got}"
            )
        (dk,) = torch.autograd.grad(k.sum(), first, allow_unused=True)
    repulsion = torch.zeros_like(x) if dk is None else dk.sum(0)
    return (-0.5 * k.detach().T @ g + repulsion) / B


def svgd_mvl(energy, x, step_size, kernel=None):
    r"""Minimum-velocity objective of one SVGD step: kernelized Stein discrepancy (Appendix B).

    The batch is the particle system. One SVGD step targeting :math:`q^{1/2}` moves every point
    by :math:`\epsilon\,\phi^*`,

    .. math::

        \phi^*(x_i) = \frac1B\sum_{j=1}^B\Big[-\tfrac12 k(x_j, x_i)\nabla E(x_j)
                      + \nabla_{x_j}k(x_j, x_i)\Big],
        \qquad
        \hat S_\epsilon(x_i) = \frac{E(x_i) - E(x_i + \epsilon\,\phi^*(x_i))}{\epsilon},

    (no noise, no control variate). As :math:`\epsilon \to 0`, :math:`\hat S_\epsilon(x_i) \to
    -\nabla E(x_i)\cdot\phi^*(x_i)` and, for a symmetric kernel, the batch mean tends to

    .. math::

        \frac1B\sum_i \hat S_\epsilon(x_i) \to
        \tfrac12\,\mathrm{KSD}^2_V(p, q) - \frac1{2B^2}\sum_{i,j}
            \operatorname{tr}\nabla_x\nabla_y k(x, y)\big|_{x = x_i, y = x_j},

    where :math:`\mathrm{KSD}^2_V = \frac1{B^2}\sum_{i,j}u_q(x_i, x_j)` is the V-statistic of the
    kernelized Stein discrepancy with the Stein kernel :math:`u_q(x, y) = s(x)^\top s(y)k(x, y) +
    s(x)^\top\nabla_y k + \nabla_x k^\top s(y) + \operatorname{tr}\nabla_x\nabla_y k`,
    :math:`s = -\nabla E`; the subtracted term depends on the data only. The value is
    differentiable through :math:`\phi^*` (the gradients :math:`\nabla E(x_j)` are kept in the
    graph); the kernel is evaluated at the detached data. The values of different points are
    not independent (every point moves under all the others).

    :param energy: callable ``x[..., d] -> E[...]``.
    :param torch.Tensor x: data ``[B, d]``, the particles.
    :param float step_size: :math:`\epsilon > 0`.
    :param kernel: ``None`` for the RBF kernel :math:`\exp(-\lVert x - y\rVert^2/(2h))` with the
        median-heuristic bandwidth (:func:`median_bandwidth`), or a callable ``k(x, y)`` that
        broadcasts over leading dims (``[..., d], [..., d] -> [...]``) and is differentiable in
        its first argument.
    :returns: :math:`\hat S_\epsilon` per data point, shape ``[B]``.
    """
    fn = "svgd_mvl"
    x, eps, _ = check_inputs(fn, energy, x, step_size)
    with torch.enable_grad(), parametrize.cached():
        e0, g = _energy_and_grad(fn, energy, x, create_graph=True)
        phi = _svgd_direction(fn, x, g, kernel)
        return (e0 - check_energy(fn, energy(x + eps * phi), x)) / eps


def spos_mvl(
    energy, x, step_size, alpha, kernel=None, *, control_variate=True, noise=None, generator=None
):
    r"""Minimum-velocity objective of one SPOS step: :math:`\alpha\,J` plus the SVGD part
    (Appendix B.2).

    Stochastic particle optimisation (SPOS) in the paper's convention is an SVGD step plus
    :math:`\alpha` times a Langevin step, both targeting :math:`q^{1/2}`:

    .. math::

        x_i^- = x_i + \epsilon\,\phi^*(x_i) - \frac{\alpha\epsilon}2\nabla E(x_i)
                + \sqrt{2\alpha\epsilon}\,\xi_i,
        \qquad
        \hat P_\epsilon(x_i) = \frac{E(x_i) - E(x_i^-)
                               + \sqrt{2\alpha\epsilon}\,\xi_i\cdot\nabla E(x_i)}{\epsilon},

    with :math:`\phi^*` the SVGD direction of :func:`svgd_mvl`. As :math:`\epsilon \to 0`,
    :math:`\hat P_\epsilon(x_i) = -\nabla E(x_i)\cdot\phi^*(x_i) + \alpha\big(\tfrac12\lVert\nabla
    E(x_i)\rVert^2 - \xi_i^\top\nabla^2E(x_i)\,\xi_i\big) + O(\sqrt\epsilon)`: the limit of
    :func:`svgd_mvl` plus :math:`\alpha` times that of :func:`langevin_mvl`, so the batch mean
    tends to :math:`\alpha\,\bar J + \tfrac12\mathrm{KSD}^2_V - (\text{data-only term})` (the
    squared norm of the KL gradient in the SPOS metric, Fisher divergence weighted by
    :math:`\alpha` plus KSD). (The reference code mixes :math:`(1-\alpha)` Langevin with
    :math:`\alpha` SVGD and scales the noise by :math:`1-\alpha`; that is not reproduced.)

    :param energy: callable ``x[..., d] -> E[...]``.
    :param torch.Tensor x: data ``[B, d]``, the particles.
    :param float step_size: :math:`\epsilon > 0`.
    :param float alpha: :math:`\alpha \ge 0`, the weight of the Langevin part (0 gives
        :func:`svgd_mvl`).
    :param kernel: as in :func:`svgd_mvl`.
    :param bool control_variate: add :math:`\sqrt{2\alpha\epsilon}\,\xi\cdot\nabla E(x)`.
    :param torch.Tensor noise: :math:`\xi` ``[B, d]`` (common random numbers), or ``None``.
    :param torch.Generator generator: draws :math:`\xi` when ``noise`` is ``None``.
    :returns: :math:`\hat P_\epsilon` per data point, shape ``[B]``.
    """
    fn = "spos_mvl"
    x, eps, noise = check_inputs(fn, energy, x, step_size, noise, generator)
    alpha = check_positive(alpha, f"{fn}: alpha", allow_zero=True)
    with torch.enable_grad(), parametrize.cached():
        e0, g = _energy_and_grad(fn, energy, x, create_graph=True)
        phi = _svgd_direction(fn, x, g, kernel)
        xi = _draw(x, noise, generator)
        scale = math.sqrt(2 * alpha * eps)
        e1 = check_energy(fn, energy(x + eps * phi - 0.5 * alpha * eps * g + scale * xi), x)
        diff = e0 - e1
        if control_variate:
            diff = diff + scale * (xi * g).sum(-1)
        return diff / eps
