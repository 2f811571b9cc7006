"""Shared pytest configuration.

Tests marked ``gpu`` skip cleanly without a CUDA device. Under pytest-xdist each worker uses
one torch thread, so that two workers on two cores do not oversubscribe them.
"""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def forbid_host_reads(monkeypatch):
    """Every host read of a tensor's value (``item``, ``tolist``, ``bool``, ``int``,
    ``float``, ``index``) raises ``RuntimeError("host read ...")`` while the test runs: on the
    CPU, what CUDA's sync debug mode catches on a GPU."""

    def refuse(*args, **kwargs):
        raise RuntimeError("host read of a tensor's value inside the solver loop")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)
