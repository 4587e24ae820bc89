"""notebooks/quickstart.ipynb runs top to bottom (nbclient, a real kernel) on the tiny model
and toy data, and is committed without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_the_notebook_is_committed_without_outputs() -> None:
    doc = json.loads(NOTEBOOK.read_text())
    for cell in doc["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], "strip the outputs before committing"
            assert cell["execution_count"] is None


def test_the_notebook_runs_from_data_to_a_latency_plot(
    tiny_bert: Path, toy_csv: Path, tmp_path: Path, monkeypatch: object
) -> None:
    import nbformat
    from nbclient import NotebookClient

    env = {
        "SENTISERVE_NB_DATA": str(toy_csv),
        "SENTISERVE_NB_BASE_MODEL": str(tiny_bert),
        "SENTISERVE_NB_WORK": str(tmp_path / "build"),
        "SENTISERVE_NB_REPOSITORY": str(tmp_path / "model_repository"),
        "SENTISERVE_NB_BUILD_ARGS": "--epochs 1 --max-length 64 --batch-size 16 "
        "--learning-rate 3e-3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # type: ignore[attr-defined]
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "positive" in text or "negative" in text
    assert (tmp_path / "build" / "quickstart-latency.png").stat().st_size > 1000
    assert os.path.isdir(tmp_path / "model_repository" / "sentiment")
