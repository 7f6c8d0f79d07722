"""Shared test helpers: every test runs on CPU, in fp32, with small shapes."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, ROOT)
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def root():
    return ROOT


@pytest.fixture(autouse=True)
def _clear_gin():
    import gin

    gin.clear_config()
    yield
    gin.clear_config()
