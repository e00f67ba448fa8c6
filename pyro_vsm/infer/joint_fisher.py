r"""The joint Fisher divergence (Fisher autoencoder; Elkhalil et al., 2021)."""

from .base import ScoreLoss
from .grouped import Objective, split_params
from .inference import m1_terms, posterior_fisher_terms


class JointFisherLoss(ScoreLoss):
    r"""Joint Fisher divergence between :math:`q(z|x)\pi(x)` and :math:`p_\theta(z, x)`.

    Eqs. 6–8 of [1]: up to a constant that depends only on the data distribution,

    .. math::

        \mathbb{D}_F[q(z|x)\pi(x)\|p_\theta(z,x)] = \mathbb{E}_\pi\Big[
            \tfrac12\mathbb{E}_q\lVert\nabla_z\log q(z|x) - \nabla_z\log p_\theta(x,z)\rVert^2
            + M_1(x)\Big],

    minimised jointly over model and guide with reparametrised samples (the Fisher autoencoder
    of [2]).
    The value is summed over the data plate like ``Trace_ELBO``. Because the joint Fisher divergence
    does not bound the marginal one, its minimiser is biased when the guide family cannot express
    the posterior (Figure 1 of [1]).

    The keyword arguments are those of :class:`~pyro_vsm.infer.base.ScoreLoss`; every step moves
    the model and the guide together.

    :param schedule: a :class:`~pyro_vsm.infer.schedules.Schedule` (default: one phase,
        ``"joint"``); every phase takes the same joint step.
    :param int num_particles: number of samples from the guide per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: draw the particles in one vectorized pass.
    :param str laplacian: ``"auto"``, ``"exact"`` or ``"hutchinson"``; see
        :func:`pyro_vsm.ops.scores.score_and_laplacian`.
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `On the failure of variational score matching for VAE models`,
        Li K. Wenliang (2022)

    [2] `Fisher Auto-Encoders`,
        Khalil Elkhalil, Ali Hasan, Jie Ding, Sina Farsiu, Vahid Tarokh (2021)
    """

    def _terms(self, model, guide, args, kwargs, latent_mode, create_graph):
        traces = list(
            self._score_traces(
                model,
                guide,
                args,
                kwargs,
                latent_mode=latent_mode,
                need_z_scores=True,
                need_x_scores=True,
                need_laplacian=True,
                need_guide_x_scores=True,
                create_graph=create_graph,
                require_reparam=True,
            )
        )
        total, sites = self._average(
            {**posterior_fisher_terms(st), **m1_terms(st)} for st in traces
        )
        return total, sites, traces

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        total, sites, traces = self._terms(model, guide, args, kwargs, "reparam", True)
        model_params, guide_params = split_params(
            [st.model_trace for st in traces], [st.guide_trace for st in traces]
        )
        return [Objective("joint", total, {**model_params, **guide_params}, sites=sites)]

    def _evaluate(self, model, guide, args, kwargs):
        total, _, _ = self._terms(model, guide, args, kwargs, "detach", False)
        return total.detach()
