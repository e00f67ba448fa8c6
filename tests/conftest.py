import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_state():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests run many tiny tensor ops: intra-op threads only add overhead (a lot of it when the
    machine is busy), so run single-threaded and restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
