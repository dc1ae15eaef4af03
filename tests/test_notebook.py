"""The Colab quickstart is committed clean and runs top to bottom (on the smoke config)."""

import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "colab" / "quickstart.ipynb"
FIGURES = ("pgr_heatmap.png", "accuracy_bars.png", "training_curves.png", "gain_vs_misfit.png")


def test_committed_notebook_is_valid_and_stripped():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            # Outputs in the committed file are noise in diffs and go stale: strip them.
            assert cell.outputs == [], f"cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count; clear it"


def _text(cell) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out and "text/plain" in out.data:
            parts.append(out.data["text/plain"])
    return "".join(parts)


def test_notebook_runs_on_smoke_config(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("W2SJAX_NOTEBOOK_SMOKE", "1")  # the kernel inherits this environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    # A failing cell raises CellExecutionError with its traceback, which fails the test.
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.perf_counter() - started
    print(f"notebook ran in {elapsed:.0f} s")

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not every cell ran, in order"
    by_id = {c.id: c for c in code}

    table = _text(by_id["table"])
    assert "PGR" in table and "glove-bow" in table and "minilm-l2" in table, table

    out_dir = tmp_path / "runs" / "smoke"
    assert (out_dir / "results.json").is_file()
    for name in FIGURES:
        png = out_dir / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    shown = [o for o in by_id["plots"].outputs if "image/png" in o.get("data", {})]
    assert len(shown) == len(FIGURES)

    loop = _text(by_id["loop"])
    assert "logconf" in loop and "(ceiling)" in loop, loop
