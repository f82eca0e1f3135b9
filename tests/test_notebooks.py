"""Every notebook in notebooks/ executes top to bottom (so examples cannot rot).

The notebooks are stored executed, with their outputs, so that they read on GitHub: after changing one, run
``HELP_PLUGIN_STORE_NOTEBOOKS=1 pytest tests/test_notebooks.py`` to store the outputs of this run (stdout, results
and plots; not stderr, where only the environment's warnings go).
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
            if "outputs" in cell:  # stderr is the environment's warnings (local paths, missing widgets): not stored
                cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        nbformat.write(nb, path)
