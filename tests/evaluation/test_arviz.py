import sys
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    # ArviZ 0.x announces its 1.0 refactor on import
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    az = pytest.importorskip("arviz")
xr = pytest.importorskip("xarray")

from pyro_vsm.evaluation.arviz import to_arviz  # noqa: E402
from pyro_vsm.evaluation.diagnostics import AISDiagnostics, ImportanceDiagnostics  # noqa: E402
from pyro_vsm.ops.weights import (  # noqa: E402
    effective_sample_size,
    log_mean_exp,
    log_mean_stderr,
)

ARVIZ_1 = int(az.__version__.split(".", 1)[0]) >= 1
DTYPES = [torch.float32, torch.float64]


def _log_weights(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 - 3.0).to(dtype)


def _importance(dtype, num_samples=200, num_points=5, data_plate="data"):
    shape = (num_samples, num_points) if num_points is not None else (num_samples,)
    lw = _log_weights(shape, dtype)
    g = torch.Generator().manual_seed(1)
    khat = torch.rand(shape[1:], generator=g, dtype=torch.float64).to(dtype)
    diag = ImportanceDiagnostics(
        log_weights=lw,
        ess=effective_sample_size(lw),
        khat=khat,
        stderr=log_mean_stderr(lw),
        data_plate=data_plate,
    )
    return diag, log_mean_exp(lw)


def _ais(dtype, num_chains=64, batch=(4,), data_plate="data"):
    lw = _log_weights((num_chains, *batch), dtype, seed=2)
    g = torch.Generator().manual_seed(3)
    diag = AISDiagnostics(
        log_weights=lw,
        stderr=log_mean_stderr(lw),
        ess=effective_sample_size(lw),
        acceptance_rate=torch.rand(batch, generator=g, dtype=torch.float64).to(dtype),
        step_size=torch.rand(batch, generator=g, dtype=torch.float64).to(dtype) * 0.1,
        num_temperatures=50,
        data_plate=data_plate,
    )
    return diag, log_mean_exp(lw)


def _export(diag, estimates=None):
    """to_arviz, failing on any warning it emits."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return to_arviz(diag, estimates)


def _groups(out):
    if ARVIZ_1:
        assert isinstance(out, xr.DataTree)
        return sorted(out.children)
    assert isinstance(out, az.InferenceData)
    return sorted(out.groups())


def _group(out, name):
    return out[name].to_dataset() if ARVIZ_1 else getattr(out, name)


def _assert_round_trip(da, tensor, dims):
    assert da.dims == dims
    assert da.dtype == np.dtype(str(tensor.dtype).removeprefix("torch."))
    np.testing.assert_array_equal(da.values, tensor.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_importance_per_point(dtype):
    diag, estimates = _importance(dtype)
    out = _export(diag, estimates)
    assert _groups(out) == ["diagnostics", "sample_stats"]

    weights = _group(out, "sample_stats")
    assert list(weights.data_vars) == ["log_weights"]
    lw = weights["log_weights"]
    assert dict(lw.sizes) == {"chain": 1, "draw": 200, "point": 5}
    _assert_round_trip(lw.isel(chain=0), diag.log_weights, ("draw", "point"))
    np.testing.assert_array_equal(weights["draw"].values, np.arange(200))
    np.testing.assert_array_equal(weights["point"].values, np.arange(5))

    per_point = _group(out, "diagnostics")
    assert sorted(per_point.data_vars) == ["ess", "estimate", "khat", "stderr"]
    for name, tensor in [
        ("ess", diag.ess),
        ("khat", diag.khat),
        ("stderr", diag.stderr),
        ("estimate", estimates),
    ]:
        _assert_round_trip(per_point[name], tensor, ("point",))
    assert per_point.attrs["estimator"] == "importance"
    assert per_point.attrs["data_plate"] == "data"
    assert "num_temperatures" not in per_point.attrs


@pytest.mark.parametrize("dtype", DTYPES)
def test_ais_per_point(dtype):
    diag, _ = _ais(dtype)
    out = _export(diag)
    assert _groups(out) == ["diagnostics", "sample_stats"]

    lw = _group(out, "sample_stats")["log_weights"]
    assert lw.dims == ("chain", "draw", "point") and lw.shape == (1, 64, 4)
    _assert_round_trip(lw.isel(chain=0), diag.log_weights, ("draw", "point"))

    per_point = _group(out, "diagnostics")
    assert sorted(per_point.data_vars) == ["acceptance_rate", "ess", "stderr", "step_size"]
    for name in ["ess", "stderr", "acceptance_rate", "step_size"]:
        _assert_round_trip(per_point[name], getattr(diag, name), ("point",))
    assert per_point.attrs["estimator"] == "ais"
    assert per_point.attrs["num_temperatures"] == 50


@pytest.mark.parametrize("dtype", DTYPES)
def test_ais_log_partition_scalar_batch(dtype):
    diag, estimate = _ais(dtype, batch=(), data_plate=None)
    out = _export(diag, estimate)
    assert _groups(out) == ["diagnostics", "sample_stats"]

    weights = _group(out, "sample_stats")
    assert "point" not in weights.dims
    lw = weights["log_weights"]
    assert dict(lw.sizes) == {"chain": 1, "draw": 64}
    _assert_round_trip(lw.isel(chain=0), diag.log_weights, ("draw",))

    per_point = _group(out, "diagnostics")
    assert sorted(per_point.data_vars) == [
        "acceptance_rate",
        "ess",
        "estimate",
        "stderr",
        "step_size",
    ]
    for name in ["ess", "stderr", "acceptance_rate", "step_size"]:
        _assert_round_trip(per_point[name], getattr(diag, name), ())
    _assert_round_trip(per_point["estimate"], estimate, ())
    assert "data_plate" not in per_point.attrs


def test_importance_without_plate_and_khat():
    diag, _ = _importance(torch.float64, num_points=None, data_plate=None)
    diag.khat = None
    out = _export(diag)
    assert _group(out, "sample_stats")["log_weights"].dims == ("chain", "draw")
    per_point = _group(out, "diagnostics")
    assert sorted(per_point.data_vars) == ["ess", "stderr"]
    assert per_point["ess"].dims == ()


def test_detaches_and_scalar_step_size():
    diag, _ = _ais(torch.float32)
    diag.log_weights = diag.log_weights.clone().requires_grad_()
    diag.step_size = torch.tensor(0.05)  # one step size shared by all points
    out = _export(diag)
    _assert_round_trip(
        _group(out, "sample_stats")["log_weights"].isel(chain=0),
        diag.log_weights.detach(),
        ("draw", "point"),
    )
    assert _group(out, "diagnostics")["step_size"].dims == ()


def test_arviz_functions_on_exported_weights():
    diag, _ = _importance(torch.float64)
    out = _export(diag)
    if ARVIZ_1:
        ess = az.ess(out, group="sample_stats", var_names=["log_weights"])
        summary = az.summary(out, group="sample_stats", var_names=["log_weights"])
    else:
        ess = az.ess(out.sample_stats, var_names=["log_weights"])
        summary = az.summary(out, group="sample_stats", var_names=["log_weights"])
        # PSIS on the exported weights: one k-hat per data point, normalised smoothed weights
        stacked = out.sample_stats["log_weights"].stack(__sample__=("chain", "draw"))
        smoothed, khat = az.psislw(stacked)
        assert khat.dims == ("point",) and khat.shape == (5,)
        np.testing.assert_allclose(
            np.exp(smoothed.values).sum(axis=smoothed.dims.index("__sample__")), 1.0, rtol=1e-10
        )
    ess_lw = ess["log_weights"]
    assert ess_lw.dims == ("point",)
    assert np.all(np.isfinite(ess_lw.values)) and np.all(ess_lw.values > 0)
    assert len(summary) == 5


def test_rejects_other_objects_and_bad_shapes():
    with pytest.raises(TypeError, match="ImportanceDiagnostics or AISDiagnostics"):
        to_arviz(object())
    diag, _ = _importance(torch.float64)
    with pytest.raises(ValueError, match="estimate has shape"):
        to_arviz(diag, torch.zeros(3))
    diag.log_weights = diag.log_weights[..., None]
    with pytest.raises(ValueError, match="log_weights"):
        to_arviz(diag)


def test_missing_arviz_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)
    diag, _ = _importance(torch.float32)
    with pytest.raises(ImportError, match=r"pip install 'pyro-vsm\[arviz\]'") as info:
        to_arviz(diag)
    assert str(info.value) == "to_arviz needs the optional extra: pip install 'pyro-vsm[arviz]'"


def test_netcdf_round_trip(tmp_path):
    pytest.importorskip("h5netcdf")
    diag, estimates = _ais(torch.float32)
    out = _export(diag, estimates)
    path = tmp_path / "ais.nc"
    out.to_netcdf(path, engine="h5netcdf")
    if ARVIZ_1:
        loaded = xr.open_datatree(path, engine="h5netcdf")
    else:
        loaded = az.from_netcdf(path)
    assert _groups(loaded) == ["diagnostics", "sample_stats"]
    xr.testing.assert_identical(_group(loaded, "diagnostics"), _group(out, "diagnostics"))
    xr.testing.assert_identical(_group(loaded, "sample_stats"), _group(out, "sample_stats"))
