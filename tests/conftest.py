import os
from pathlib import Path

import pytest

from help_plugin.data import default_data_dir, load_help_data

DATA = default_data_dir()

requires_data = pytest.mark.skipif(
    not (DATA / "nasbench201").is_dir() and not os.environ.get("CI"),
    reason=f"HELP data not found at {DATA} (set HELP_DATA_DIR)")


@pytest.fixture(scope="session")
def nb201():
    return load_help_data("nasbench201")


@pytest.fixture(scope="session")
def fbnet():
    return load_help_data("fbnet")


@pytest.fixture(scope="session")
def ofa():
    return load_help_data("ofa")
