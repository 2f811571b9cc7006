"""The training tests use small models, for which a second torch thread only adds contention
on a shared machine: run them on one thread (and restore the setting afterwards)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
