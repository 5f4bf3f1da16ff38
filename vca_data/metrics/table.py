"""Plain-text tables for metric results: one row per class (or per group), one column per quantity,
shared by every metric's `table()` so all results print the same way."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def _cell(value: object, percent: bool, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value * 100 if percent else value:.{digits}f}"
    return str(value)


def format_table(
    rows: Mapping[str, Mapping[str, object]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    percent: Sequence[str] = (),
    digits: int = 2,
) -> str:
    """Render `rows` ({row name: {column: value}}) as an aligned text table.

    `columns` fixes the column order (default: the keys of the first row, then any new keys in order of
    appearance). Float columns named in `percent` are shown multiplied by 100; NaN and missing cells
    show as '-'; integers print as integers."""
    if columns is None:
        columns = []
        for row in rows.values():
            for key in row:
                if key not in columns:
                    columns.append(key)
    percent_set = set(percent)
    header = [""] + [f"{c} (%)" if c in percent_set else c for c in columns]
    body = [
        [str(name)] + [_cell(row.get(c), c in percent_set, digits) for c in columns]
        for name, row in rows.items()
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line: list[str]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        ).rstrip()

    lines = []
    if title:
        lines.append(title)
    lines.append(render(header))
    lines.append("-" * len(lines[-1]))
    lines.extend(render(line) for line in body)
    return "\n".join(lines)
