"""Every script in examples/ runs in smoke mode (as Pyro's tests/test_examples.py does)."""

import importlib.util
import pathlib

import pytest

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parents[1] / "examples"

# (script, extra arguments); every example must be listed here
EXAMPLES = [
    ("compare_objectives.py", []),
    ("libi.py", []),
    ("energy_prior_vae.py", ["--quiet"]),
    ("fisher_inference_optima.py", []),
    ("mvl_variance.py", []),
    ("mvl_cd1.py", []),
    ("mvl_density.py", []),
    ("sphere_density.py", []),
    ("implicit_vae.py", []),
    ("wae.py", []),
    ("density_ratio_linear.py", ["--quiet"]),
    ("marginal_kl_digits.py", ["--quiet"]),
    ("aae_posteriors.py", []),
    ("hybrids_digits.py", []),
    ("image_objectives.py", ["--quiet"]),
    ("laplace_digits.py", ["--quiet"]),
]


def test_every_example_is_listed():
    on_disk = sorted(p.name for p in EXAMPLES_DIR.glob("*.py"))
    assert on_disk == sorted(name for name, _ in EXAMPLES), "list new examples in EXAMPLES"


@pytest.mark.parametrize("name,extra", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_smoke(name, extra, tmp_path):
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--smoke", "--out", str(tmp_path), *extra])
    assert any(tmp_path.iterdir()), f"{name} wrote nothing to --out"


def _example(name):
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_laplace_digits_logit_transform(tmp_path):
    import torch

    module = _example("laplace_digits.py")
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    y, log_det = module.to_logit(x)
    # log|dx'/dx| per image: the log-determinant of the (diagonal) Jacobian by autograd
    jac = torch.autograd.functional.jacobian(lambda t: module.to_logit(t)[0].sum(0), x)
    diag = jac.reshape(4, 3, 4).diagonal(dim1=0, dim2=2)  # [image, pixel]
    torch.testing.assert_close(log_det, diag.abs().log().sum(-1))
    rows = module.main(["--smoke", "--logit", "--models", "vae", "vamp", "--out", str(tmp_path)])
    assert [r["model"] for r in rows] == [
        "VAE (calibrated), logit",
        "VampPrior (calibrated), logit",
    ]
