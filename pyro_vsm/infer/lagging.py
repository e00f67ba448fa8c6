r"""Lagging inference networks: aggressive guide training against posterior collapse."""

import math

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from .._checks import as_call_args, check_int
from ..ops.sites import latent_sites
from .distributed import mean_over_processes
from .elbo_terms import negative_elbo_terms
from .grouped import GroupedLoss, Objective, hide_params
from .schedules import LaggingSchedule

__all__ = ["LaggingInferenceELBO", "aggregate_mutual_information"]


def negative_elbo_estimate(loss, model, guide, args, kwargs, num_particles):
    r"""A float estimate of the negative ELBO with ``num_particles`` particles (and ``loss``'s
    plate settings), without gradients and with params hidden from SVI.

    :param loss: the loss whose ``max_plate_nesting`` and ``vectorize_particles`` are used.
    :param model: the model.
    :param guide: the guide.
    :param tuple args: their positional arguments.
    :param dict kwargs: their keyword arguments.
    :param int num_particles: the number of particles.
    """
    elbo = Trace_ELBO(
        num_particles=num_particles,
        max_plate_nesting=loss.max_plate_nesting,
        vectorize_particles=loss.vectorize_particles,
    )
    with hide_params(), torch.no_grad():
        return elbo.loss(model, guide, *args, **kwargs)


def aggregate_mutual_information(guide, *args, **kwargs):
    r"""He et al.'s estimate of :math:`I_q(x; z)` on a batch, from one run of the guide.

    With one draw :math:`z_i \sim q(z|x_i)` per point,

    .. math::

        \hat I = \frac1N \sum_i \log q(z_i|x_i)
            - \frac1N \sum_i \log \frac1N \sum_j q(z_i|x_j),

    the second term being the aggregate posterior :math:`q(z) = \frac1N\sum_j q(z|x_j)` at the
    draws (``calc_mi`` of He et al., 2019, with a Monte Carlo entropy). Every latent site must be
    a batch of ``N`` conditionally independent distributions (batch shape ``(N,)``, the data
    plate) that depend on ``x`` only; the log-densities of the sites are added.
    """
    with torch.no_grad():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
        own, pair = 0.0, 0.0
        for name, site in latent_sites(trace):
            fn, z = site["fn"], site["value"]
            if len(fn.batch_shape) != 1:
                raise ValueError(
                    f"aggregate_mutual_information: latent site {name!r} must have batch shape "
                    f"(N,) (one distribution per data point), got {tuple(fn.batch_shape)}"
                )
            n = fn.batch_shape[0]
            own = own + fn.log_prob(z)
            pair = pair + fn.log_prob(z.reshape((n, 1) + tuple(fn.event_shape)))  # [i, j]
        if not torch.is_tensor(own):
            raise ValueError("aggregate_mutual_information: the guide has no latent sites")
        log_qz = torch.logsumexp(pair, -1) - math.log(pair.shape[-1])
        return float((own - log_qz).mean())


class LaggingInferenceELBO(GroupedLoss):
    r"""Aggressive inference-network training (He et al., 2019, Algorithm 1) as an SVI loss.

    Training starts in *aggressive* mode: the guide alone is updated on the ELBO (phase
    ``"guide"``) until its objective stops improving, then the model alone takes one ELBO update
    (phase ``"model"``), and this repeats. When the aggressive phase stops paying off the loss
    switches for good to plain joint ELBO updates of model and guide (phase ``"joint"``), i.e.
    ``Trace_ELBO``.

    **Inner stopping rule** (when a run of guide updates ends). The negative ELBO values of the
    guide steps are averaged over consecutive windows of ``inner_window`` steps; the run ends
    after the first window whose average is not lower than the previous window's, or after
    ``max_inner_steps`` guide steps. This is He et al.'s code (windows of 15 sub-iterations, at
    most 100).

    **Outer stopping rule** (when aggressive mode ends). On every ``check_every``-th model step
    the criterion is evaluated first -- after the guide's run of updates, before the model
    update -- on ``validation_data``, or on the arguments of that step if there is none.
    Aggressive mode ends after that model step if the criterion is lower than at the previous
    check (He et al. compare with the previous epoch's value, not the best). The default
    criterion ``"mi"`` is He et al.'s: the mutual information :math:`I_q(x; z)` of the aggregate
    posterior (:func:`aggregate_mutual_information`); ``"elbo"`` uses the ELBO (mean over
    ``criterion_particles`` draws); a callable ``criterion(model, guide, *args, **kwargs) ->
    float`` (higher is better) is accepted too. He et al. check once per epoch: set
    ``check_every`` to the number of minibatches per epoch (1, the default, for full-batch
    training).

    In aggressive mode the group that is not updated stays bit-identical (see the module
    docstring); a parameter read by both model and guide belongs to the model.

    **Several processes** (DDP). Both rules act on the mean over processes: the inner rule on
    the mean of the processes' guide objectives (an estimate on the union of their
    minibatches), the outer rule on the mean of their criteria (for ``"mi"`` without
    ``validation_data``: the mean of the per-minibatch estimates, not the estimate on the union
    of the minibatches). So every process takes the same phase.

    The LiBI paper describes its "lagging" baseline differently ("divide the total number of
    epochs into R equal segments; in each train the inference network alone and then jointly");
    this class implements He et al.'s adaptive rule instead.

    :param int inner_window: guide steps per window of the inner rule.
    :param int max_inner_steps: the most guide steps per model update.
    :param int check_every: model updates between two evaluations of the outer criterion.
    :param criterion: ``"mi"``, ``"elbo"`` or a callable (higher is better).
    :param validation_data: a tensor or a tuple of model arguments for the outer criterion.
    :param dict validation_kwargs: keyword arguments for the outer criterion.
    :param int criterion_particles: particles of the ``"elbo"`` criterion.
    :param int num_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    Attributes: :attr:`phase`, :attr:`aggressive`, :attr:`step` (updates taken),
    :attr:`criterion_history` (the criterion values, in order), :attr:`switch_step` (the step at
    which joint training began, or ``None``).

    References:

    [1] `Lagging Inference Networks and Posterior Collapse in Variational Autoencoders`,
        Junxian He, Daniel Spokoyny, Graham Neubig, Taylor Berg-Kirkpatrick (2019)
    """

    def __init__(
        self,
        *,
        inner_window=15,
        max_inner_steps=100,
        check_every=1,
        criterion="mi",
        validation_data=None,
        validation_kwargs=None,
        criterion_particles=1,
        **kwargs,
    ):
        schedule = LaggingSchedule(inner_window, max_inner_steps, check_every)
        super().__init__(schedule=schedule, **kwargs)
        if not (callable(criterion) or criterion in ("mi", "elbo")):
            raise ValueError(f"criterion must be 'mi', 'elbo' or a callable, got {criterion!r}")
        self.criterion = criterion
        self.criterion_particles = check_int(criterion_particles, "criterion_particles", 1)
        self._validation = as_call_args(validation_data, validation_kwargs, "validation_data")

    @property
    def aggressive(self):
        r"""Whether the loss is still in aggressive mode."""
        return self.schedule.aggressive

    @property
    def criterion_history(self):
        r"""The criterion's values, in order."""
        return self.schedule.criterion_history

    @property
    def switch_step(self):
        r"""The step at which joint training began, or ``None``."""
        return self.schedule.switch_step

    def _criterion_value(self, model, guide, args, kwargs):
        args, kwargs = self._validation or (args, kwargs)
        if callable(self.criterion):
            with hide_params():
                return float(self.criterion(model, guide, *args, **kwargs))
        if self.criterion == "mi":
            with hide_params():
                return aggregate_mutual_information(guide, *args, **kwargs)
        return -negative_elbo_estimate(self, model, guide, args, kwargs, self.criterion_particles)

    def _before_step(self, model, guide, args, kwargs):
        if self.schedule.check_due:
            value = self._criterion_value(model, guide, args, kwargs)
            self.schedule.record_criterion(mean_over_processes(value))

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        terms = negative_elbo_terms(self, model, guide, args, kwargs)
        if phase == "guide":
            params = terms.guide_params
        elif phase == "model":
            params = terms.model_params
        else:
            params = {**terms.model_params, **terms.guide_params}
        return [Objective(phase, terms.value, params, surrogate=terms.surrogate, sites=terms.sites)]

    def _evaluate(self, model, guide, args, kwargs):
        with torch.no_grad():
            return negative_elbo_terms(self, model, guide, args, kwargs).value
