r"""The score-matching losses' common base: particles and score traces on the grouped-loss core."""

from .._checks import positive_int
from ..ops.scores import check_laplacian_method
from .data_locator import DataLocator
from .grouped import GroupedLoss
from .traces import trace_scores

__all__ = ["ScoreLoss"]


class ScoreLoss(GroupedLoss):
    r"""A :class:`~pyro_vsm.infer.grouped.GroupedLoss` whose objectives are built from scores.

    :param schedule: the loss's :class:`~pyro_vsm.infer.schedules.Schedule`.
    :param int num_particles: number of samples ``S`` from the guide per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`; guessed from one run of the
        model and guide when particles are vectorized and it is not given.
    :param bool vectorize_particles: draw the ``S`` particles in one vectorized pass (a
        ``pyro.plate`` of size ``S`` left of the model's plates) instead of a Python loop.
    :param str laplacian: ``"auto"``, ``"exact"`` or ``"hutchinson"``; see
        :func:`pyro_vsm.ops.scores.score_and_laplacian`.
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(
        self,
        *,
        schedule=None,
        num_particles=1,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        laplacian="auto",
        num_projections=1,
        retain_graph=None,
    ):
        check_laplacian_method(laplacian)
        super().__init__(
            schedule=schedule,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            retain_graph=retain_graph,
        )
        self.laplacian = laplacian
        self.num_projections = positive_int(num_projections, "num_projections")
        self._locator = DataLocator()

    def _score_traces(self, model, guide, args, kwargs, **options):
        r"""Yields one :class:`~pyro_vsm.infer.traces.ScoreTraces` per particle (or one for all)."""
        common = dict(
            laplacian=self.laplacian,
            num_projections=self.num_projections,
            locator=self._locator,
            loss_name=type(self).__name__,
        )
        common.update(options)
        if self.vectorize_particles:
            if self.max_plate_nesting == float("inf"):
                self._guess_max_plate_nesting(model, guide, args, kwargs)
            yield trace_scores(
                self._vectorized_num_particles(model),
                self._vectorized_num_particles(guide),
                args,
                kwargs,
                num_vectorized=self.num_particles,
                max_plate_nesting=self.max_plate_nesting,
                **common,
            )
        else:
            for _ in range(self.num_particles):
                yield trace_scores(
                    model, guide, args, kwargs, max_plate_nesting=self.max_plate_nesting, **common
                )

    def _average(self, per_trace_terms):
        r"""Sums per-site terms over traces and divides by ``num_particles``: ``(total, sites)``."""
        sites = {}
        for terms in per_trace_terms:
            for name, t in terms.items():
                sites[name] = t if name not in sites else sites[name] + t
        if self.num_particles > 1:
            sites = {name: t / self.num_particles for name, t in sites.items()}
        if not sites:
            raise ValueError(f"{type(self).__name__}: the objective has no terms")
        values = list(sites.values())
        return sum(values[1:], values[0]), sites
