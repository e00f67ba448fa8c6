r"""Marginal score matching with a variational posterior: M2 (Swersky et al.) and M3 (Bao et al.).

Both approximate the marginal Fisher divergence :math:`\mathbb{D}_F[\pi(x)\|p_\theta(x)]`, whose
score :math:`\nabla_x\log p_\theta(x) = \mathbb{E}_{p_\theta(z|x)}[s^p_\theta(x|z)]` involves the
exact posterior, by replacing the posterior with the guide (Wenliang, 2022, Section 4; see
:class:`M2Loss` and :class:`M3Loss` for the references). With
:math:`s^p_\theta = \nabla_x\log p_\theta(x|z)` and :math:`s^q = \nabla_x\log q(z|x)` at fixed
:math:`z`:

.. math::

    M_2(x) &= \mathbb{E}_q\big[\lVert s^p_\theta\rVert^2 + \nabla_x\cdot s^p_\theta\big]
        - \tfrac12\lVert\mathbb{E}_q[s^p_\theta]\rVert^2 \qquad\text{(eq. 13)}

    M_3(x) &= \mathbb{E}_q\big[s^q\cdot s^p_\theta + \nabla_x\cdot s^p_\theta\big]
        + \tfrac12\lVert\mathbb{E}_q[s^p_\theta]\rVert^2 \qquad\text{(eq. 15)}

**Squared means.** The plug-in :math:`\lVert\frac1S\sum_s f_s\rVert^2` overestimates
:math:`\lVert\mathbb{E}f\rVert^2` by :math:`\operatorname{tr}\operatorname{Cov}[f]/S`. These losses
use the U-statistic over pairs of distinct particles,
:math:`\frac{1}{S(S-1)}\sum_{s\neq t} f_s\cdot f_t
= \frac{\lVert\sum_s f_s\rVert^2 - \sum_s\lVert f_s\rVert^2}{S(S-1)}`, which is unbiased, so
the estimates average to eqs. 13 and 15 for any ``S``; it needs ``num_particles >= 2``.

Learning and inference alternate exactly as in :class:`~pyro_vsm.infer.m1.M1Loss` (``guide_steps``
inference updates by KL or Fisher divergence, then one model update on the learning objective).
"""

import contextlib

import torch
from pyro import poutine
from pyro.distributions.util import sum_rightmost

from .._checks import check_int, check_positive
from ..errors import NonFiniteLossError, ScoreObjectiveError
from .grouped import split_params
from .m1 import M1Loss


def _particle_sums(traces, max_plate_nesting):
    r"""Per observed site: ``(Σ_s f_s, Σ_s ‖f_s‖², first ObservedScores)`` with ``f = s^p``.

    ``traces`` are either one particle-vectorized trace or one trace per particle. The sums are
    elementwise over the site's elements (no particle dim left).
    """
    out = {}
    for st in traces:
        for obs in st.observed:
            f = obs.score_p
            if st.num_vectorized > 1:
                # Pyro's particle plate sits at dim -max_plate_nesting (the ELBO counts it)
                axis = f.dim() - obs.event_dim - max_plate_nesting
                if axis < 0:
                    raise ScoreObjectiveError(
                        f"observed site '{obs.name}' has no particle dimension"
                    )
                sum_f, sum_sq = f.sum(axis), f.pow(2).sum(axis)
            else:
                sum_f, sum_sq = f, f.pow(2)
            if obs.name in out:
                prev_f, prev_sq, first = out[obs.name]
                out[obs.name] = (prev_f + sum_f, prev_sq + sum_sq, first)
            else:
                out[obs.name] = (sum_f, sum_sq, obs)
    return out


def squared_mean_terms(traces, num_particles, max_plate_nesting):
    r"""Per-site unbiased :math:`\lVert\mathbb{E}_q[s^p_\theta]\rVert^2`, summed over the data
    plate (with plate scales, like ``Trace_ELBO``).

    :param traces: one particle-vectorized :class:`~pyro_vsm.infer.traces.ScoreTraces` or one
        per particle.
    :param int num_particles: the number ``S >= 2`` of particles.
    :param int max_plate_nesting: the loss's plate nesting (locates the particle dimension).
    :returns: ``{observed site name: scalar}``.
    """
    terms = {}
    s = num_particles
    for name, (sum_f, sum_sq, obs) in _particle_sums(traces, max_plate_nesting).items():
        u = sum_rightmost(sum_f.pow(2) - sum_sq, obs.event_dim) / (s * (s - 1))
        weighted = obs.weight(u)
        if weighted.numel() != u.numel():
            raise ScoreObjectiveError(
                f"observed site '{name}': masks that vary across particles are not supported "
                "by the squared-mean term"
            )
        terms[name] = weighted.sum()
    return terms


def m2_particle_terms(st):
    r"""Per-site :math:`\lVert s^p\rVert^2 + \nabla_x\cdot s^p` of one trace.

    :param st: a :class:`~pyro_vsm.infer.traces.ScoreTraces` with data scores and Laplacians.
    :returns: ``{observed site name: scalar}``.
    """
    return {
        obs.name: obs.weight(sum_rightmost(obs.score_p.pow(2), obs.event_dim) + obs.laplacian).sum()
        for obs in st.observed
    }


def m3_particle_terms(st):
    r"""Per-site :math:`s^q\cdot s^p + \nabla_x\cdot s^p` of one trace.

    :param st: a :class:`~pyro_vsm.infer.traces.ScoreTraces` with data scores of the model and
        the guide and Laplacians.
    :returns: ``{observed site name: scalar}``.
    """
    return {
        obs.name: obs.weight(
            sum_rightmost(obs.score_q * obs.score_p, obs.event_dim) + obs.laplacian
        ).sum()
        for obs in st.observed
    }


def _combine(per_particle, squared_mean, sign):
    sites = dict(per_particle)
    for name, t in squared_mean.items():
        sites[name] = sites.get(name, 0.0) + sign * 0.5 * t
    return sum(sites.values()), sites


class M2Loss(M1Loss):
    r"""Variational score matching with Swersky et al.'s marginal objective :math:`M_2` [1]
    (eq. 13 of [2]) and alternating inference updates.

    Same schedule, inference options, gradient routing and return values as
    :class:`~pyro_vsm.infer.m1.M1Loss` (see there); only the learning objective differs. The
    squared mean :math:`\lVert\mathbb{E}_q[s^p]\rVert^2` is estimated without the plug-in bias
    (U-statistic over particle pairs; see :mod:`pyro_vsm.infer.marginal`), so
    ``num_particles >= 2``. :meth:`loss` returns the estimate of eq. 13 summed over the data plate.

    :param str inference: ``"kl"``, ``"fisher"`` or ``"fisher-reparam"``.
    :param int guide_steps: ``J``, the guide updates per model update (0 freezes the guide).
    :param int num_particles: number of samples from the guide per data point, at least 2.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: draw the particles in one vectorized pass.
    :param str laplacian: ``"auto"``, ``"exact"`` or ``"hutchinson"``; see
        :func:`pyro_vsm.ops.scores.score_and_laplacian`.
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `On Autoencoders and Score Matching for Energy Based Models`,
        Kevin Swersky, Marc'Aurelio Ranzato, David Buchman, Benjamin M. Marlin, Nando de Freitas
        (2011)

    [2] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)
    """

    _sign = -1.0

    def __init__(self, inference="kl", guide_steps=1, **kwargs):
        super().__init__(inference=inference, guide_steps=guide_steps, **kwargs)
        if self.num_particles < 2:
            raise ValueError(
                f"{type(self).__name__} needs num_particles >= 2: the squared mean "
                "||E_q[grad_x log p(x|z)]||^2 is estimated by a U-statistic over particle pairs"
            )

    def _learning_trace_options(self, full):
        return dict(need_x_scores=True, need_laplacian=True)

    def _particle_terms(self, st):
        return m2_particle_terms(st)

    def _learning_terms(self, traces, full):
        _, per_particle = self._average(self._particle_terms(st) for st in traces)
        squared = squared_mean_terms(traces, self.num_particles, self.max_plate_nesting)
        return _combine(per_particle, squared, self._sign)


class M3Loss(M2Loss):
    r"""Variational score matching with Bao et al.'s marginal objective :math:`M_3` [1] (eq. 15 of
    [2]), alternating inference updates and optional bi-level model updates.

    With ``bilevel_steps = K > 0`` every model update first takes ``K`` inference updates on
    *functional copies* :math:`\phi_k` of the guide's parameters,
    :math:`\phi_{k+1} = \phi_k - \eta\nabla_\phi\mathcal{L}_{\text{inf}}(\phi_k, \theta)`
    (``η = bilevel_lr``, starting from the current guide parameters), keeping the graph, and
    evaluates :math:`M_3(\theta, \phi_K(\theta))`: the model gradient then flows through the
    guide update (Bao et al. [1]). The samples are then reparametrised,
    :math:`z = z(\epsilon; \phi_K(\theta))`, so the model gradient is the exact derivative of
    the estimate. The guide's own parameters are not changed by this; they still move only on
    guide steps. ``K = 0`` is the plain objective.

    The functional copies reach the guide through :func:`torch.func.functional_call` when the
    guide is a ``torch.nn.Module`` (e.g. a :class:`~pyro.nn.PyroModule`), else through
    ``poutine.substitute`` (a guide reading ``pyro.param``).

    :param str inference: ``"kl"``, ``"fisher"`` or ``"fisher-reparam"``.
    :param int guide_steps: ``J``, the guide updates per model update (0 freezes the guide).
    :param int bilevel_steps: ``K``, the unrolled inference updates per model update.
    :param float bilevel_lr: step size :math:`\eta` of the unrolled inference updates.
    :param int num_particles: number of samples from the guide per data point, at least 2.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: draw the particles in one vectorized pass.
    :param str laplacian: ``"auto"``, ``"exact"`` or ``"hutchinson"``; see
        :func:`pyro_vsm.ops.scores.score_and_laplacian`.
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `Bi-level Score Matching for Learning Energy-based Latent Variable Models`,
        Fan Bao, Chongxuan Li, Kun Xu, Hang Su, Jun Zhu, Bo Zhang (2020)

    [2] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)
    """

    _sign = 1.0

    def __init__(self, inference="kl", guide_steps=1, bilevel_steps=0, bilevel_lr=1e-3, **kwargs):
        super().__init__(inference=inference, guide_steps=guide_steps, **kwargs)
        self.bilevel_steps = check_int(bilevel_steps, "bilevel_steps", 0)
        self.bilevel_lr = check_positive(bilevel_lr, "bilevel_lr")
        # with K > 0 the guide depends on θ through the unrolled updates, so the samples must be
        # reparametrised for the model gradient to include d z / d θ
        self._learning_latent_mode = "reparam" if self.bilevel_steps else "detach"

    def _learning_trace_options(self, full):
        return dict(need_x_scores=True, need_laplacian=True, need_guide_x_scores=True)

    def _particle_terms(self, st):
        return m3_particle_terms(st)

    def _model_objective(self, model, guide, args, kwargs):
        if not self.bilevel_steps:
            return super()._model_objective(model, guide, args, kwargs)
        guide = self._unrolled_guide(model, guide, args, kwargs)
        with self._unrolled_context("the model step"):
            return super()._model_objective(model, guide, args, kwargs)

    @contextlib.contextmanager
    def _unrolled_context(self, where):
        r"""Reports a distribution rejecting unrolled guide parameters as a divergence."""
        try:
            yield
        except ScoreObjectiveError:
            raise
        except ValueError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise NonFiniteLossError(
                f"M3Loss: non-finite loss: the unrolled guide parameters left their domain in "
                f"{where} at step {self.step} (phase {self.phase!r}; {first}). No parameter was "
                f"updated; lower bilevel_lr (now {self.bilevel_lr})"
            ) from e

    def _unrolled_guide(self, model, guide, args, kwargs):
        r"""The guide with its parameters replaced by ``K`` differentiable inference updates."""
        total, _, traces = self._inference_objective(model, guide, args, kwargs)
        _, guide_params = split_params(
            [st.model_trace for st in traces], [st.guide_trace for st in traces]
        )
        substitute = self._substitution(guide, guide_params)
        phi = {n: p for n, p in guide_params.items() if p.requires_grad}
        if not phi:
            raise ScoreObjectiveError(
                "M3Loss(bilevel_steps > 0): the guide has no trainable parameters to unroll"
            )
        for k in range(self.bilevel_steps):
            if k:
                with self._unrolled_context(f"bi-level inner step {k}"):
                    total, _, _ = self._inference_objective(model, substitute(phi), args, kwargs)
            grads = torch.autograd.grad(
                total, list(phi.values()), create_graph=True, allow_unused=True
            )
            # no host sync here: non-finite unrolled parameters make the model objective
            # non-finite (caught by the step's finiteness check before any parameter moves) or
            # are rejected by a distribution (reported by _unrolled_context)
            phi = {
                n: p if g is None else p - self.bilevel_lr * g
                for (n, p), g in zip(phi.items(), grads, strict=True)
            }
        return substitute(phi)

    @staticmethod
    def _substitution(guide, guide_params):
        r"""``phi -> guide`` running with the parameter values ``phi`` (keyed by Pyro name)."""
        if isinstance(guide, torch.nn.Module):
            by_ptr = {p.data_ptr(): n for n, p in guide.named_parameters()}
            local = {}
            for pyro_name, p in guide_params.items():
                if p.data_ptr() in by_ptr:
                    local[pyro_name] = by_ptr[p.data_ptr()]

            def substitute(phi):
                values = {local[n]: v for n, v in phi.items() if n in local}
                other = {n: v for n, v in phi.items() if n not in local}

                def run(*args, **kwargs):
                    with poutine.substitute(data=other):
                        return torch.func.functional_call(guide, values, args, kwargs)

                return run

            return substitute
        return lambda phi: poutine.substitute(guide, data=phi)
