"""The report of a finished study (`lib.report.render`): the run's numbers in its sentences and tables, no code."""

import json
import re

import pandas as pd
import pytest

from lib.core.paths import RunPaths


@pytest.mark.slow
def test_report_is_rendered_with_the_runs_numbers_and_no_code(tiny_study):
    _, root, _, _ = tiny_study
    html = (root.parent / "report.html").read_text()
    assert html == (root / "report.html").read_text()
    # the first round's numbers, in the sentence of the results section that states them (best model first)
    metrics = [json.loads((root / "rounds" / "seed-1" / name / "metrics.json").read_text())
               for name in ("cnn", "mobilenetv2")]
    best, other = sorted(metrics, key=lambda m: m["macro_f1"], reverse=True)
    assert (f"reaches {100 * best['accuracy']:.1f} % test accuracy against {100 * other['accuracy']:.1f} % for"
            in html)
    assert f"macro-F1 {'the same' if round(best['macro_f1'], 3) == round(other['macro_f1'], 3) else 'higher'} " \
           f"({best['macro_f1']:.3f} against {other['macro_f1']:.3f})" in html
    # the statistics over rounds, in the macro-F1 row of their table (one cell per model, in order)
    summary = pd.read_csv(RunPaths(root).comparison_table("summary")).set_index(["model", "metric"])
    cells = [summary.loc[(model, "macro-F1")] for model in ("Custom CNN", "MobileNetV2")]
    row = r"<th>macro-F1</th>\s*" + r"\s*".join(
        re.escape(f"<td>{c['mean']:.3f} ± {c['std']:.3f} [{c['low']:.3f}, {c['high']:.3f}]</td>") for c in cells)
    assert re.search(row, html), "the statistics table's macro-F1 row holds the comparison's summary"
    # the linear probe: a third column of that table, and a warning exactly when a round's fine-tuned model is
    # below its probe on validation beyond the paired interval (the comparison's check)
    assert ("Linear probe (frozen MobileNetV2)", "macro-F1") in summary.index
    below = pd.read_csv(RunPaths(root).comparison_table("probe_check"))["below_probe"].any()
    assert ("Warning: the fine-tuned MobileNetV2 scores below a linear probe" in html) == below
    assert ("the fine-tuned MobileNetV2 is compared with a linear probe" in html) == (not below)
    for section in ("Abstract", "1 Introduction", "2 Data", "3 Methods", "4 Results", "5 Statistical analysis",
                    "6 Discussion", "7 Conclusion and future work", "References", "Appendix: reproducibility"):
        assert section in html
    assert "McNemar" in html and "Limitations." in html and "ECE" in html
    # explanations: Grad-CAM of both models on the same images, the top losses, the most-confused pairs
    assert "Grad-CAM of both models on the same test images" in html and "Top losses:" in html
    assert "most-confused class pairs" in html
    # a user's folder, not the replication: no sentence about the original study; counts in the right number
    assert "original study" not in html and "1,909" not in html and "replicate" not in html
    assert not re.search(r"[a-z]\(s\)", html), "a count with '(s)' instead of its number"
    figures = re.findall(r"<b>Figure (\d+)\.</b>", html)
    assert figures == [str(n) for n in range(1, len(figures) + 1)] and len(figures) >= 9
    assert "<b>Table 1.</b>" in html and "<b>Table 10.</b>" in html
    assert "from lib import" not in html and "display(HTML" not in html and "jp-InputArea" not in html
    assert "Traceback" not in html and "WARNING" not in html

    pdf = (root.parent / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert json.loads((root / "report.json").read_text())["pdf_pages"] >= 5


@pytest.mark.slow
def test_class_names_are_escaped_in_the_report(tiny_study):
    _, root, _, _ = tiny_study
    html = (root / "report.html").read_text()
    assert "&lt;i&gt;gamma &amp; co" in html
    assert "<i>gamma" not in html
