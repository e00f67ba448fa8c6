import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm import M1Loss
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import GaussianVAE, mlp
from pyro_vsm.optim import ForeachAdam, ForeachOptim


def _vae_svi(optim, loss):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = GaussianVAE(mlp(2, (8,), 3), 2, (3,))
    guide = DiagonalNormalEncoder(mlp(3, (8,), 4), 2)
    return SVI(model, guide, optim, loss)


def _train(svi, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        svi.step(torch.randn(16, 3, generator=g), num_data=64)


def _store():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def _per_param_lr(name):
    return {"lr": 0.02 if name.startswith("decoder") else 0.01}


@pytest.mark.parametrize("args", [{"lr": 0.01}, _per_param_lr], ids=["dict", "callable"])
@pytest.mark.parametrize("make_loss", [Trace_ELBO, M1Loss], ids=["Trace_ELBO", "M1Loss"])
def test_same_updates_as_pyro_adam(args, make_loss):
    # M1Loss alternates guide and model steps: SVI passes only one group's tensors each step
    _train(_vae_svi(Adam(args), make_loss()), 12)
    expected = _store()
    optim = ForeachAdam(args)
    _train(_vae_svi(optim, make_loss()), 12)
    got = _store()
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7, msg=k)
    if callable(args):  # tensors with equal arguments share a parameter group
        assert len(optim.optimizer.param_groups) == 2
        assert all(g["foreach"] for g in optim.optimizer.param_groups)


def test_steps_only_the_given_tensors():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(2))
    pyro.clear_param_store()
    pyro.param("a", a)
    pyro.param("b", b)
    optim = ForeachAdam({"lr": 0.1})
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    optim([a, b])
    b_before = b.detach().clone()
    state_b = {k: v.clone() for k, v in optim.optimizer.state[b].items()}
    a.grad, b.grad = torch.ones(3), torch.full((2,), 5.0)
    optim([a])
    assert torch.equal(b.detach(), b_before)
    for k, v in optim.optimizer.state[b].items():
        assert torch.equal(v, state_b[k]), k
    assert torch.equal(b.grad, torch.full((2,), 5.0))  # the held gradient is given back
    assert float(optim.optimizer.state[a]["step"]) == 2.0


def _steps(optim, tensors, start, stop):
    # alternating subsets, as under a phased loss; gradients depend on the values
    a, b = tensors
    for t in range(start, stop):
        chosen = [a, b, (a, b)][t % 3]
        chosen = list(chosen) if isinstance(chosen, tuple) else [chosen]
        for p in chosen:
            p.grad = torch.sin(p.detach() * (t + 1)) + 0.1 * t
        optim(chosen)
        for p in chosen:
            p.grad = torch.zeros_like(p)  # as SVI leaves them


def _tensors():
    pyro.clear_param_store()
    a = pyro.param("a", torch.linspace(-1.0, 1.0, 4)).unconstrained()
    b = pyro.param("b", torch.tensor([0.5, 2.0]), constraint=dist.constraints.positive)
    return a, b.unconstrained()


@pytest.mark.parametrize(
    "first,second",
    [(ForeachAdam, ForeachAdam), (ForeachAdam, Adam), (Adam, ForeachAdam)],
    ids=["foreach-foreach", "foreach-pyro", "pyro-foreach"],
)
def test_state_round_trip_resumes_exactly(first, second):
    tensors = _tensors()
    _steps(ForeachAdam({"lr": 0.05}), tensors, 0, 10)
    expected = [p.detach().clone() for p in tensors]
    tensors = _tensors()
    optim = first({"lr": 0.05})
    _steps(optim, tensors, 0, 5)
    state = optim.get_state()
    assert set(state) == {"a", "b"}
    resumed = second({"lr": 0.05})
    resumed.set_state(state)
    _steps(resumed, tensors, 5, 10)
    for p, e in zip(tensors, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)


def test_rejects_what_is_not_a_torch_optimizer():
    with pytest.raises(TypeError, match="torch.optim.Optimizer class"):
        ForeachOptim(lambda params, lr: None, {"lr": 0.1})


def test_optimizer_without_foreach_argument():
    class PlainSGD(torch.optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params, {"lr": lr})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"])

    pyro.clear_param_store()
    x = torch.nn.Parameter(torch.zeros(2))
    pyro.param("x", x)
    optim = ForeachOptim(PlainSGD, {"lr": 0.5})
    x.grad = torch.ones(2)
    optim([x])
    assert torch.equal(x.detach(), torch.full((2,), -0.5))


def test_pyro_model_sites_unaffected():
    # a model with a constrained parameter: SVI steps the unconstrained leaf
    pyro.clear_param_store()

    def model(x):
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("n", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, s), obs=x)

    def guide(x):  # the model has no latent variables
        return None

    svi = SVI(model, guide, ForeachAdam({"lr": 0.1}), Trace_ELBO())
    for _ in range(50):
        svi.step(torch.full((10,), 3.0))
    assert pyro.param("s").item() > 1.5
