"""Fixtures of the layer tests."""

import pytest

from mgcnn.layers import cpu_kernels


@pytest.fixture(scope="module")
def kernels():
    """mgcnn's compiled CPU kernels (built on first use); the test is skipped, saying why, where they cannot be."""
    module = cpu_kernels.load()
    if module is None:
        pytest.skip(f"mgcnn's CPU kernels cannot be built here: {cpu_kernels.status()}")
    return module
