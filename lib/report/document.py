"""The report's building blocks: escaped data, numbered figures and tables, numbers in words."""

from __future__ import annotations

import base64
import html
import io

import matplotlib.pyplot as plt
import pandas as pd

from lib.report.plots import visible


def escape(text) -> str:
    """Data (a class or file name) as HTML text: markup escaped, control characters shown as escapes."""
    return html.escape(visible(text))


def preformatted(text: str) -> str:
    """A block of lines (YAML, say) as an HTML ``<pre>``: each line escaped (`escape`), the line breaks kept."""
    return "<pre>" + "\n".join(escape(line) for line in text.split("\n")) + "</pre>"


# --------------------------------------------------------------------------------------
# Numbered figures and tables
# --------------------------------------------------------------------------------------


class Document:
    """Hands out figure and table numbers, and turns figures and tables into captioned HTML."""

    def __init__(self) -> None:
        self.figures = 0
        self.tables = 0

    def figure(self, fig: plt.Figure, caption: str, width: str = "100%") -> str:
        """The figure as an embedded PNG with "Figure N." and its caption (the figure is closed)."""
        self.figures += 1
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode()
        return (
            # max-width, not width: with the style sheet's max-height, a tall figure shrinks without stretching
            f'<figure><img src="data:image/png;base64,{data}" style="max-width:{width}" alt="Figure {self.figures}"/>'
            f"<figcaption><b>Figure {self.figures}.</b> {caption}</figcaption></figure>"
        )

    def table(self, table: pd.DataFrame, caption: str, float_format: str = "{:.3f}", index: bool = True) -> str:
        """The table with "Table N." and its caption above it; cell values are escaped; the index's name heads its
        column (`header_row_only`)."""
        self.tables += 1
        if index:
            table, index = header_row_only(table)
        body = table.to_html(
            escape=True, index=index, border=0, float_format=float_format.format, classes="data", na_rep="–"
        )
        return f'<div class="table"><p class="caption"><b>Table {self.tables}.</b> {caption}</p>{body}</div>'


def header_row_only(table: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """``table`` laid out so that pandas writes one header row, and whether to write its index: pandas puts a named
    index's name on a row of its own under the header, so a single-level name moves into the header's first cell
    (with the columns' own name, if any, after it) and the levels of a named MultiIndex become columns."""
    names = [name for name in table.index.names if name]
    if not names:
        return table, True
    if table.index.nlevels > 1 or table.columns.nlevels > 1:
        return table.reset_index(), False
    corner = names[0] if not table.columns.name else f"{names[0]} \\ {table.columns.name}"
    return table.rename_axis(index=None, columns=corner), True


def formatted(table: pd.DataFrame, count_rows=(), decimals: int = 3) -> pd.DataFrame:
    """Each row as text: the ``count_rows`` with thousands separators, the others with ``decimals``."""
    def row_format(row: pd.Series) -> pd.Series:
        pattern = "{:,.0f}" if row.name in count_rows else f"{{:.{decimals}f}}"
        return pd.to_numeric(row).map(pattern.format)

    return table.apply(row_format, axis=1)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the right number: '1 round', '3 rounds', '2 classes' (``plural`` when not noun + 's')."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def compare_words(a: float, b: float, higher: str = "higher", lower: str = "lower", same: str = "the same") -> str:
    """'higher', 'lower' or 'the same' for a against b (at the precision the report prints)."""
    if round(a, 3) == round(b, 3):
        return same
    return higher if a > b else lower


def key_value_table(values: dict, key: str, value: str) -> pd.DataFrame:
    return pd.DataFrame({value: [str(v) for v in values.values()]}, index=pd.Index(list(values), name=key))
