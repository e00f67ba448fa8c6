r"""KL divergence from samples by the density-ratio trick (Rosca et al., 2018, Algorithm 3).

A classifier :math:`C_\omega(z) = \sigma(\ell_\omega(z))` is trained to tell samples of
:math:`p` (label 1, "real") from samples of :math:`q` (label 0, "fake") with balanced minibatches.
At the optimum of the logistic loss its logit is the log density ratio,

.. math::

    \ell^\star(z) = \log\frac{p(z)}{q(z)}, \qquad
    \mathrm{KL}[q\,\|\,p] = \mathbb{E}_{q}\big[\log q(z) - \log p(z)\big]
        \approx \frac1{n}\sum_{i=1}^{n} -\ell_\omega(z_i), \quad z_i \sim q \text{ held out}.

This is the labelling of the library's code discriminators (prior samples real, posterior samples
fake; a logit estimates :math:`\log` real/fake). Algorithm 3 of the paper labels :math:`q` as 1
instead and averages :math:`+\ell`; that is the same estimator with the logit's sign flipped.

The estimate is only as good as the classifier: a classifier that is not optimal, or one whose
probabilities are miscalibrated, gives a biased value (the paper's Tables 1 and 2: estimates that
depend on the architecture, fall below the Monte Carlo value, and explode with noise on the
activations). The diagnostics report what can be checked without knowing :math:`p/q`: held-out
accuracy and loss (:math:`\log 2` is chance), and the two normalisation identities
:math:`\mathbb{E}_p[q/p] = \mathbb{E}_q[p/q] = 1` that an exact ratio satisfies.

References:

[1] `Distribution Matching in Variational Inference`,
    Mihaela Rosca, Balaji Lakshminarayanan, Shakir Mohamed (2018)

[2] `Improved Training of Wasserstein GANs`,
    Ishaan Gulrajani, Faruk Ahmed, Martin Arjovsky, Vincent Dumoulin, Aaron Courville (2017)
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.functional import leaky_relu, softplus

from ._samples import (
    as_samples,
    check_float,
    check_int,
    make_generator,
    rand_like,
    randint,
    seeded_init,
    split,
)

__all__ = ["DensityRatioDiagnostics", "density_ratio_kl"]

#: Rows per chunk when the trained classifier is evaluated on the held-out samples.
_EVAL_CHUNK = 2**16


@dataclass
class DensityRatioDiagnostics:
    r"""Diagnostics of :func:`density_ratio_kl` (scalars as Python floats, held-out values).

    :ivar stderr: standard error of the estimate over the held-out :math:`q` samples (the Monte
        Carlo error only; the classifier's bias is not in it).
    :ivar accuracy: balanced held-out accuracy of the classifier (0.5: it cannot tell them apart).
    :ivar heldout_loss: balanced held-out logistic loss, :math:`\tfrac12(\mathbb{E}_q
        \operatorname{softplus}(\ell) + \mathbb{E}_p\operatorname{softplus}(-\ell))`;
        :math:`\log 2` at chance, below it for a useful classifier.
    :ivar train_loss: the same loss on the training minibatches, averaged over the last tenth of
        the steps (a much lower value than ``heldout_loss`` means overfitting).
    :ivar reverse_kl: :math:`\mathbb{E}_p[\ell]`, the same classifier's estimate of
        :math:`\mathrm{KL}[p\|q]`.
    :ivar mean_ratio_p: :math:`\mathbb{E}_p[e^{-\ell}]`, estimates :math:`\mathbb{E}_p[q/p] = 1`.
    :ivar mean_ratio_q: :math:`\mathbb{E}_q[e^{\ell}]`, estimates :math:`\mathbb{E}_q[p/q] = 1`.
        Values far from 1 flag a miscalibrated (typically overconfident) classifier.
    :ivar logits_q: held-out logits :math:`\ell` at the :math:`q` samples, shape ``[n_q]``.
    :ivar logits_p: held-out logits at the :math:`p` samples, shape ``[n_p]``.
    :ivar losses: training loss of every step, shape ``[steps]``.
    :ivar classifier: the trained module, raw samples ``(n, d)`` to logits ``(n,)``.
    :ivar num_train: training samples ``(from q, from p)``.
    :ivar num_heldout: held-out samples ``(from q, from p)``.
    """

    stderr: float
    accuracy: float
    heldout_loss: float
    train_loss: float
    reverse_kl: float
    mean_ratio_p: float
    mean_ratio_q: float
    logits_q: torch.Tensor
    logits_p: torch.Tensor
    losses: torch.Tensor
    classifier: nn.Module
    num_train: tuple
    num_heldout: tuple


class RatioClassifier(nn.Module):
    r"""An MLP logit :math:`\ell(z)` with leaky ReLUs (slope 0.2, as the paper's code
    discriminators), optional input standardisation and, in training only, Gaussian noise on
    the hidden activations and dropout."""

    def __init__(self, in_dim, hidden, loc, scale, activation_noise=0.0, dropout=0.0):
        super().__init__()
        dims = [in_dim, *hidden]
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.out = nn.Linear(dims[-1], 1)
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.activation_noise = activation_noise
        self.dropout = dropout

    def forward(self, z, generator=None, train=False):
        h = (z - self.loc) / self.scale
        for layer in self.hidden:
            h = leaky_relu(layer(h), 0.2)
            if train and self.activation_noise > 0:
                h = h + self.activation_noise * rand_like(h.shape, generator, h, normal=True)
            if train and self.dropout > 0:
                keep = rand_like(h.shape, generator, h) >= self.dropout
                h = h * keep / (1.0 - self.dropout)
        return self.out(h).squeeze(-1)


def _hidden_sizes(hidden, num_layers):
    if isinstance(hidden, Sequence) and not isinstance(hidden, str):
        if num_layers is not None:
            raise ValueError("num_layers must be None when hidden is a sequence of layer widths")
        sizes = [check_int(h, "hidden") for h in hidden]
        if not sizes:
            raise ValueError("hidden must name at least one hidden layer")
        return sizes
    width = check_int(hidden, "hidden")
    return [width] * check_int(3 if num_layers is None else num_layers, "num_layers")


def _gradient_penalty(net, zq, zp, generator):
    r""":math:`\mathbb{E}_{\hat z}[(\lVert\nabla\ell(\hat z)\rVert - 1)^2]` at random points
    :math:`\hat z = u z_q + (1 - u) z_p` between paired samples (Gulrajani et al., 2017)."""
    u = rand_like((zq.shape[0], 1), generator, zq)
    mix = (u * zq + (1 - u) * zp).requires_grad_(True)
    (grad,) = torch.autograd.grad(net(mix).sum(), mix, create_graph=True)
    return (grad.pow(2).sum(-1).add(1e-12).sqrt() - 1).pow(2).mean()


def _logits(net, z):
    return torch.cat([net(chunk) for chunk in z.split(_EVAL_CHUNK)])


def density_ratio_kl(
    q_samples,
    p_samples,
    *,
    hidden=256,
    num_layers=None,
    steps=2000,
    batch_size=256,
    lr=1e-3,
    betas=(0.9, 0.999),
    gradient_penalty=0.0,
    activation_noise=0.0,
    dropout=0.0,
    holdout=0.2,
    standardize=True,
    seed=None,
    generator=None,
    return_diagnostics=False,
):
    r"""Estimate of :math:`\mathrm{KL}[q\|p]` from samples of both by a trained classifier.

    The samples of each distribution are split at random into a training part and a held-out
    part (a fraction ``holdout``). A classifier with logit :math:`\ell` is trained for ``steps``
    Adam steps on the balanced logistic loss

    .. math::

        \tfrac12\,\mathbb{E}_{q}\big[-\log(1 - \sigma(\ell(z)))\big]
        + \tfrac12\,\mathbb{E}_{p}\big[-\log\sigma(\ell(z))\big]
        = \tfrac12\,\mathbb{E}_{q}\operatorname{softplus}(\ell)
        + \tfrac12\,\mathbb{E}_{p}\operatorname{softplus}(-\ell)
        \ \big(+\,\lambda\,\mathbb{E}(\lVert\nabla\ell\rVert - 1)^2\big),

    each minibatch holding ``batch_size`` samples of each (so the class prior is 1/2 whatever the
    sample sizes and the optimal logit is :math:`\log p/q`). The estimate is the held-out mean of
    :math:`-\ell` over the :math:`q` samples (Rosca et al., 2018, Algorithm 3, with the labels of
    the library's code discriminators: :math:`p` real).

    Use it on a VAE's aggregate posterior with
    :func:`~pyro_vsm.evaluation.aggregate_posterior_samples`, next to the Monte Carlo value of
    :func:`~pyro_vsm.evaluation.marginal_kl` and the bound
    :math:`\mathrm{KL}[q(z)\|p(z)] \ge \texttt{average\_kl} - \log N` from
    :func:`~pyro_vsm.evaluation.elbo_surgery`.

    :param torch.Tensor q_samples: samples of :math:`q`, shape ``(n, d)`` or ``(n,)``.
    :param torch.Tensor p_samples: samples of :math:`p`, shape ``(m, d)`` or ``(m,)``.
    :param hidden: width of every hidden layer (with ``num_layers``), or a sequence of widths.
    :param int num_layers: number of hidden layers of width ``hidden`` (the paper's "# layers";
        default 3); must be ``None`` when ``hidden`` is a sequence.
    :param int steps: Adam steps.
    :param int batch_size: samples of each distribution per step (drawn with replacement).
    :param float lr: Adam learning rate.
    :param tuple betas: Adam's :math:`(\beta_1, \beta_2)` (the paper: ``(0.9, 0.9)``).
    :param float gradient_penalty: weight :math:`\lambda` of the WGAN-GP penalty on the logit's
        gradient at random interpolates of :math:`q` and :math:`p` samples (0: none).
    :param float activation_noise: standard deviation of Gaussian noise added to every hidden
        activation in training (not when estimating), Table 1's "activation noise".
    :param float dropout: dropout probability on the hidden activations in training.
    :param float holdout: fraction of each sample held out for the estimate, in ``(0, 1)``.
    :param bool standardize: standardise the inputs with the pooled training samples' mean and
        standard deviation (an affine change of variables: it leaves :math:`\log p/q` unchanged
        and helps the optimisation).
    :param int seed: seeds a new generator on the samples' device (initialisation, split,
        minibatches, noise); the global RNG is left untouched.
    :param torch.Generator generator: a generator to draw from instead (not with ``seed``);
        one on the samples' device avoids host-device copies.
    :param bool return_diagnostics: also return a :class:`DensityRatioDiagnostics`.
    :returns: the estimate as a float, or ``(estimate, diagnostics)``.
    :raises ValueError: on malformed or non-finite samples or bad options, naming the argument.
    """
    q = as_samples(q_samples, "q_samples")
    p = as_samples(p_samples, "p_samples")
    if q.shape[1] != p.shape[1]:
        raise ValueError(
            f"q_samples and p_samples must have the same number of features, got "
            f"{tuple(q.shape)} and {tuple(p.shape)}"
        )
    if q.device != p.device:
        raise ValueError(
            f"q_samples and p_samples must be on the same device, got {q.device} and {p.device}"
        )
    dtype = torch.promote_types(q.dtype, p.dtype)
    q, p = q.to(dtype), p.to(dtype)
    sizes = _hidden_sizes(hidden, num_layers)
    steps = check_int(steps, "steps")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_float(lr, "lr", low_open=True)
    if not (isinstance(betas, Sequence) and len(betas) == 2):
        raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
    betas = tuple(check_float(b, "betas", 0.0, 1.0, high_open=True) for b in betas)
    gradient_penalty = check_float(gradient_penalty, "gradient_penalty")
    activation_noise = check_float(activation_noise, "activation_noise")
    dropout = check_float(dropout, "dropout", 0.0, 1.0, high_open=True)
    holdout = check_float(holdout, "holdout", 0.0, 1.0, low_open=True, high_open=True)
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be True or False, got {standardize!r}")
    gen = make_generator(seed, generator, q.device)

    q_train, q_hold, _ = split(q, holdout, gen, "q_samples")
    p_train, p_hold, _ = split(p, holdout, gen, "p_samples")
    pooled = torch.cat([q_train, p_train])
    if standardize:
        loc = pooled.mean(0)
        scale = pooled.std(0) if pooled.shape[0] > 1 else torch.ones_like(loc)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    else:
        loc, scale = torch.zeros_like(pooled[0]), torch.ones_like(pooled[0])
    with seeded_init(gen, q):
        net = RatioClassifier(q.shape[1], sizes, loc.cpu(), scale.cpu(), activation_noise, dropout)
    net = net.to(device=q.device, dtype=dtype)
    optim = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
    losses = torch.empty(steps, dtype=dtype, device=q.device)

    with torch.enable_grad():
        for step in range(steps):
            zq = q_train[randint(q_train.shape[0], (batch_size,), gen, q)]
            zp = p_train[randint(p_train.shape[0], (batch_size,), gen, q)]
            logits = net(torch.cat([zq, zp]), generator=gen, train=True)
            lq, lp = logits[:batch_size], logits[batch_size:]
            loss = 0.5 * (softplus(lq).mean() + softplus(-lp).mean())
            losses[step] = loss.detach()
            if gradient_penalty > 0:
                loss = loss + gradient_penalty * _gradient_penalty(net, zq, zp, gen)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()

    net.eval()
    with torch.no_grad():
        lq, lp = _logits(net, q_hold), _logits(net, p_hold)
        neg = -lq
        stats = torch.stack(
            [
                neg.mean(),
                neg.std() / math.sqrt(neg.numel()) if neg.numel() > 1 else neg.new_tensor(math.nan),
                0.5 * ((lq < 0).to(dtype).mean() + (lp > 0).to(dtype).mean()),
                0.5 * (softplus(lq).mean() + softplus(-lp).mean()),
                losses[-max(1, steps // 10) :].mean(),
                lp.mean(),
                torch.exp(torch.logsumexp(-lp, 0) - math.log(lp.numel())),
                torch.exp(torch.logsumexp(lq, 0) - math.log(lq.numel())),
            ]
        ).tolist()
    estimate = stats[0]
    if not return_diagnostics:
        return estimate
    return estimate, DensityRatioDiagnostics(
        stderr=stats[1],
        accuracy=stats[2],
        heldout_loss=stats[3],
        train_loss=stats[4],
        reverse_kl=stats[5],
        mean_ratio_p=stats[6],
        mean_ratio_q=stats[7],
        logits_q=lq,
        logits_p=lp,
        losses=losses,
        classifier=net,
        num_train=(q_train.shape[0], p_train.shape[0]),
        num_heldout=(q_hold.shape[0], p_hold.shape[0]),
    )
