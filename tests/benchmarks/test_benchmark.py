"""The benchmark's original-protocol baseline runs on any split and its summary quotes its figures."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_first_round_split, write_params

from lib.core.config import load_params
from lib.core.paths import PROJECT_ROOT, RunPaths

spec = importlib.util.spec_from_file_location("benchmark", PROJECT_ROOT / "benchmarks" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

ONE_EPOCH = {"learning_rate": 1e-3, "epochs": 1, "patience": 1}


@pytest.mark.slow
def test_original_protocol_trains_both_models_on_the_split(tmp_path, tiny_params):
    params_file = write_params(tmp_path / "p.yaml", tiny_params | {
        "cnn": {"conv_filters": [4], "dense_units": 8, "training": ONE_EPOCH},
        "mobilenet_v2": {"weights": None, "dense_units": 8, "head": ONE_EPOCH, "fine_tune": ONE_EPOCH},
    })
    images, manifest = write_first_round_split(load_params(params_file))

    results = benchmark.original_protocol(params_file, manifest, tmp_path)
    assert results["train_images"] == int((images["split"] == "train").sum())
    assert results["cnn"]["epochs"] == [1] and results["mobilenetv2"]["epochs"] == [1, 1]
    for model in ("cnn", "mobilenetv2"):
        assert 0.0 <= results[model]["macro_f1"] <= 1.0 and results[model]["training_seconds"] > 0

    results["wall_seconds"], results["peak_rss_gib"] = 12.0, 1.5
    ours = {"wall_seconds": 4.0, "peak_rss_gib": 1.0, "steps": {"02_cnn.ipynb": 2.0},
            "step_peak_rss_gib": {"02_cnn.ipynb": 0.75}, "train_images": 20,
            "cnn": {"training_seconds": 2.0, "epochs_run": {"training": 3}, "accuracy": 0.5, "macro_f1": 0.4},
            "mobilenetv2": {"training_seconds": 1.0, "epochs_run": {"head": 1}, "accuracy": 0.5, "macro_f1": 0.4}}
    text = benchmark.summary_markdown({"ours": ours, "baseline": results}, {"cpu_count": "2"}, "abc")
    assert "end to end: **3.00x**" in text
    assert "30.0 training images/s" in text  # 20 images x 3 epochs / 2 s
    assert "02_cnn.ipynb 2 s / 0.75 GiB" in text
    json.dumps(results)  # the raw figures are written as JSON


def test_parts_can_use_the_split_of_an_earlier_run_with_the_same_data_params(tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "rounds" / benchmark.ROUND).mkdir(parents=True)
    manifest = run / "rounds" / benchmark.ROUND / "split.csv"
    manifest.write_text("relpath,label,split\n")
    same = write_params(tmp_path / "same.yaml", {"evaluation": {"seeds": [1, 2]}})  # other rounds: still the same data
    (run / "params.json").write_text(json.dumps(load_params(same).study_values()))  # as lib.run writes it
    assert benchmark.split_of_earlier_run(run, same) == manifest

    other = write_params(tmp_path / "other.yaml", {"data": {"image_size": [96, 96]}})
    with pytest.raises(SystemExit, match="other 'data' params"):
        benchmark.split_of_earlier_run(run, other)
    with pytest.raises(SystemExit, match="no params or round"):
        benchmark.split_of_earlier_run(tmp_path, same)


def test_the_summary_compares_the_plain_path_with_the_cached_paths_spread():
    def notebook(seconds, macro_f1):
        return {"notebook_seconds": seconds, "training_seconds": seconds / 2, "accuracy": macro_f1,
                "macro_f1": macro_f1, "peak_rss_gib": 2.0}

    spread = {"seeds": [notebook(100.0, 0.95), notebook(90.0, 0.99), notebook(95.0, 0.97)]}
    text = benchmark.summary_markdown({"plain": notebook(600.0, 0.96), "spread": spread, "split_from": "reports/x"},
                                      {"cpu_count": "2"}, "abc")
    assert "**6.0x faster**" in text  # 600 s plain / 100 s cached, both seed 42
    assert "range 0.950-0.990" in text and "0.960, inside that range" in text
    assert "from the earlier run `reports/x`" in text


def test_each_part_writes_its_figures_into_the_work_folder_whatever_its_arguments(tmp_path, monkeypatch):
    # a part's arguments may be paths (an earlier run, a split manifest): they must not end up in the file name
    commands = []

    def child(command, **_):
        commands.append(command)
        out = Path(command[command.index("--json") + 1])
        out.write_text(json.dumps({"seconds": 1.0}))  # fails if the file's folder is not the work folder

    monkeypatch.setattr(benchmark.subprocess, "run", child)
    result = benchmark.run_part("notebook", "plain-42", tmp_path / "p.yaml", tmp_path, ["/runs/default", "42", "plain"])

    assert result == {"seconds": 1.0}
    json_path = Path(commands[0][commands[0].index("--json") + 1])
    assert json_path.parent == tmp_path and commands[0][-3:] == ["/runs/default", "42", "plain"]


def test_the_summary_compares_float32_with_the_automatic_precision_and_the_measured_peak():
    def cnn(seconds, macro_f1, precision):
        return {"notebook_seconds": seconds + 10, "training_seconds": seconds, "epochs_run": {"training": 25},
                "accuracy": macro_f1, "macro_f1": macro_f1, "precision": precision}

    precision = {"float32": cnn(900.0, 0.90, "float32"),
                 "auto": [cnn(600.0, 0.88, "mixed_bfloat16"), cnn(610.0, 0.93, "mixed_bfloat16"),
                          cnn(605.0, 0.91, "mixed_bfloat16")]}
    peak = {"matmul_gflops": {"float32": 220.0, "bfloat16": 400.0}}
    ours = {"wall_seconds": 700.0, "peak_rss_gib": 2.0, "steps": {}, "train_images": 1280,
            "cnn": {"training_seconds": 640.0, "epochs_run": {"training": 25}, "accuracy": 0.9, "macro_f1": 0.9,
                    "precision": "mixed_bfloat16"},
            "mobilenetv2": {"training_seconds": 50.0, "epochs_run": {"head": 10}, "accuracy": 1.0, "macro_f1": 1.0}}
    text = benchmark.summary_markdown({"precision": precision, "peak": peak, "ours": ours}, {"cpu_count": "2"}, "abc")
    assert "**1.50x faster per epoch** (36.0 s against 24.0 s" in text  # 900 s / 25 against 600 s / 25, seed 42
    assert "range 0.880-0.930" in text and "0.900, inside that range" in text
    assert "float32 **220 GFLOP/s**, bfloat16 **400 GFLOP/s**" in text
    # 1280 images x 25 epochs / 640 s = 50 img/s x 2.8 GFLOP = 140 GFLOP/s
    assert "(mixed_bfloat16): 50.0 img/s" in text and "= **70 % of the nominal fp32 peak**" in text
    assert "64 % of the measured float32 peak (220 GFLOP/s), 35 % of the measured bfloat16 peak" in text


protocols_spec = importlib.util.spec_from_file_location("protocols", PROJECT_ROOT / "benchmarks" / "protocols.py")
protocols = importlib.util.module_from_spec(protocols_spec)
protocols_spec.loader.exec_module(protocols)


def test_the_protocol_benchmark_runs_each_params_file_under_each_protocol_with_the_settings_asked(tmp_path, tiny_params):
    params_file = write_params(tmp_path / "tiny.yaml", tiny_params | {"mobilenet_v2": {"dropout": 0.2}})
    variant = protocols.protocol_params(params_file, "strong", ["data.image_size=[24, 24]", "evaluation.seeds=[7]"],
                                        tmp_path / "work")
    params = load_params(variant)
    assert params.cnn.protocol == params.mobilenet_v2.protocol == "strong"
    assert params.mobilenet_v2.fine_tune_layers == "all" and params.mobilenet_v2.dropout == 0.2
    assert params.data.image_size == (24, 24) and params.evaluation.seeds == [7]
    assert params.run_name == "tiny-strong" and params.reports_dir == (tmp_path / "work" / "reports").resolve()
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        protocols.protocol_params(params_file, "original", ["data.image_size"], tmp_path / "work")
    with pytest.raises(Exception, match="cnn.kernel"):
        protocols.protocol_params(params_file, "original", ["cnn.kernel=3"], tmp_path / "work")


@pytest.mark.slow
def test_the_protocol_benchmark_summarises_a_finished_run(tiny_study):
    import importlib.util

    spec = importlib.util.spec_from_file_location("protocols", PROJECT_ROOT / "benchmarks" / "protocols.py")
    protocols = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocols)
    params_file, root, record, _ = tiny_study
    table = protocols.summarise_run(params_file).set_index("model")
    summary = pd.read_csv(RunPaths(root).comparison_table("summary")).set_index(["model", "metric"])
    for name in ("Custom CNN", "MobileNetV2"):
        row = table.loc[name]
        assert row["protocol"] == "original" and row["rounds"] == 2
        mean, low, high = summary.loc[(name, "accuracy"), ["mean", "low", "high"]]
        assert row["accuracy"] == f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
        assert row["device"].startswith("TensorFlow ") and row["device"].endswith(", float32")
        seconds = [e["seconds"] for label, e in record.items() if label.endswith("02_cnn.ipynb" if name == "Custom CNN"
                                                                                  else "03_mobilenetv2.ipynb")]
        assert row["seconds per round"] == round(sum(seconds) / 2)
