import pyro
import pytest


@pytest.fixture(autouse=True)
def _fresh_state():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
