import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The machine's 2 cores are shared: keep every coding test single-threaded."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
