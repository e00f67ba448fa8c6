"""Figure 1 of Wenliang (2022): the joint Fisher divergence gives a biased θ; the ELBO does not."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm import JointFisherLoss

D = torch.float64
GAMMA, ALPHA, THETA_STAR = 0.5, 0.6, 2.0


def model(x):
    theta = pyro.param("theta", torch.tensor(1.5, dtype=D))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=D), 1.0))
        pyro.sample("x", dist.Normal(theta * z, GAMMA**0.5), obs=x)


def guide(x):
    theta = pyro.param("theta", torch.tensor(1.5, dtype=D))
    phi = pyro.param("phi", torch.tensor(0.3, dtype=D))
    v_star = 1 / (1 + theta**2 / GAMMA)  # exact posterior variance; α < 1 imposes a mismatch
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(phi * x, (ALPHA * v_star).sqrt()))


def closed_form_jfd(theta, phi, c):
    """Joint FD (eqs. 6-7) for data x ~ N(0, c), written as E[(A x + B e)²] with z = φx + s e."""
    v = 1 / (1 + theta**2 / GAMMA)
    s = (ALPHA * v).sqrt()
    prec = 1 + theta**2 / GAMMA
    # ∇_z log q/p(z|x) and ∇ₓ log (q π)/p(x, z): coefficients of x and of e
    az_x, az_e = prec * phi - theta / GAMMA, -1 / s + prec * s
    ax_x, ax_e = -1 / c + (1 - theta * phi) / GAMMA, phi / s - theta * s / GAMMA
    return 0.5 * ((az_x**2 + ax_x**2) * c + az_e**2 + ax_e**2)


def minimise(fn, init):
    p = torch.tensor(init, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS(
        [p],
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = fn(p[0], p[1])
        value.backward()
        return value

    opt.step(closure)
    return p.detach()


def data(n=4000):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, generator=g, dtype=D, device="cpu")
    e = torch.randn(n, generator=g, dtype=D, device="cpu")
    return (THETA_STAR * z + GAMMA**0.5 * e).to(torch.get_default_device())


def train(loss, x, steps=1500):
    svi = SVI(model, guide, Adam({"lr": 0.02}), loss=loss)
    for _ in range(steps):
        svi.step(x)
    return pyro.param("theta").item(), pyro.param("phi").item()


def test_joint_fisher_minimiser_is_biased_and_matches_closed_form():
    x = data()
    c = (x**2).mean()  # the objective depends on the sample only through its second moment
    theta_opt, phi_opt = minimise(lambda t, p: closed_form_jfd(t, p, c), [THETA_STAR, 0.5]).tolist()
    assert abs(theta_opt - THETA_STAR) > 0.5  # the population optimum is far from θ* (≈ 1.2)
    theta, phi = train(JointFisherLoss(num_particles=4, vectorize_particles=True), x)
    assert theta == pytest.approx(theta_opt, abs=0.03)
    assert phi == pytest.approx(phi_opt, abs=0.03)


def test_closed_form_matches_estimator_value():
    x = data(500)
    c = (x**2).mean()
    pyro.param("theta", torch.tensor(1.7, dtype=D))
    pyro.param("phi", torch.tensor(0.4, dtype=D))
    loss = JointFisherLoss(num_particles=200, vectorize_particles=True)
    values = torch.tensor([loss.loss(model, guide, x) for _ in range(20)], dtype=D)
    # the estimator drops the data-only constant ½E‖∇ log π‖² = 1/(2c) per point
    exact = (
        closed_form_jfd(torch.tensor(1.7, dtype=D), torch.tensor(0.4, dtype=D), c) - 0.5 / c
    ) * 500
    se = values.std() / 20**0.5
    assert abs(values.mean() - exact) < 4 * se + 1e-8, (values.mean(), exact, se)


def test_trace_elbo_recovers_theta_star():
    theta, _ = train(Trace_ELBO(num_particles=4, vectorize_particles=True), data())
    assert theta == pytest.approx(THETA_STAR, abs=0.1)
