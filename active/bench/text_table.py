"""Plain-text tables for the terminal: columns padded to their widest cell."""

from __future__ import annotations


def aligned(lines: list[list[str]], left: int = 0) -> str:
    """``lines`` (a header row, then data rows, all the same length) as text: the first ``left``
    columns left-aligned, the rest right-aligned, two spaces between columns."""
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    )
