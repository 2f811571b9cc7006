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


def pytest_collection_modifyitems(items):
    # Runs of an epoch or two often keep their first epoch; the warning about it has a test
    # of its own (test_train_trainer.py::test_a_first_best_epoch_is_reported).
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("ignore::ctrnn.train.TrainingWarning"))
