import logging
import os

import pytest
import torch

# Two cores on the reference machine: keep intra-op threads bounded and results reproducible.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_sessionstart(session):
    """Build (or load) medvid's CPU kernels once, up front: on a fresh machine the build takes about a
    minute, which must not land inside a test that waits on a server or a subprocess with a timeout."""
    import medvid.models.kernels as kernels

    kernels.cpu_ops()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _isolated_medvid_logger():
    """Each test starts with the medvid logger as it was and propagating (so caplog sees it); handlers
    a test's run added (console, log.txt) are removed afterwards, so they never outlive the streams
    and folders of that test."""
    logger = logging.getLogger("medvid")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    logger.propagate = True
    yield
    for h in logger.handlers:
        if h not in saved[0]:
            h.close()
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]


@pytest.fixture(params=["kernel", "eager"])
def conv_path(request, monkeypatch):
    """Run a test with medvid's CPU kernels (convolution, gated norm) and again with eager PyTorch.
    (tests/models/test_cpu_kernels.py fails if the kernels do not build here.)"""
    import medvid.models.kernels as kernels

    if request.param == "eager":
        monkeypatch.setattr(kernels, "_CPU", None)
    elif kernels.cpu_ops() is None:
        pytest.skip("medvid's CPU kernels are not built on this machine")
    return request.param
