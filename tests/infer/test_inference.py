"""Appendix A.5.1: guide gradients of the posterior Fisher divergence for 1-D Gaussians."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vsm import M1Loss

D = torch.float64
# prior N(0, s0²), likelihood N(x; z, sx²), one observation: posterior N(m2, s2²)
S0, SX, X0 = 1.5, 0.8, 1.2
S2 = (1 / S0**2 + 1 / SX**2) ** -0.5
M2 = S2**2 * X0 / SX**2
M1_INIT, S1_INIT = -0.4, 0.6


def model(x):
    z = pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=D), S0))
    pyro.sample("x", dist.Normal(z, SX), obs=x)


def guide(x):
    m1 = pyro.param("m1", torch.tensor(M1_INIT, dtype=D))
    s1 = pyro.param("s1", torch.tensor(S1_INIT, dtype=D))  # unconstrained: grad is d/ds1
    pyro.sample("z", dist.Normal(m1, s1))


def expected(inference):
    m1, s1, m2, s2 = M1_INIT, S1_INIT, M2, S2
    if inference == "kl":  # eq. (29)
        return (m1 - m2) / s2**2, (s1**2 - s2**2) / (s1 * s2**2)
    # eqs. (31) and (32) are gradients of E‖·‖² without the ½ of eq. (5); ours carries the ½
    if inference == "fisher-reparam":  # eq. (31) / 2
        return (m1 - m2) / s2**4, (s1**4 - s2**4) / (s1**3 * s2**4)
    return (m1 - m2) / (s1**2 * s2**2), 2 * (s1**2 - s2**2) / (s1**3 * s2**2)  # eq. (32) / 2


@pytest.mark.parametrize("inference", ["kl", "fisher", "fisher-reparam"])
def test_guide_gradient_matches_appendix_a51(inference):
    x = torch.tensor(X0, dtype=D)
    loss = M1Loss(
        inference=inference, num_particles=20000, vectorize_particles=True, max_plate_nesting=0
    )
    draws = []
    for _ in range(20):
        pyro.get_param_store().clear()
        guide(x)  # create the params
        loss.schedule.step = 0  # a guide step each time
        loss.loss_and_grads(model, guide, x)
        draws.append(
            torch.stack(
                [pyro.param("m1").unconstrained().grad, pyro.param("s1").unconstrained().grad]
            )
        )
    draws = torch.stack(draws)
    mean, se = draws.mean(0), draws.std(0) / len(draws) ** 0.5
    truth = torch.tensor(expected(inference), dtype=D)
    # unbiased in expectation: within 4 standard errors (fixed seed), and the estimator is noisy
    assert ((mean - truth).abs() <= 4 * se + 1e-10).all(), (mean, truth, se)
    if inference != "kl":
        # and the estimate really tells eq. (31) from eq. (32)
        other = "fisher" if inference == "fisher-reparam" else "fisher-reparam"
        wrong = torch.tensor(expected(other), dtype=D)
        assert ((mean - wrong).abs() > 10 * se).any()
