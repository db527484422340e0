"""The original and the strong training protocol side by side: test accuracy and macro-F1 of each model
(mean over rounds, with the bootstrap interval the comparison computes), and the wall time of each round.

    .venv/bin/python benchmarks/protocols.py [--params params/grocery_fine.yaml params/default.yaml]
        [--protocols original,strong] [--set data.image_size=[112,112] --set evaluation.seeds=[42] ...]
        [--work DIR] [--write benchmarks/RESULTS.md]

Each (params file, protocol) pair runs the whole study (``python -m lib.run --force``, audit to report) in its own
reports folder under ``--work`` (default: a temporary folder, so that the user's ``reports/`` stays as it is), with
``cnn.protocol`` and ``mobilenet_v2.protocol`` both set to the protocol. ``--set`` changes any other field of
every params file (dotted name = YAML value), e.g. a smaller input size for a quick look on a CPU; the printed
table names what was changed. Nothing is tuned here: the runs only report what each protocol gives.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import pandas as pd
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lib.core.config import load_params  # noqa: E402
from lib.core.paths import run_paths  # noqa: E402
from lib.core.provenance import git_commit  # noqa: E402
from lib.core.study import MODELS  # noqa: E402
from lib.data.rounds import evaluation_rounds  # noqa: E402
from lib.report.tables import runtime_words  # noqa: E402

PROTOCOLS = ("original", "strong")
REPORTED_METRICS = ("accuracy", "macro-F1")


def protocol_params(params_file: Path, protocol: str, settings: list[str], folder: Path) -> Path:
    """A copy of ``params_file`` with both models under ``protocol``, the ``--set`` settings applied (validated as
    `./run_all.sh --set` validates them: a bad one stops here, naming the field), and its own run name and
    reports folder."""
    protocols = [f"{model.params_section}.protocol={protocol}" for model in MODELS.values()]
    params = load_params(params_file, [*settings, *protocols])
    name = f"{(yaml.safe_load(params_file.read_text()) or {}).get('run_name', params_file.stem)}-{protocol}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    values = params.study_values() | {"run_name": name, "reports_dir": str(folder / "reports")}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def summarise_run(params_file: Path) -> pd.DataFrame:
    """One row per model of a finished run: its protocol, test accuracy and macro-F1 (mean [interval] over rounds),
    the mean wall time of its notebook per round, and the backend, device and precision it trained with."""
    params = load_params(params_file)
    paths = run_paths(params)
    summary = pd.read_csv(paths.comparison_table("summary")).set_index(["model", "metric"])
    steps = json.loads((paths.root / "steps.json").read_text())
    rows = []
    for model in MODELS.values():
        seconds = [entry["seconds"] for label, entry in steps.items() if label.endswith("/" + model.notebook)]
        row = {"params": params_file.name, "model": model.title, "protocol": model.params(params).protocol,
               "rounds": len(seconds)}
        for metric in REPORTED_METRICS:
            mean, low, high = summary.loc[(model.title, metric), ["mean", "low", "high"]]
            row[metric] = f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
        row["seconds per round"] = round(sum(seconds) / len(seconds))
        metrics = json.loads(paths.round(evaluation_rounds(params.evaluation).first.name).model(model.name).metrics.read_text())
        row["device"] = runtime_words(metrics.get("runtime")) + f", {metrics.get('precision', '?')}"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    lines = [list(map(str, table.columns)), ["---"] * len(table.columns), *table.astype(str).values.tolist()]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", nargs="+", type=Path, default=[Path("params/grocery_fine.yaml")])
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: original,strong")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="NAME=VALUE",
                        help="change a field of every params file, e.g. evaluation.seeds=[42]")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--write", type=Path, help="append the Markdown table to this file (e.g. benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    protocols = args.protocols.split(",")
    if unknown := set(protocols) - set(PROTOCOLS):
        parser.error(f"--protocols: unknown {sorted(unknown)}; choose from {list(PROTOCOLS)}")

    work = args.work or Path(tempfile.mkdtemp(prefix="protocols-"))
    tables = []
    for params_file in args.params:
        for protocol in protocols:
            variant = protocol_params(PROJECT_ROOT / params_file, protocol, args.settings, work)
            print(f"running {variant.name} ...", flush=True)
            subprocess.run([sys.executable, "-m", "lib.run", str(variant), "--force"], cwd=PROJECT_ROOT, check=True)
            tables.append(summarise_run(variant))
    table = pd.concat(tables, ignore_index=True)
    heading = (f"## {date.today()}: `benchmarks/protocols.py --params {' '.join(map(str, args.params))}"
               + "".join(f" --set {s}" for s in args.settings) + f"`, commit {git_commit()}")
    text = f"{heading}\n\n{markdown_table(table)}\n"
    print(text)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
