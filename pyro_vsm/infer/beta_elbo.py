r"""The :math:`\beta`-VAE objective, optionally KL-annealed, on the grouped-loss core."""

import torch
from pyro.poutine.messenger import Messenger

from .elbo_terms import negative_elbo_terms
from .grouped import GroupedLoss, Objective
from .schedules import AnnealingSchedule

__all__ = ["BetaELBO"]


class _ScaleLatents(Messenger):
    r"""Multiplies the log-density of every *unobserved* sample site by ``scale``.

    ``poutine.scale`` restricted to latent sites: inside the model it weights the prior terms and
    leaves the likelihood (observed sites, ``pyro.factor``) alone; inside the guide it weights
    every site. Unlike ``poutine.scale`` it accepts ``scale = 0``.
    """

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def _pyro_sample(self, msg):
        if not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


class BetaELBO(GroupedLoss):
    r"""The :math:`\beta`-VAE objective (Higgins et al., 2017), optionally KL-annealed.

    .. math::

        \mathcal L_\beta(x) = \mathbb E_{q(z|x)}[\log p_\theta(x|z)]
            - \beta_t\, \mathbb E_{q(z|x)}\Big[\log \frac{q(z|x)}{p(z)}\Big],

    estimated like :class:`~pyro.infer.Trace_ELBO` (the loss is :math:`-\mathcal L_\beta`, summed
    over the data plate). The KL weight is applied by scaling the log-density of every
    *unobserved* sample site -- the prior terms in the model and every site of the guide -- by
    :math:`\beta_t`, i.e. ``poutine.scale`` restricted to latent sites; observed sites and
    ``pyro.factor`` terms keep weight 1. With non-reparametrised latents the score-function term
    then uses the same weighted log-ratio, so the gradient estimator is that of
    :math:`\mathcal L_\beta`.

    Annealing (:class:`~pyro_vsm.infer.schedules.AnnealingSchedule`): with ``anneal_steps = T >
    0`` the weight at training step :math:`t` (0-based, one step per ``svi.step``) is
    :math:`\beta_t = \beta \min(1, t/T)`: it ramps linearly from 0 at the first step to
    :math:`\beta` at step :math:`T` and stays there. ``anneal_steps = 0`` (the default) uses
    :math:`\beta` throughout. The clock advances on every ``svi.step`` and ``differentiable_loss``;
    :meth:`loss` (``svi.evaluate_loss``) evaluates the objective at the current weight.

    ``beta = 1`` without annealing is exactly ``Trace_ELBO`` (same samples, same value).

    :param float beta: the final KL weight :math:`\beta \ge 0`.
    :param int anneal_steps: :math:`T \ge 0`, the length of the linear warm-up.
    :param int num_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `beta-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework`,
        Irina Higgins, Loic Matthey, Arka Pal, Christopher Burgess, Xavier Glorot, Matthew
        Botvinick, Shakir Mohamed, Alexander Lerchner (2017)

    [2] `Generating Sentences from a Continuous Space`,
        Samuel R. Bowman, Luke Vilnis, Oriol Vinyals, Andrew M. Dai, Rafal Jozefowicz, Samy Bengio
        (2016)
    """

    def __init__(self, beta=1.0, anneal_steps=0, **kwargs):
        super().__init__(schedule=AnnealingSchedule(beta, anneal_steps), **kwargs)

    @property
    def beta(self):
        r"""The final KL weight :math:`\beta`."""
        return self.schedule.beta

    @property
    def anneal_steps(self):
        r"""The length :math:`T` of the linear warm-up."""
        return self.schedule.anneal_steps

    @property
    def kl_weight(self):
        r"""The KL weight :math:`\beta_t` the next training step uses."""
        return self.schedule.weight

    def _get_trace(self, model, guide, args, kwargs):
        weight = self.kl_weight
        if weight != 1.0:
            model, guide = _ScaleLatents(weight)(model), _ScaleLatents(weight)(guide)
        return super()._get_trace(model, guide, args, kwargs)

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        terms = negative_elbo_terms(self, model, guide, args, kwargs)
        params = {**terms.model_params, **terms.guide_params}
        return [
            Objective("neg_elbo", terms.value, params, surrogate=terms.surrogate, sites=terms.sites)
        ]

    def _evaluate(self, model, guide, args, kwargs):
        with torch.no_grad():
            return negative_elbo_terms(self, model, guide, args, kwargs).value
