"""M1 learning with separate guide updates (Algorithm 1 of Wenliang, 2022)."""

import torch

from .base import ScoreLoss
from .inference import (
    check_inference,
    guide_objective_terms,
    inference_latent_mode,
    m1_terms,
)
from .schedule import (
    AlternatingSchedule,
    backward_into,
    expose_params,
    hide_params,
    routed,
    split_params,
)


class M1Loss(ScoreLoss):
    """Variational score matching with the M1 objective and alternating updates.

    Algorithm 1 of [1]: ``guide_steps = J`` guide-only updates on an inference objective, then one
    model update on

    .. math::

        M_1(x) = \\mathbb{E}_{q(z|x)}\\Big[\\tfrac12\\lVert\\nabla_x\\log p_\\theta(x|z)\\rVert^2
            + \\Delta_x\\log p_\\theta(x|z)\\Big] + \\tfrac12\\mathbb{E}_{q(z|x)}
            \\lVert\\nabla_x\\log q(z|x)\\rVert^2 \\qquad \\text{(eq. 8)}

    with :math:`z \\sim q` detached. The last term does not depend on the model and is left out of
    the model update (Proposition 3.1). Every ``svi.step`` is **one** update; the loss keeps a step
    counter (:attr:`schedule`) and :attr:`phase` tells which update the next step takes.

    On guide steps only the parameters read by the guide alone move; on model steps only those the
    model reads (a parameter read by both belongs to the model). The other group's parameters are
    kept out of SVI's optimizer step altogether, so they stay exactly unchanged under any
    ``pyro.optim`` optimizer (momentum and ClippedAdam's learning-rate decay included).

    Inference objectives (``inference=``):

    * ``"kl"``: :math:`\\mathbb{D}_{KL}[q\\|p_\\theta(z|x)]` with reparametrised samples (the value
      reported is the negative ELBO);
    * ``"fisher"``: the posterior Fisher divergence without reparametrisation (``z`` detached);
    * ``"fisher-reparam"``: the posterior Fisher divergence with reparametrised ``z``.

    ``svi.step`` returns the objective of the update it took: the inference objective on guide
    steps, :math:`\\tilde M_1` (eq. 8 without the guide-only term) on model steps. :meth:`loss`
    (and so ``svi.evaluate_loss``) returns the full eq. 8 for the current parameters, summed over the
    data plate like ``Trace_ELBO``; it works under ``torch.no_grad()``.

    ``loss(model, guide)`` gives an :class:`~pyro.infer.elbo.ELBOModule` whose forward is one step of
    the same schedule: its value is the current phase's objective and its gradient reaches only
    the active group, so a plain torch optimizer reproduces ``SVI``.

    :param str inference: ``"kl"``, ``"fisher"`` or ``"fisher-reparam"``.
    :param int guide_steps: ``J``, the guide updates per model update (0 freezes the guide).
    :param num_particles, max_plate_nesting, vectorize_particles, laplacian, num_projections: see
        :class:`~pyro_vsm.infer.base.ScoreLoss`.

    [1] Li K. Wenliang, "On the failure of variational score matching for VAE models" (2022).
    """

    def __init__(self, inference="kl", guide_steps=1, **kwargs):
        check_inference(inference)
        super().__init__(**kwargs)
        self.inference = inference
        self.schedule = AlternatingSchedule(guide_steps)

    @property
    def guide_steps(self):
        return self.schedule.guide_steps

    @property
    def phase(self):
        """``"guide"`` or ``"model"``: the update the next step takes."""
        return self.schedule.phase

    # ----------------------------------------------------------------------------------------
    def _inference_objective(self, model, guide, args, kwargs):
        """``(total, per-site terms, traces)`` of the inference objective over the particles."""
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

    def _guide_step(self, model, guide, args, kwargs):
        total, sites, traces = self._inference_objective(model, guide, args, kwargs)
        _, guide_params = split_params(
            [st.model_trace for st in traces], [st.guide_trace for st in traces]
        )
        return total, sites, guide_params

    # hooks of the learning objective, shared with the M2/M3 losses -------------------------
    def _learning_trace_options(self, full):
        """``trace_scores`` options the learning objective needs (``full``: the value of
        :meth:`loss`, including terms that only depend on the guide)."""
        return dict(need_x_scores=True, need_laplacian=True, need_guide_x_scores=full)

    #: latent values on model steps: the guide does not depend on the model, so z is detached
    _learning_latent_mode = "detach"

    def _learning_terms(self, traces, full):
        """``(total, per-site terms)`` of the learning objective over the particles."""
        return self._average(m1_terms(st, include_guide_term=full) for st in traces)

    def _model_step(self, model, guide, args, kwargs):
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
        return total, sites, model_params

    def _phase_objective(self, model, guide, args, kwargs):
        phase = self.phase
        step = self._guide_step if phase == "guide" else self._model_step
        with torch.enable_grad(), hide_params():
            total, sites, params = step(model, guide, args, kwargs)
        return phase, total, sites, params

    # ----------------------------------------------------------------------------------------
    def loss(self, model, guide, *args, **kwargs):
        """The M1 estimate (eq. 8) for the current parameters, as a float. Takes no step."""
        with torch.enable_grad():
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
        return total.detach().item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """One update of the schedule: gradients for the active group only."""
        phase, total, sites, params = self._phase_objective(model, guide, args, kwargs)
        value = self._check_finite(total, sites, f"step {self.schedule.step} ({phase} step)")
        backward_into(total, params.values(), retain_graph=self.retain_graph)
        expose_params(params)
        self.schedule.advance()
        return value

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """One update of the schedule for plain torch optimizers (see the class docstring)."""
        _, total, _, params = self._phase_objective(model, guide, args, kwargs)
        self.schedule.advance()
        return routed(total, params.values())
