"""The benchmark's original-protocol baseline runs on any split and its summary quotes its figures."""

import importlib.util
import json

from conftest import write_first_round_split, write_params
from lib.config import load_params
from lib.paths import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("benchmark", PROJECT_ROOT / "benchmarks" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

ONE_EPOCH = {"learning_rate": 1e-3, "epochs": 1, "patience": 1}


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
    ours = {"wall_seconds": 4.0, "peak_rss_gib": 1.0, "steps": {"02_cnn.ipynb": 2.0}, "train_images": 20,
            "cnn": {"training_seconds": 2.0, "epochs_run": {"training": 3}, "accuracy": 0.5, "macro_f1": 0.4},
            "mobilenetv2": {"training_seconds": 1.0, "epochs_run": {"head": 1}, "accuracy": 0.5, "macro_f1": 0.4}}
    text = benchmark.summary_markdown({"ours": ours, "baseline": results}, {"cpu_count": "2"}, "abc")
    assert "end to end: **3.00x**" in text
    assert "30.0 training images/s" in text  # 20 images x 3 epochs / 2 s
    json.dumps(results)  # the raw figures are written as JSON
