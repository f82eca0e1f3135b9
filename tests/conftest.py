"""Shared fixtures: HELP's real data from $HELP_DATA_DIR (default ../shared/data/help), loaded once."""
import pytest

from help_plugin.data import load_help_data


@pytest.fixture(scope="session")
def nb201():
    return load_help_data("nasbench201")


@pytest.fixture(scope="session")
def fbnet():
    return load_help_data("fbnet")


@pytest.fixture(scope="session")
def ofa():
    return load_help_data("ofa")
