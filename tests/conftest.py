"""Shared fixtures: HELP's real data from $HELP_DATA_DIR (default ../shared/data/help), loaded once."""
import pytest

from help_plugin.data import load_help_data
from help_plugin.predictors import torch_threads


@pytest.fixture(scope="session")
def nb201():
    return load_help_data("nasbench201")


@pytest.fixture(scope="session")
def fbnet():
    return load_help_data("fbnet")


@pytest.fixture(scope="session")
def ofa():
    return load_help_data("ofa")


@pytest.fixture
def one_thread():
    """Small networks run ~50x faster with 1 torch thread than with 2 on a 2-vCPU machine."""
    with torch_threads(1):
        yield
