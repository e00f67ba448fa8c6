"""The joint Fisher divergence (Fisher autoencoder; Elkhalil et al., 2021)."""

import torch

from .base import ScoreLoss
from .inference import m1_terms, posterior_fisher_terms


class JointFisherLoss(ScoreLoss):
    """Joint Fisher divergence between :math:`q(z|x)\\pi(x)` and :math:`p_\\theta(z, x)`.

    Eqs. 6–8 of Wenliang (2022): up to a constant that depends only on the data distribution,

    .. math::

        \\mathbb{D}_F[q(z|x)\\pi(x)\\|p_\\theta(z,x)] = \\mathbb{E}_\\pi\\Big[
            \\tfrac12\\mathbb{E}_q\\lVert\\nabla_z\\log q(z|x) - \\nabla_z\\log p_\\theta(x,z)\\rVert^2
            + M_1(x)\\Big],

    minimised jointly over model and guide with reparametrised samples (the Fisher autoencoder).
    The value is summed over the data plate like ``Trace_ELBO``. Because the joint Fisher divergence
    does not bound the marginal one, its minimiser is biased when the guide family cannot express
    the posterior (Figure 1 of the paper; see ``tests/infer/test_joint_fisher.py``).

    :param num_particles, max_plate_nesting, vectorize_particles, laplacian, num_projections: see
        :class:`~pyro_vsm.infer.base.ScoreLoss`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_steps = 0

    def _objective(self, model, guide, args, kwargs, latent_mode, create_graph):
        traces = self._score_traces(
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
        return self._average({**posterior_fisher_terms(st), **m1_terms(st)} for st in traces)

    def loss(self, model, guide, *args, **kwargs):
        """The joint Fisher divergence estimate (up to the data constant), as a float."""
        with torch.enable_grad():
            total, _ = self._objective(model, guide, args, kwargs, "detach", create_graph=False)
        return total.detach().item()

    def differentiable_loss(self, model, guide, *args, **kwargs):
        with torch.enable_grad():
            total, _ = self._objective(model, guide, args, kwargs, "reparam", create_graph=True)
        return total

    def loss_and_grads(self, model, guide, *args, **kwargs):
        with torch.enable_grad():
            total, sites = self._objective(model, guide, args, kwargs, "reparam", create_graph=True)
        value = self._check_finite(total, sites, f"step {self.num_steps}")
        if total.requires_grad:
            total.backward(retain_graph=self.retain_graph)
        self.num_steps += 1
        return value
