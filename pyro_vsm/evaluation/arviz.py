r"""Optional export of importance-sampling and AIS diagnostics to ArviZ.

Needs the ``arviz`` extra (``pip install 'pyro-vsm[arviz]'``). Both ArviZ major versions are
supported: ArviZ 0.x gets an :class:`arviz.InferenceData`, ArviZ 1.x (which dropped
``InferenceData``) an :class:`xarray.DataTree`. The layout is the same for both:

``sample_stats`` group
    ``log_weights``: the log weights, dims ``("chain", "draw", "point")`` with one chain and one
    draw per importance sample (``S``) or AIS chain (``C``); ``("chain", "draw")`` when the
    diagnostics have no data-point dimension (a log-partition function).

``diagnostics`` group
    One variable per diagnostic, dims ``("point",)`` (or scalar): ``ess`` (Kish effective sample
    size), ``khat`` (importance sampling only, when present), ``stderr``, ``acceptance_rate`` and
    ``step_size`` (AIS only), and ``estimate`` when estimates are passed. Its attributes hold
    ``estimator`` (``"importance"`` or ``"ais"``), ``num_temperatures`` (AIS) and ``data_plate``
    (when not ``None``).

``diagnostics`` is not in the ArviZ 0.x schema; it is passed as a custom group, which ArviZ 0.21
and later accept without a warning.
"""

import numpy as np
import torch

from .diagnostics import AISDiagnostics, ImportanceDiagnostics

__all__ = ["to_arviz"]

WEIGHTS_GROUP = "sample_stats"
DIAGNOSTICS_GROUP = "diagnostics"
POINT_DIM = "point"

_MISSING_EXTRA = "to_arviz needs the optional extra: pip install 'pyro-vsm[arviz]'"


def _to_numpy(value):
    r"""Detached CPU NumPy copy of a tensor (or anything :func:`torch.as_tensor` takes)."""
    t = torch.as_tensor(value).detach()
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16
        t = t.float()
    return t.cpu().numpy()


def _per_point(name, value, batch_shape):
    r"""``(dims, array)`` for a per-data-point quantity of shape ``batch_shape`` (or scalar)."""
    array = _to_numpy(value)
    if array.shape == tuple(batch_shape):
        return ((POINT_DIM,) if len(batch_shape) else ()), array
    if array.shape == ():
        return (), array
    raise ValueError(
        f"to_arviz: {name} has shape {tuple(array.shape)}, expected {tuple(batch_shape)} "
        "(the batch shape of the log weights) or a scalar"
    )


def _arviz_major_version(az):
    return int(az.__version__.split(".", 1)[0])


def _inference_data(az, groups):
    r"""ArviZ 0.x container (``diagnostics`` is a custom group, which 0.21+ accepts silently)."""
    return az.InferenceData(warn_on_custom_groups=False, **groups)


def to_arviz(diagnostics, estimates=None):
    r"""Export importance-sampling or AIS diagnostics to ArviZ.

    The log weights go to the ``sample_stats`` group as ``log_weights`` with dims
    ``("chain", "draw", "point")`` (one chain, one draw per importance sample or AIS chain), the
    per-point diagnostics to a ``diagnostics`` group with dims ``("point",)``; without a data-point
    dimension (a log-partition function) the ``point`` dim is left out everywhere. See the module
    docstring for the variable names and attributes. Tensors are detached and copied to the CPU;
    dtypes are kept (``bfloat16`` becomes ``float32``).

    :param diagnostics: the diagnostics returned next to an estimate.
    :type diagnostics: ~pyro_vsm.evaluation.diagnostics.ImportanceDiagnostics or
        ~pyro_vsm.evaluation.diagnostics.AISDiagnostics
    :param estimates: optional log estimates (log-likelihoods or a log-partition function) with the
        batch shape of the diagnostics, stored as ``estimate`` in the ``diagnostics`` group.
    :type estimates: torch.Tensor or None
    :returns: an :class:`arviz.InferenceData` with ArviZ 0.x, an :class:`xarray.DataTree` with
        ArviZ 1.x, with the groups ``sample_stats`` and ``diagnostics``.
    :raises ImportError: if ArviZ is not installed.
    :raises TypeError: if ``diagnostics`` is of neither diagnostics class.
    :raises ValueError: if the log weights have more than two dimensions, or a diagnostic does not
        have their batch shape.
    """
    if isinstance(diagnostics, ImportanceDiagnostics):
        estimator = "importance"
        per_point = {
            "ess": diagnostics.ess,
            "khat": diagnostics.khat,
            "stderr": diagnostics.stderr,
        }
    elif isinstance(diagnostics, AISDiagnostics):
        estimator = "ais"
        per_point = {
            "ess": diagnostics.ess,
            "stderr": diagnostics.stderr,
            "acceptance_rate": diagnostics.acceptance_rate,
            "step_size": diagnostics.step_size,
        }
    else:
        raise TypeError(
            "to_arviz expects ImportanceDiagnostics or AISDiagnostics, got "
            f"{type(diagnostics).__name__}"
        )
    if estimates is not None:
        per_point["estimate"] = estimates

    try:
        import arviz as az
        import xarray as xr
    except ImportError as e:
        raise ImportError(_MISSING_EXTRA) from e

    log_weights = _to_numpy(diagnostics.log_weights)
    if log_weights.ndim not in (1, 2):
        raise ValueError(
            f"to_arviz: log_weights must have shape [S] or [S, N], got {tuple(log_weights.shape)}"
        )
    num_draws, batch_shape = log_weights.shape[0], log_weights.shape[1:]
    point_dims = (POINT_DIM,) if batch_shape else ()

    coords = {"chain": np.arange(1), "draw": np.arange(num_draws)}
    if batch_shape:
        coords[POINT_DIM] = np.arange(batch_shape[0])
    point_coords = {POINT_DIM: coords[POINT_DIM]} if batch_shape else {}

    from pyro_vsm import __version__

    attrs = {"inference_library": "pyro-vsm", "inference_library_version": __version__}
    weights = xr.Dataset(
        {"log_weights": (("chain", "draw", *point_dims), log_weights[None])},
        coords=coords,
        attrs=dict(attrs),
    )

    attrs["estimator"] = estimator
    if isinstance(diagnostics, AISDiagnostics):
        attrs["num_temperatures"] = int(diagnostics.num_temperatures)
    if diagnostics.data_plate is not None:  # netCDF attributes cannot be None
        attrs["data_plate"] = diagnostics.data_plate
    variables = {
        name: _per_point(name, value, batch_shape)
        for name, value in per_point.items()
        if value is not None
    }
    per_point_ds = xr.Dataset(variables, coords=point_coords, attrs=attrs)

    groups = {WEIGHTS_GROUP: weights, DIAGNOSTICS_GROUP: per_point_ds}
    if _arviz_major_version(az) >= 1:
        # ArviZ 1.x works on xarray.DataTree; every group is a child node of the root.
        return xr.DataTree.from_dict(groups)
    return _inference_data(az, groups)
