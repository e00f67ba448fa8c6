"""Shared machinery of the score-matching losses: particles, traces, totals, non-finite checks."""

import math

import torch
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import torch_item

from .scores import check_laplacian_method
from .tracing import DataLocator, NonFiniteLossError, trace_scores


class ScoreLoss(ELBO):
    """Base class: an :class:`~pyro.infer.ELBO` whose objective is built from scores.

    :param int num_particles: number of samples ``S`` from the guide per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`; guessed from one run of the
        model and guide when particles are vectorized and it is not given.
    :param bool vectorize_particles: draw the ``S`` particles in one vectorized pass (a
        ``pyro.plate`` of size ``S`` left of the model's plates) instead of a Python loop.
    :param str laplacian: ``"auto"``, ``"exact"`` or ``"hutchinson"``; see
        :func:`pyro_vsm.infer.scores.score_and_laplacian`.
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    """

    def __init__(
        self,
        *,
        num_particles=1,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        laplacian="auto",
        num_projections=1,
        retain_graph=None,
    ):
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        check_laplacian_method(laplacian)
        if int(num_projections) != num_projections or num_projections < 1:
            raise ValueError(f"num_projections must be a positive integer, got {num_projections!r}")
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            retain_graph=retain_graph,
        )
        self.laplacian = laplacian
        self.num_projections = int(num_projections)
        self._locator = DataLocator()

    def _get_trace(self, model, guide, args, kwargs):
        # the plain (model_trace, guide_trace) pair, as Trace_ELBO returns it
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _score_traces(self, model, guide, args, kwargs, **options):
        """Yields one :class:`~pyro_vsm.infer.tracing.ScoreTraces` per particle (or one for all)."""
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
        """Sums per-site terms over traces and divides by ``num_particles``."""
        sites = {}
        for terms in per_trace_terms:
            for name, t in terms.items():
                sites[name] = sites.get(name, 0.0) + t / self.num_particles
        total = sum(sites.values()) if sites else torch.tensor(0.0)
        return total, sites

    def _check_finite(self, value, sites, where):
        """Raises :class:`NonFiniteLossError` naming the offending sites (one host sync)."""
        v = torch_item(value)
        if math.isfinite(v):
            return v
        bad = [n for n, t in sites.items() if not math.isfinite(torch_item(t))]
        culprit = f"site(s) {', '.join(repr(b) for b in bad)}" if bad else "the sum of all sites"
        raise NonFiniteLossError(
            f"{type(self).__name__}: non-finite loss ({v}) at {where}; first non-finite term "
            f"from {culprit}. Check the data, the learning rate and the likelihood's scale."
        )
