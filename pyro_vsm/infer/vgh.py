r"""The variational GAN hybrids VGH and VGH++ (Rosca et al., 2018, Section 5.1, Appendix F) as a
grouped loss."""

from .hybrids import CODE, DATA, HybridLoss

__all__ = ["VGHLoss"]

VARIANTS = ("vgh", "vgh++")


class VGHLoss(HybridLoss):
    r"""VGH and VGH++: Algorithm 5 of Rosca, Lakshminarayanan & Mohamed (2018), with four
    parameter groups -- encoder :math:`\eta` (the guide), generator :math:`\theta` (the model), data
    discriminator :math:`\phi` and code discriminator :math:`\omega`.

    Marginal distribution matching in both spaces: a code discriminator :math:`C` tells prior
    samples (real) from posterior samples (fake), as in :class:`~pyro_vsm.infer.AAELoss`, and a
    data discriminator :math:`D` tells data (real) from reconstructions (fake) -- and, for VGH++,
    from prior samples :math:`G(z)` too (eq. 9). With :math:`\hat z_n \sim q_\eta(z|x_n)`
    (reparametrised), :math:`z_n \sim p(z)` drawn from the model's own prior (the model run with
    its latent unconditioned), the reconstruction :math:`\hat x_n` and sample :math:`G(z_n)` the
    means of the model's likelihood :math:`p_\theta(x|\hat z_n)` and :math:`p_\theta(x|z_n)`, and
    logits :math:`\ell_D, \ell_C` (log real/fake):

    .. math::

        \text{encoder } \eta:&\quad \lambda_E\textstyle\sum_n -\log p_\theta(x_n|\hat z_n)
            + \sum_n R_C(\hat z_n)
            \;\big[+ \textstyle\sum_n R_D(\hat x_n)\big]_{\texttt{encoder\_data\_adversarial}}, \\
        \text{generator } \theta:&\quad \lambda_G\textstyle\sum_n -\log p_\theta(x_n|\hat z_n)
            + \sum_n R_D(\hat x_n)\;\big[+ \textstyle\sum_n R_D(G(z_n))\big]_{\text{VGH++}}, \\
        \text{data discriminator } \phi:&\quad \textstyle\sum_n
            w\operatorname{softplus}(-\ell_D(x_n)) + \operatorname{softplus}(\ell_D(\hat x_n))
            \;\big[+ \operatorname{softplus}(\ell_D(G(z_n)))\big]_{\text{VGH++}}, \\
        \text{code discriminator } \omega:&\quad \textstyle\sum_n
            \operatorname{softplus}(\ell_C(\hat z_n)) + \operatorname{softplus}(-\ell_C(z_n)),

    where :math:`\operatorname{softplus}(-\ell) = -\log\sigma(\ell)` and
    :math:`\operatorname{softplus}(\ell) = -\log(1 - \sigma(\ell))`. The adversarial terms are
    :math:`R(\cdot) = -\ell(\cdot)` (``generator_loss="logit"``, Algorithm 5's
    :math:`-\log D + \log(1-D)`) or :math:`R = -\log\sigma(\ell)` (``"non_saturating"``).

    **The paper's contradictions**, each an option (Algorithm 5 is the default):

    * ``generator_loss``: Algorithm 5 uses the logit form; the paper's footnote 1 says all its
      experiments use the non-saturating :math:`-\log D`.
    * ``encoder_data_adversarial``: Algorithm 5's encoder has no data-discriminator term; the
      loss of Appendix F and Section 5.1 ("the encoder and decoder minimize an adversarial loss")
      pass :math:`D`'s gradient to the encoder through :math:`\hat x`.
    * ``real_weight`` :math:`w`: the exact form of Algorithm 5's discriminator loss has
      :math:`-2\log D(x)`, its minibatch approximation :math:`-\log D(x)`; ``real_weight=2``
      gives the former.
    * the reconstruction weight: Appendix K sweeps :math:`\lambda_E` and :math:`\lambda_G`
      separately over 1, 5, 10, 50.

    **Reconstruction** is the model's own :math:`-\log p_\theta(x|\hat z)` at every observed
    site: a Laplace likelihood with fixed scale :math:`b` gives the paper's :math:`\ell_1` loss,
    :math:`\lVert x - \hat x\rVert_1 / b + d\log 2b` summed over pixels (:math:`\lambda = 1/b`).
    The data discriminator sees the likelihood's mean, never a sample from it, so it compares
    data with :math:`\hat x` and :math:`G(z)`.

    **Sites.** The guide has one latent site, reparametrisable (``Normal``, ``Delta``, ...; a
    non-reparametrisable site raises naming it), and the model one observed site. Each
    discriminator maps a site's values (``batch_shape + event_shape``) to logits of shape
    ``batch_shape`` (or with a trailing 1). Terms are summed over plates with their scales like
    :class:`~pyro.infer.Trace_ELBO`. Do not use batch norm in the discriminators: they run
    several times per step.

    **Updates.** ``updates="cyclic"`` (default): one group per ``svi.step`` in Algorithm 5's
    order -- encoder, generator, data discriminator, code discriminator, each discriminator
    ``disc_steps`` times; :attr:`phase` names the next group and :attr:`steps_per_cycle` the
    length of a cycle. Each step uses the minibatch passed to it: a cycle sees one minibatch only
    if the same one is passed to all its steps. ``updates="simultaneous"``: every group from its
    own objective in one step.

    **Values.** ``svi.step`` returns the sum of the step's objectives; ``svi.evaluate_loss`` the
    sum of all four objectives. Neither is a bound on :math:`-\log p(x)`: the adversarial terms
    are classifier estimates, which is the paper's point (Section 4.2). :attr:`last_terms`
    holds each objective and its parts (``"reconstruction"``, ``"code_adversarial"``,
    ``"data_adversarial"``, ``"prior_adversarial"``, ``"data_accuracy"``, ``"code_accuracy"``).

    **The discriminators** are owned by the loss (:attr:`owned_modules`): under ``SVI`` they are
    registered in Pyro's param store as ``prefix + "data_discriminator"`` and ``prefix +
    "code_discriminator"``, so ``pyro.optim`` steps them and per-parameter arguments can target
    them; :meth:`state_dict` and checkpoints save them and ``loss(model, guide).parameters()``
    returns them. Adam with :math:`\beta = (0.5, 0.9)` and Table 3's learning rates::

        def adam_args(name):  # e.g. "data_discriminator.0.weight", "decoder.0.weight"
            lr = 5e-4 if "discriminator" in name else 1e-4
            return {"lr": lr, "betas": (0.5, 0.9)}

        loss = VGHLoss(data_discriminator=d_net, code_discriminator=c_net, variant="vgh++")
        svi = SVI(model, guide, pyro.optim.Adam(adam_args), loss=loss)
        for _ in range(num_cycles):
            for _ in range(loss.steps_per_cycle):
                svi.step(x_batch)

    :param torch.nn.Module data_discriminator: :math:`D`, values of the observed site to logits.
    :param torch.nn.Module code_discriminator: :math:`C`, values of the latent site to logits.
    :param str variant: ``"vgh"`` (the data discriminator sees reconstructions, eq. 8) or
        ``"vgh++"`` (reconstructions and prior samples, eq. 9).
    :param str updates: ``"cyclic"`` or ``"simultaneous"``.
    :param int disc_steps: repeats of each discriminator phase per cycle (cyclic only).
    :param str generator_loss: ``"logit"`` or ``"non_saturating"``: the form of :math:`R_C` and
        :math:`R_D`.
    :param bool encoder_data_adversarial: also give the encoder :math:`R_D(\hat x)`.
    :param float real_weight: :math:`w > 0`, the weight of the data discriminator's real term.
    :param float encoder_reconstruction_weight: :math:`\lambda_E \ge 0`.
    :param float generator_reconstruction_weight: :math:`\lambda_G \ge 0`.
    :param str prefix: prefix of the discriminators' names in Pyro's param store.
    :param int num_particles: samples per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `Distribution Matching in Variational Inference`,
        Mihaela Rosca, Balaji Lakshminarayanan, Shakir Mohamed (2018)

    [2] `Variational Approaches for Auto-Encoding Generative Adversarial Networks`,
        Mihaela Rosca, Balaji Lakshminarayanan, David Warde-Farley, Shakir Mohamed (2017)

    [3] `Generative Adversarial Nets`,
        Ian Goodfellow, Jean Pouget-Abadie, Mehdi Mirza, Bing Xu, David Warde-Farley, Sherjil
        Ozair, Aaron Courville, Yoshua Bengio (2014)
    """

    def __init__(
        self,
        data_discriminator,
        code_discriminator,
        *,
        variant="vgh",
        updates="cyclic",
        disc_steps=1,
        generator_loss="logit",
        encoder_data_adversarial=False,
        real_weight=1.0,
        encoder_reconstruction_weight=1.0,
        generator_reconstruction_weight=1.0,
        prefix="",
        num_particles=1,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        retain_graph=None,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"VGHLoss: variant must be 'vgh' or 'vgh++', got {variant!r}")
        self.variant = variant
        super().__init__(
            {DATA: data_discriminator, CODE: code_discriminator},
            prior_to_data=variant == "vgh++",
            encoder_data_adversarial=encoder_data_adversarial,
            real_weight=real_weight,
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
    def data_discriminator(self):
        r"""The data discriminator :math:`D`."""
        return self.owned_modules[DATA]

    @property
    def code_discriminator(self):
        r"""The code discriminator :math:`C`."""
        return self.owned_modules[CODE]
