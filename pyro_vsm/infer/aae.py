r"""The adversarial autoencoder (Makhzani et al.; Rosca et al., 2018, Section 4) as a grouped loss."""

from .hybrids import CODE, HybridLoss

__all__ = ["AAELoss"]


class AAELoss(HybridLoss):
    r"""Adversarial autoencoder: reconstruction for encoder and decoder, and a code discriminator
    that matches the aggregate posterior :math:`q(z) = \mathbb E_{p^*(x)} q_\eta(z|x)` to the
    prior (Makhzani et al., 2015; Rosca et al., 2018, Section 4).

    Three parameter groups, each minimising its own objective. With :math:`\hat z_n \sim
    q_\eta(z|x_n)` (reparametrised), :math:`z_n \sim p(z)` drawn from the model's own prior (the
    model run with its latent unconditioned) and the code discriminator's logit
    :math:`\ell_C = \log\frac{C}{1-C}` (prior samples real, posterior samples fake):

    .. math::

        \text{encoder } \eta:&\quad \lambda_E \textstyle\sum_n -\log p_\theta(x_n|\hat z_n)
            + \sum_n R_C(\hat z_n), \\
        \text{generator (decoder) } \theta:&\quad \lambda_G \textstyle\sum_n
            -\log p_\theta(x_n|\hat z_n), \\
        \text{code discriminator } \omega:&\quad \textstyle\sum_n
            \operatorname{softplus}(\ell_C(\hat z_n)) + \operatorname{softplus}(-\ell_C(z_n)),

    the last being :math:`-\log(1 - C(\hat z)) - \log C(z)`. The encoder's adversarial term is
    :math:`R_C = -\ell_C` (``generator_loss="logit"``, Algorithm 5 of Rosca et al.) or
    :math:`R_C = -\log C = \operatorname{softplus}(-\ell_C)` (``"non_saturating"``, Makhzani et
    al.). At the discriminator's optimum :math:`\ell_C = \log p(z)/q(z)`, so the logit form's
    :math:`\mathbb E_q[R_C]` is :math:`\mathrm{KL}[q(z)\|p(z)]`: the AAE replaces the VAE's
    :math:`\mathbb E_x\mathrm{KL}[q(z|x)\|p(z)] = \mathrm{KL}[q(z)\|p(z)] + I_q(x; z)` by its
    marginal part (ELBO surgery). With no cost on the conditional, Gaussian posteriors collapse
    towards point masses (:math:`\sigma \to 0`).

    **Reconstruction** is the model's own :math:`-\log p_\theta(x|\hat z)` at every observed site:
    a Laplace likelihood with fixed scale :math:`b` gives the paper's :math:`\ell_1` loss,
    :math:`-\log \mathrm{Laplace}(x; \hat x, b) = \lVert x - \hat x\rVert_1 / b + d\log 2b`,
    summed over pixels (so :math:`\lambda = 1/b`); a Gaussian gives :math:`\ell_2`, a Bernoulli
    the cross-entropy.

    **Sites.** The guide has one latent site, reparametrisable (``Normal``, ``Delta``, ...; a
    non-reparametrisable site raises naming it); the code discriminator maps its values
    (``batch_shape + event_shape``) to logits of shape ``batch_shape`` (or with a trailing 1).
    Terms are summed over plates with their scales like :class:`~pyro.infer.Trace_ELBO`; the
    groups are the parameters only the guide reads (encoder), the model's parameters (generator)
    and the discriminator's. Do not use batch norm in the discriminator: it runs several times
    per step.

    **Updates.** ``updates="cyclic"`` (default): one group per ``svi.step``, in the order encoder,
    generator, code discriminator (the latter ``disc_steps`` times); :attr:`phase` names the next
    group and :attr:`steps_per_cycle` the length of a cycle. Each step uses the minibatch passed
    to it: a cycle sees one minibatch only if the same one is passed to its steps.
    ``updates="simultaneous"``: every group from its own objective in one step.

    **Values.** ``svi.step`` returns the sum of the step's objectives; ``svi.evaluate_loss``
    returns the sum of all three objectives. Neither is a bound on :math:`-\log p(x)`: the
    adversarial terms are classifier estimates. :attr:`last_terms` holds each objective and its
    parts (``"reconstruction"``, ``"code_adversarial"``, ``"code_accuracy"``).

    **The discriminator** is owned by the loss (:attr:`owned_modules`): under ``SVI`` it is
    registered in Pyro's param store as ``prefix + "code_discriminator"``, so ``pyro.optim``
    steps it and per-parameter arguments can target it; :meth:`state_dict` and checkpoints save
    it and ``loss(model, guide).parameters()`` returns it. Adam with
    :math:`\beta = (0.5, 0.9)` (the paper's Appendix K) and a learning rate per group::

        def adam_args(name):  # e.g. "code_discriminator.0.weight", "encoder.0.weight"
            lr = 5e-4 if "discriminator" in name else 1e-3
            return {"lr": lr, "betas": (0.5, 0.9)}

        loss = AAELoss(code_discriminator=mlp(latent_dim, (256, 256), 1))
        svi = SVI(model, guide, pyro.optim.Adam(adam_args), loss=loss)
        for _ in range(num_cycles):
            for _ in range(loss.steps_per_cycle):
                svi.step(x_batch)

    :param torch.nn.Module code_discriminator: :math:`C`, values of the latent site to logits.
    :param str updates: ``"cyclic"`` or ``"simultaneous"``.
    :param int disc_steps: repeats of the discriminator phase per cycle (cyclic only).
    :param str generator_loss: ``"logit"`` or ``"non_saturating"``: the encoder's
        :math:`R_C`.
    :param float encoder_reconstruction_weight: :math:`\lambda_E \ge 0`.
    :param float generator_reconstruction_weight: :math:`\lambda_G \ge 0`.
    :param str prefix: prefix of the discriminator's name in Pyro's param store (to train
        several such losses in one store).
    :param int num_particles: samples per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `Adversarial Autoencoders`,
        Alireza Makhzani, Jonathon Shlens, Navdeep Jaitly, Ian Goodfellow, Brendan Frey (2015)

    [2] `Distribution Matching in Variational Inference`,
        Mihaela Rosca, Balaji Lakshminarayanan, Shakir Mohamed (2018)

    [3] `ELBO surgery: yet another way to carve up the variational evidence lower bound`,
        Matthew D. Hoffman, Matthew J. Johnson (2016)
    """

    def __init__(
        self,
        code_discriminator,
        *,
        updates="cyclic",
        disc_steps=1,
        generator_loss="logit",
        encoder_reconstruction_weight=1.0,
        generator_reconstruction_weight=1.0,
        prefix="",
        num_particles=1,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        retain_graph=None,
    ):
        super().__init__(
            {CODE: code_discriminator},
            updates=updates,
            disc_steps=disc_steps,
            generator_loss=generator_loss,
            encoder_reconstruction_weight=encoder_reconstruction_weight,
            generator_reconstruction_weight=generator_reconstruction_weight,
            prefix=prefix,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            retain_graph=retain_graph,
        )

    @property
    def code_discriminator(self):
        r"""The code discriminator :math:`C`."""
        return self.owned_modules[CODE]
