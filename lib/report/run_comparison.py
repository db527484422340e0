"""The comparison page of finished runs (`lib.analysis.run_comparison`): HTML, and PDF where WeasyPrint prints.

Written by ``./compare_runs.sh RUN RUN [...]``, by ``notebooks/06_compare_runs.ipynb`` and at the end of a sweep,
into ``reports/comparisons/<name>/``: ``comparison.html``, ``comparison.pdf``, the figure as ``swept.png`` and
every table as CSV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lib.analysis.run_comparison import RunComparison, compare_runs
from lib.core.paths import PROJECT_ROOT
from lib.report.document import Document, count, escape
from lib.report.render import STYLE, write_pages

COMPARISONS_DIR = "comparisons"  # under reports/


def comparisons_dir(reports_dir: Path) -> Path:
    return Path(reports_dir) / COMPARISONS_DIR


def interval_text(row) -> str:
    return f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def metrics_table(comparison: RunComparison) -> pd.DataFrame:
    """(model, metric) x run: mean over the rounds [95 % bootstrap interval]."""
    table = comparison.metrics.assign(value=comparison.metrics.apply(interval_text, axis=1))
    return table.pivot_table(index=["model", "metric"], columns="run", values="value", aggfunc="first",
                             sort=False)[comparison.runs]


def per_round_table(comparison: RunComparison, column: str) -> pd.DataFrame:
    """(model, round) x run: ``column`` of `RunComparison.per_round` (macro-F1, or the method chosen)."""
    return comparison.per_round.pivot_table(index=["model", "round"], columns="run", values=column,
                                            aggfunc="first", sort=False)[comparison.runs]


def steps_table(comparison: RunComparison) -> pd.DataFrame:
    """step x run: seconds, "reused" where the step was reused from an earlier run."""
    text = comparison.steps.map(lambda s: "–" if pd.isna(s) else f"{s:.1f}")
    return text.where(~comparison.reused, text + " (reused)")


def swept_figure(comparison: RunComparison, metric: str = "macro-F1") -> plt.Figure:
    """The swept setting (the params that differ) against each model's test ``metric``, with its interval."""
    rows = comparison.swept(metric)
    numeric = "value" in rows and pd.api.types.is_numeric_dtype(rows["value"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    settings = list(dict.fromkeys(rows["setting"]))
    for offset, (model, group) in enumerate(rows.groupby("model", sort=False)):
        group = group.sort_values("value") if numeric else group
        x = group["value"].to_numpy() if numeric else group["setting"].map(settings.index).to_numpy() + 0.08 * offset
        ax.errorbar(x, group["mean"], yerr=[group["mean"] - group["low"], group["high"] - group["mean"]],
                    marker="o", capsize=4, label=model, linestyle="-" if numeric else "none")
    if numeric:
        ax.set_xlabel(comparison.params.index[0])
    else:
        ax.set_xticks(range(len(settings)), settings, rotation=20, ha="right", fontsize=8)
        ax.set_xlabel(" / ".join(comparison.params.index) or "run")
    ax.set_ylabel(f"test {metric} (mean over rounds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def comparison_html(comparison: RunComparison, title: str) -> str:
    doc = Document()
    runs = ", ".join(escape(r) for r in comparison.runs)
    parts = [f"<h1>{escape(title)}</h1>", f"<p>{count(len(comparison.runs), 'run')} compared: {runs}. Metrics are "
             "each run's test results over its evaluation rounds: mean [95 % bootstrap interval of the mean].</p>"]
    if comparison.params.empty:
        parts.append("<h2>Params that differ</h2><p>None: the runs used the same params.</p>")
    else:
        parts += ["<h2>Params that differ</h2>",
                  doc.table(comparison.params, f"The params whose values differ between the runs "
                            f"({count(len(comparison.params), 'field')}); every other param is the same.")]
    parts += ["<h2>Test metrics</h2>", doc.table(metrics_table(comparison), "Each model's test metrics per run."),
              doc.figure(swept_figure(comparison), "The setting that differs against each model's test macro-F1, "
                         "with the 95 % bootstrap interval of the mean over the rounds."),
              "<h2>Per round</h2>", doc.table(per_round_table(comparison, "macro-F1"), "Test macro-F1 per round."),
              doc.table(per_round_table(comparison, "method"), "The minority-class method each model used.")]
    parts.append("<h2>Paired tests on the same images</h2>")
    if comparison.paired.empty:
        parts.append("<p>No two runs drew the same split in any round, so no paired test applies.</p>")
    else:
        parts.append(doc.table(comparison.paired.set_index(["model", "round"]),
                               "McNemar's exact test between two runs' predictions of the same model on the same "
                               "test images (the runs drew the same split): the images only one run gets right, "
                               "and the two-sided p-value.", float_format="{:.3g}"))
    if comparison.unpaired:
        parts.append(f"<p>Not paired (different splits): {escape('; '.join(comparison.unpaired))}.</p>")
    parts += ["<h2>Step times</h2>", doc.table(steps_table(comparison), "Wall seconds of each step per run.")]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE.read_text()}</style></head><body><main>{''.join(parts)}</main></body></html>\n")


def write_comparison_page(folders: list[Path], out: Path, title: str = "Runs compared") -> Path:
    """Compare the finished run ``folders`` and write the page and its tables into ``out``; the HTML's path."""
    comparison = compare_runs(folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig = swept_figure(comparison)
    fig.savefig(out / "swept.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    comparison.params.to_csv(out / "params.csv")
    comparison.metrics.to_csv(out / "metrics.csv", index=False)
    comparison.per_round.to_csv(out / "per_round.csv", index=False)
    comparison.paired.to_csv(out / "paired.csv", index=False)
    steps_table(comparison).to_csv(out / "steps.csv")
    write_pages(comparison_html(comparison, title), out / "comparison.html", out / "comparison.pdf")
    return out / "comparison.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compare_runs.sh", description="Compare finished runs side by side.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or run names under --reports")
    parser.add_argument("--reports", default="reports", help="where run names are looked up (default: reports)")
    parser.add_argument("--out", help="the page's folder (default: <reports>/comparisons/<run>-vs-<run>...)")
    args = parser.parse_args(argv)
    reports = (PROJECT_ROOT / args.reports).resolve()
    folders = [Path(r) if Path(r).is_dir() else reports / r for r in args.runs]
    out = Path(args.out) if args.out else comparisons_dir(reports) / "-vs-".join(f.name for f in folders)
    try:
        page = write_comparison_page(folders, out)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Comparison: {page}" + (f" and {page.with_suffix('.pdf')}" if page.with_suffix(".pdf").is_file() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
