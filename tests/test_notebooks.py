"""Every notebook in notebooks/ executes top to bottom (so examples cannot rot).

The notebooks are stored executed, with their outputs, so that they read on GitHub: after changing one, run
``HELP_PLUGIN_STORE_NOTEBOOKS=1 pytest tests/test_notebooks.py`` to store the outputs of this run.
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "pixel2_scatter.png").exists() or path.name != "quickstart.ipynb"
    if os.environ.get("HELP_PLUGIN_STORE_NOTEBOOKS"):
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        nbformat.write(nb, path)
