r"""M1 learning with separate guide updates (Algorithm 1 of Wenliang, 2022)."""

from .base import ScoreLoss
from .grouped import Objective, split_params
from .inference import (
    check_inference,
    guide_objective_terms,
    inference_latent_mode,
    m1_terms,
)
from .schedules import AlternatingSchedule


class M1Loss(ScoreLoss):
    r"""Variational score matching with the M1 objective and alternating updates.

    Algorithm 1 of [1]: ``guide_steps = J`` guide-only updates on an inference objective, then one
    model update on

    .. math::

        M_1(x) = \mathbb{E}_{q(z|x)}\Big[\tfrac12\lVert\nabla_x\log p_\theta(x|z)\rVert^2
            + \Delta_x\log p_\theta(x|z)\Big] + \tfrac12\mathbb{E}_{q(z|x)}
            \lVert\nabla_x\log q(z|x)\rVert^2 \qquad \text{(eq. 8)}

    with :math:`z \sim q` detached. The last term does not depend on the model and is left out of
    the model update (Proposition 3.1). Every ``svi.step`` is **one** update; the loss keeps a step
    counter (:attr:`schedule`) and :attr:`phase` tells which update the next step takes.

    On guide steps only the parameters read by the guide alone move; on model steps only those the
    model reads (a parameter read by both belongs to the model). The other group's parameters are
    kept out of SVI's optimizer step altogether, so they stay exactly unchanged under any
    ``pyro.optim`` optimizer (momentum and ClippedAdam's learning-rate decay included).

    Inference objectives (``inference=``):

    * ``"kl"``: :math:`\mathbb{D}_{KL}[q\|p_\theta(z|x)]` with reparametrised samples (the value
      reported is the negative ELBO);
    * ``"fisher"``: the posterior Fisher divergence without reparametrisation (``z`` detached);
    * ``"fisher-reparam"``: the posterior Fisher divergence with reparametrised ``z``.

    ``svi.step`` returns the objective of the update it took: the inference objective on guide
    steps, :math:`\tilde M_1` (eq. 8 without the guide-only term) on model steps. :meth:`loss`
    (and so ``svi.evaluate_loss``) returns the full eq. 8 for the current parameters, summed over the
    data plate like ``Trace_ELBO``; it works under ``torch.no_grad()``.

    ``loss(model, guide)`` gives an :class:`~pyro.infer.elbo.ELBOModule` whose forward is one step of
    the same schedule: its value is the current phase's objective and its gradient reaches only
    the active group, so a plain torch optimizer reproduces ``SVI``.

    :param str inference: ``"kl"``, ``"fisher"`` or ``"fisher-reparam"``.
    :param int guide_steps: ``J``, the guide updates per model update (0 freezes the guide).
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
    """

    def __init__(self, inference="kl", guide_steps=1, **kwargs):
        check_inference(inference)
        super().__init__(schedule=AlternatingSchedule(guide_steps), **kwargs)
        self.inference = inference

    @property
    def guide_steps(self):
        r"""``J``, the guide updates per model update."""
        return self.schedule.guide_steps

    # ----------------------------------------------------------------------------------------
    def _inference_objective(self, model, guide, args, kwargs):
        r"""``(total, per-site terms, traces)`` of the inference objective over the particles."""
        mode = inference_latent_mode(self.inference)
        traces = list(
            self._score_traces(
                model,
                guide,
                args,
                kwargs,
                latent_mode=mode,
                need_z_scores=self.inference != "kl",
                require_reparam=mode == "reparam",
            )
        )
        total, sites = self._average(guide_objective_terms(st, self.inference) for st in traces)
        return total, sites, traces

    def _guide_objective(self, model, guide, args, kwargs):
        total, sites, traces = self._inference_objective(model, guide, args, kwargs)
        _, guide_params = split_params(
            [st.model_trace for st in traces], [st.guide_trace for st in traces]
        )
        return Objective("guide", total, guide_params, sites=sites)

    # hooks of the learning objective, shared with the M2/M3 losses -------------------------
    def _learning_trace_options(self, full):
        r"""``trace_scores`` options the learning objective needs (``full``: the value of
        :meth:`loss`, including terms that only depend on the guide)."""
        return dict(need_x_scores=True, need_laplacian=True, need_guide_x_scores=full)

    #: latent values on model steps: the guide does not depend on the model, so z is detached
    _learning_latent_mode = "detach"

    def _learning_terms(self, traces, full):
        r"""``(total, per-site terms)`` of the learning objective over the particles."""
        return self._average(m1_terms(st, include_guide_term=full) for st in traces)

    def _model_objective(self, model, guide, args, kwargs):
        traces = list(
            self._score_traces(
                model,
                guide,
                args,
                kwargs,
                latent_mode=self._learning_latent_mode,
                require_reparam=self._learning_latent_mode == "reparam",
                **self._learning_trace_options(False),
            )
        )
        total, sites = self._learning_terms(traces, False)
        model_params, _ = split_params(
            [st.model_trace for st in traces], [st.guide_trace for st in traces]
        )
        return Objective("model", total, model_params, sites=sites)

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        if phase == "guide":
            return [self._guide_objective(model, guide, args, kwargs)]
        return [self._model_objective(model, guide, args, kwargs)]

    def _evaluate(self, model, guide, args, kwargs):
        r"""The M1 estimate (eq. 8), including the guide-only term."""
        traces = list(
            self._score_traces(
                model,
                guide,
                args,
                kwargs,
                latent_mode="detach",
                create_graph=False,
                **self._learning_trace_options(True),
            )
        )
        total, _ = self._learning_terms(traces, True)
        return total.detach()
