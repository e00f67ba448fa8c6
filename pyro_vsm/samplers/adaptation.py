r"""Step-size adaptation toward a target acceptance rate (Robbins–Monro), one step size per target.

The chains are shaped ``(C, *batch)``: ``C`` chains for each element of ``batch`` (one target per
data point, for instance). The state of the adaptation is the tensor
:math:`\log\epsilon` of shape ``batch``; after each transition

.. math::

    \log\epsilon \leftarrow \log\epsilon + \eta\,(\bar a - a^*),

where :math:`\bar a` is the acceptance probability averaged over the ``C`` chains of a target and
:math:`a^*` the target rate. A constant gain :math:`\eta` tracks a target that moves (the
intermediate distributions of annealed importance sampling). Optionally each chain's step size is
drawn uniformly from :math:`\epsilon(1 \pm \text{jitter})` at every transition, which breaks the
periodic trajectories that a fixed step size and path length produce on near-Gaussian targets.

References:

[1] `A stochastic approximation method`,
    Herbert Robbins, Sutton Monro (1951)
"""

import math

import torch

__all__ = ["StepSizeAdaptation"]


class StepSizeAdaptation:
    r"""Robbins–Monro adaptation of :math:`\log\epsilon` per target, with optional jitter.

    The object holds only the settings; the state (:math:`\log\epsilon`) is passed explicitly::

        adapt = StepSizeAdaptation(step_size=0.1, target_accept=0.65)
        log_step = adapt.init(batch_shape, like=z)
        eps = adapt.sample(log_step, z.shape[:1], generator)  # (C, *batch)
        ...
        log_step = adapt.update(log_step, accept_prob)

    :param step_size: initial step size (a positive number or a tensor broadcastable to the batch).
    :param float target_accept: :math:`a^* \in (0, 1)`.
    :param float adapt_rate: gain :math:`\eta \ge 0` (0 keeps the step size fixed).
    :param float jitter: relative half-width of the per-chain uniform draw, in ``[0, 1)``.
    """

    def __init__(self, step_size=0.1, target_accept=0.65, adapt_rate=0.05, jitter=0.0):
        for name, value in (
            ("target_accept", target_accept),
            ("adapt_rate", adapt_rate),
            ("jitter", jitter),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
        if not (adapt_rate >= 0 and math.isfinite(adapt_rate)):
            raise ValueError(f"adapt_rate must be non-negative, got {adapt_rate!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        if isinstance(step_size, bool) or (
            not torch.is_tensor(step_size)
            and not (isinstance(step_size, int | float) and step_size > 0)
        ):
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        self.step_size = step_size
        self.target_accept = float(target_accept)
        self.adapt_rate = float(adapt_rate)
        self.jitter = float(jitter)

    def init(self, batch_shape, like):
        r"""The initial :math:`\log\epsilon`.

        :param batch_shape: shape of the batch of targets.
        :param torch.Tensor like: reference tensor for dtype and device.
        :returns: tensor of shape ``batch_shape``.
        """
        s = torch.as_tensor(self.step_size, dtype=like.dtype, device=like.device)
        return s.log().expand(batch_shape).clone()

    def sample(self, log_step, chain_shape, generator=None):
        r"""Per-chain step sizes.

        :param torch.Tensor log_step: the state :math:`\log\epsilon`, shape ``batch``.
        :param chain_shape: shape of the chain dims left of the batch.
        :param torch.Generator generator: optional source of the jitter.
        :returns: tensor of shape ``(*chain_shape, *batch)``.
        """
        eps = log_step.exp().expand(tuple(chain_shape) + tuple(log_step.shape))
        if not self.jitter:
            return eps
        u = torch.rand(eps.shape, dtype=eps.dtype, device=eps.device, generator=generator)
        return eps * (1.0 + self.jitter * (2 * u - 1))

    def update(self, log_step, accept_prob):
        r"""The next :math:`\log\epsilon`.

        :param torch.Tensor log_step: the state :math:`\log\epsilon`, shape ``batch``.
        :param torch.Tensor accept_prob: acceptance probabilities of the last transition,
            shape ``(C, *batch)``.
        :returns: the updated state.
        """
        if not self.adapt_rate:
            return log_step
        return torch.add(log_step, accept_prob.mean(0) - self.target_accept, alpha=self.adapt_rate)

    def search(self, log_step, accept_fn, max_doublings=8):
        r"""Doubles (or halves) each target's step size until the mean acceptance of a trial
        transition crosses ``target_accept``, the heuristic of Hoffman & Gelman's NUTS, before
        any adaptation (the trial transitions are discarded).

        :param torch.Tensor log_step: the initial :math:`\log\epsilon`, shape ``batch``.
        :param accept_fn: ``log_step -> accept_prob`` of one trial transition, ``(C, *batch)``.
        :param int max_doublings: most trial transitions.
        :returns: the new :math:`\log\epsilon`: the last value whose acceptance is above the
            target (or the smallest tried, when none is).
        """
        step = math.log(2.0)
        up = done = None
        for _ in range(max_doublings):
            above = accept_fn(log_step).mean(0) > self.target_accept
            if up is None:
                up, done = above, torch.zeros_like(above)
            crossed = ~done & (above != up)
            # going up, the crossing step was too large: back to the last one above the target
            log_step = torch.where(crossed & up, log_step - step, log_step)
            done = done | crossed
            if bool(done.all()):
                break
            log_step = torch.where(done, log_step, log_step + torch.where(up, step, -step))
        return log_step
