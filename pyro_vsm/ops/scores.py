r"""Scores and Laplacians of observation densities.

For an observed site with density :math:`p(x \mid z)` these helpers return the data score
:math:`s(x) = \nabla_x \log p(x \mid z)` and its divergence (the Laplacian of the log-density)
:math:`\Delta_x \log p(x \mid z) = \nabla_x \cdot s(x)`, per element of the site's batch shape
(so per particle and per data point), at fixed :math:`z`.

Closed forms are used where the family allows them:

* ``Normal(loc, scale)`` (also inside ``Independent``/``to_event`` and ``expand``):
  :math:`s = -(x - \mu) / \sigma^2` and :math:`\Delta = -\sum_i \sigma_i^{-2}`;
* ``MultivariateNormal(loc, scale_tril=L)``: :math:`s = -\Sigma^{-1}(x - \mu)` and
  :math:`\Delta = -\operatorname{tr}\Sigma^{-1} = -\lVert L^{-1} \rVert_F^2`.

Everything else goes through autograd: the score by one backward pass through ``log_prob``, the
Laplacian either exactly (one backward pass per event dimension, for small events) or by
Hutchinson's estimator :math:`\mathbb{E}_v[v^\top \nabla_x (v^\top s)]` with Rademacher ``v``, whose
expectation is the exact trace because :math:`\mathbb{E}[v v^\top] = I`.
"""

import math

import torch
import torch.distributions as tdist
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.distributions.util import sum_rightmost

LAPLACIAN_METHODS = ("auto", "exact", "hutchinson")
#: Largest number of event elements for which ``laplacian="auto"`` uses the exact autograd loop
#: when no closed form is known.
EXACT_LAPLACIAN_MAX_DIM = 16


def _unwrap_gaussian(fn):
    r"""Returns ``(kind, params)`` for Gaussian families with a closed form, else ``None``.

    ``kind`` is ``"normal"`` (params: loc, scale) or ``"mvn"`` (params: loc, scale_tril).
    ``Independent`` and ``ExpandedDistribution`` wrappers are looked through: the caller
    broadcasts the parameters to the site's ``batch_shape + event_shape``.
    """
    while True:
        if isinstance(fn, tdist.Independent):
            fn = fn.base_dist
        elif isinstance(fn, ExpandedDistribution):
            fn = fn.base_dist
        else:
            break
    if isinstance(fn, tdist.Normal):
        return "normal", (fn.loc, fn.scale)
    if isinstance(fn, tdist.MultivariateNormal):
        return "mvn", (fn.loc, fn.scale_tril)
    return None


def has_closed_form(fn):
    r"""Whether :func:`score_and_laplacian` has closed forms for distribution ``fn``.

    :param fn: a distribution.
    """
    return _unwrap_gaussian(fn) is not None


def _event_numel(fn):
    return math.prod(fn.event_shape) if len(fn.event_shape) else 1


def expand_value(fn, value):
    r"""Broadcasts ``value`` to ``fn.batch_shape + fn.event_shape`` (one copy per particle).

    :param fn: a distribution.
    :param torch.Tensor value: a value of ``fn``, broadcastable to its batch and event shape.
    """
    shape = fn.batch_shape + fn.event_shape
    if value.shape != shape:
        value = value.expand(torch.broadcast_shapes(shape, value.shape))
    return value


def _compact(t):
    r"""The same values with every broadcast (zero-stride) dimension narrowed to size 1."""
    for d, (n, stride) in enumerate(zip(t.shape, t.stride(), strict=True)):
        if stride == 0 and n > 1:
            t = t.narrow(d, 0, 1)
    return t


def closed_form_score_and_laplacian(fn, value):
    r"""Closed-form :math:`(\nabla_x \log p(x), \Delta_x \log p(x))` for Gaussian ``fn``.

    :param fn: a (possibly ``Independent`` or expanded) ``Normal`` or ``MultivariateNormal``.
    :param torch.Tensor value: the point ``x``, broadcastable to ``batch_shape + event_shape``.
    :returns: the score, of shape ``batch_shape + event_shape``, and the Laplacian, of shape
        ``batch_shape``. Both stay differentiable in the distribution's parameters.
    """
    kind, params = _unwrap_gaussian(fn)
    full = fn.batch_shape + fn.event_shape
    event_dim = len(fn.event_shape)
    if kind == "normal":
        loc, scale = params
        # a scale broadcast to the data's shape (one γ for every pixel) is read once per
        # distinct value: precision and Laplacian cost nothing per data element
        precision = _compact(scale).pow(-2)
        score = (loc - value) * precision
        precision = precision.reshape((1,) * (len(full) - precision.dim()) + precision.shape)
        repeats = 1
        for n, m in zip(
            full[len(full) - event_dim :],
            precision.shape[precision.dim() - event_dim :],
            strict=True,
        ):
            if m == 1:
                repeats *= n
        lap = -sum_rightmost(precision, event_dim) * repeats
        return score.expand(full), lap.expand(fn.batch_shape)
    loc, scale_tril = params
    diff = (value - loc).unsqueeze(-1)
    half = torch.linalg.solve_triangular(scale_tril, diff, upper=False)
    score = -torch.linalg.solve_triangular(scale_tril.mT, half, upper=True).squeeze(-1)
    eye = torch.eye(scale_tril.shape[-1], dtype=scale_tril.dtype, device=scale_tril.device)
    linv = torch.linalg.solve_triangular(scale_tril, eye, upper=False)
    lap = -linv.pow(2).sum((-1, -2))
    # dims reinterpreted by Independent around the MVN are summed too
    extra = event_dim - 1
    lap = lap.expand(torch.broadcast_shapes(lap.shape, full[:-1]))
    return score.expand(full), sum_rightmost(lap, extra).expand(fn.batch_shape)


def autograd_score(fn, value, create_graph=True):
    r""":math:`\nabla_x \log p(x)` by one backward pass; returns ``(score, leaf)``.

    ``leaf`` is the detached copy of ``value`` (expanded to one copy per batch element) that the
    score was taken at; pass it on to :func:`exact_laplacian` or :func:`hutchinson_laplacian`.

    :param fn: the distribution :math:`p`.
    :param torch.Tensor value: the point ``x``, broadcastable to ``batch_shape + event_shape``.
    :param bool create_graph: keep the score differentiable (needed for a Laplacian).
    """
    leaf = expand_value(fn, value).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (score,) = torch.autograd.grad(fn.log_prob(leaf).sum(), leaf, create_graph=create_graph)
    return score, leaf


def exact_laplacian(score, leaf, event_dim, create_graph=True):
    r"""Exact :math:`\nabla_x \cdot s(x)` by one backward pass per event element.

    :param torch.Tensor score: :math:`s(x)` computed from ``leaf`` with ``create_graph=True``.
    :param torch.Tensor leaf: the tensor ``x`` that ``score`` was computed from.
    :param int event_dim: number of rightmost event dimensions of ``leaf``.
    :param bool create_graph: keep the result differentiable.
    :returns: the Laplacian, of shape ``leaf.shape[:-event_dim]``.
    """
    batch_shape = leaf.shape[: leaf.dim() - event_dim]
    flat_score = score.reshape(batch_shape + (-1,))
    total = torch.zeros(batch_shape, dtype=score.dtype, device=score.device)
    for i in range(flat_score.shape[-1]):
        (g,) = torch.autograd.grad(
            flat_score[..., i].sum(), leaf, create_graph=create_graph, retain_graph=True
        )
        total = total + g.reshape(batch_shape + (-1,))[..., i]
    return total


def hutchinson_laplacian(score, leaf, event_dim, num_projections=1, create_graph=True):
    r"""Unbiased Hutchinson estimate :math:`v^\top \nabla_x (v^\top s(x))`, Rademacher ``v``.

    Averaged over ``num_projections`` independent projections; one backward pass each.

    :param torch.Tensor score: :math:`s(x)` computed from ``leaf`` with ``create_graph=True``.
    :param torch.Tensor leaf: the tensor ``x`` that ``score`` was computed from.
    :param int event_dim: number of rightmost event dimensions of ``leaf``.
    :param int num_projections: number of Rademacher projections averaged over.
    :param bool create_graph: keep the result differentiable.
    :returns: the estimate, of shape ``leaf.shape[:-event_dim]``.
    """
    dims = tuple(range(-event_dim, 0))
    total = 0.0
    for _ in range(num_projections):
        v = torch.empty_like(leaf).bernoulli_(0.5).mul_(2).sub_(1)
        (hv,) = torch.autograd.grad(
            (score * v).sum(), leaf, create_graph=create_graph, retain_graph=True
        )
        total = total + (hv * v).sum(dims) if dims else total + hv * v
    return total / num_projections


def check_laplacian_method(method):
    r"""Raises ``ValueError`` unless ``method`` is one of :data:`LAPLACIAN_METHODS`.

    :param str method: the ``laplacian`` option of a loss or of :func:`score_and_laplacian`.
    """
    if method not in LAPLACIAN_METHODS:
        raise ValueError(f"laplacian must be one of {LAPLACIAN_METHODS}, got {method!r}")


def score_and_laplacian(fn, value, laplacian="auto", num_projections=1, need_laplacian=True):
    r"""Score and Laplacian of ``log fn.log_prob`` at ``value``, per batch element.

    :param fn: the observation distribution :math:`p(x \mid z)`; its parameters may depend on
        model parameters (the results stay differentiable in them).
    :param torch.Tensor value: the observed ``x``.
    :param str laplacian: ``"auto"`` (closed form where known, else exact for at most
        :data:`EXACT_LAPLACIAN_MAX_DIM` event elements, else Hutchinson), ``"exact"`` (closed form
        where known, else the autograd loop) or ``"hutchinson"`` (always the stochastic estimate).
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    :param bool need_laplacian: compute the Laplacian (``False``: the score only).
    :returns: ``(score, laplacian)`` shaped ``batch_shape + event_shape`` and ``batch_shape``;
        the Laplacian is ``None`` when ``need_laplacian`` is false.
    """
    check_laplacian_method(laplacian)
    closed = has_closed_form(fn)
    if closed and (laplacian != "hutchinson" or not need_laplacian):
        score, lap = closed_form_score_and_laplacian(fn, value)
        return score, (lap if need_laplacian else None)
    with torch.enable_grad():
        score, leaf = autograd_score(fn, value, create_graph=True)
        if not need_laplacian:
            return score, None
        event_dim = len(fn.event_shape)
        use_exact = laplacian == "exact" or (
            laplacian == "auto" and _event_numel(fn) <= EXACT_LAPLACIAN_MAX_DIM
        )
        if use_exact:
            lap = exact_laplacian(score, leaf, event_dim)
        else:
            lap = hutchinson_laplacian(score, leaf, event_dim, num_projections)
    return score, lap
