"""The executed report notebook rendered without its code: HTML by nbconvert, PDF by WeasyPrint."""

from __future__ import annotations

from pathlib import Path

import nbformat

from lib.report.document import escape

STYLE = Path(__file__).with_name("report.css")  # the page style, HTML and PDF


def _report_only(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with its code hidden and only displayed results kept (no logs, no warnings)."""
    notebook = nbformat.from_dict(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
    notebook.cells = [c for c in notebook.cells if c.cell_type == "markdown" or c.outputs]
    return notebook


def render_html(executed_notebook: Path, title: str) -> str:
    """The executed report notebook as one standalone HTML page, without any code."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(_report_only(nbformat.read(executed_notebook, as_version=4)))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE.read_text()}</style></head><body><main>{body}</main></body></html>\n"
    )


def render_pdf(html: str, pdf_path: Path) -> int:
    """The HTML page printed to PDF by WeasyPrint (A4, page numbers; see report.css); returns the page count."""
    from weasyprint import HTML

    document = HTML(string=html).render()
    document.write_pdf(pdf_path)
    return len(document.pages)


def render(executed_notebook: Path, html_path: Path, pdf_path: Path, title: str) -> int | None:
    """Write the report as HTML and PDF; returns the PDF's page count.

    Where WeasyPrint or the system's Pango it loads is missing (a GPU machine with a bare image,
    say), the HTML alone is written, a note says why, and None is returned; a PDF of an earlier
    run is removed, so that the report's HTML and PDF always come from one run.
    """
    return write_pages(render_html(executed_notebook, title), html_path, pdf_path)


def write_pages(html: str, html_path: Path, pdf_path: Path) -> int | None:
    """Write a standalone HTML page, and its PDF where WeasyPrint can print (`render`); the PDF's page count."""
    html_path.write_text(html, encoding="utf-8")
    try:
        import weasyprint  # noqa: F401 - loads Pango through cffi: OSError where the system lacks it
    except (ImportError, OSError) as error:
        pdf_path.unlink(missing_ok=True)
        print(f"note: no PDF this time, the HTML report is complete: WeasyPrint cannot print here "
              f"({type(error).__name__}: {error}); tools/setup_env.sh installs what it needs", flush=True)
        return None
    return render_pdf(html, pdf_path)
