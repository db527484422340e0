"""benchmarks/step_seconds.py: a finished model step's seconds, cell by cell and as the model recorded them."""

import json

from helpers import load_script

step_seconds = load_script("benchmarks/step_seconds.py")


def code_cell(first_line: str, seconds: float | None) -> dict:
    metadata = {} if seconds is None else {"papermill": {"duration": seconds}}
    return {"cell_type": "code", "source": [f"{first_line}\n", "more()\n"], "metadata": metadata, "outputs": []}


def test_cells_largest_first_and_what_the_model_recorded(tmp_path, capsys):
    round_folder = tmp_path / "rounds" / "seed-42"
    (round_folder / "notebooks").mkdir(parents=True)
    cells = [code_cell("# Parameters", None),
             code_cell("probe_result = notebook.result(probe.compute_probe, ...)", 12.5),
             code_cell("chosen, methods = notebook.result(compute_choice, ...)", 80.0),
             {"cell_type": "markdown", "source": ["# MobileNetV2"], "metadata": {}}]
    (round_folder / "notebooks" / "03_mobilenetv2.ipynb").write_text(json.dumps({"cells": cells}))
    (round_folder / "mobilenetv2").mkdir()
    (round_folder / "mobilenetv2" / "metrics.json").write_text(json.dumps(
        {"training_seconds": 22.0, "training_inputs": {"activation_cache": True, "caching_seconds": 41.5}}))
    (round_folder / "mobilenetv2" / "probe_metrics.json").write_text(
        json.dumps({"feature_seconds": 9.25, "fit_seconds": 3.0}))

    assert step_seconds.main([str(round_folder)]) == 0
    printed = capsys.readouterr().out
    assert "92.5 s in 2 timed cells" in printed
    assert printed.index("| 80.0 | `chosen, methods") < printed.index("| 12.5 | `probe_result")
    for row in ("training_seconds) | 22.0 |", "caching_seconds) | 41.5 |",
                "feature_seconds (probe_metrics.json) | 9.2 |", "fit_seconds (probe_metrics.json) | 3.0 |"):
        assert row in printed
