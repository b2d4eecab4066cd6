"""One self-contained HTML page: text, tables and PNG pictures embedded as base64 data URIs.

No scripts, fonts, style sheets or images are fetched from anywhere, so the page reads offline;
a print style sheet keeps pictures and tables whole on paper.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; } td.bold { font-weight: bold; }
figure { display: inline-block; margin: 0.4em 0.6em 0.8em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.82em; color: #555; max-width: 60em; }
.note { font-size: 0.85em; color: #555; } nav a { margin-right: 0.8em; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; } nav { display: none; }
  h2 { page-break-before: always; } h2.first { page-break-before: avoid; }
  figure, table, tr, img { page-break-inside: avoid; break-inside: avoid; }
  figure img { max-width: 100%; max-height: 24cm; }
}
"""


def esc(text: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(text), quote=True)


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def figure(png: bytes, caption: str) -> str:
    """A captioned embedded picture."""
    return f"<figure>{img_tag(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    bold: Sequence[Sequence[bool]] | None = None,
    css_id: str | None = None,
) -> str:
    """An HTML table; ``bold[i][j]`` marks cells; floats print with 3 decimals, nan as a dash."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "–" if v != v else f"{v:.3f}"
        return esc(v)

    ident = f' id="{esc(css_id)}"' if css_id else ""
    out = [
        f"<table{ident}><thead><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
    ]
    for i, row in enumerate(rows):
        cells = []
        for j, v in enumerate(row):
            b = bool(bold and bold[i][j])
            cells.append(f'<td class="bold">{fmt(v)}</td>' if b else f"<td>{fmt(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


@dataclass
class Section:
    """A titled part of the page; ``body`` is already HTML."""

    title: str
    anchor: str
    body: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> Section:
        self.body.extend(parts)
        return self

    def note(self, text: str) -> Section:
        return self.add(f'<p class="note">{esc(text)}</p>')


def render_page(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole page: title, intro paragraphs (plain text), a contents line and the sections."""
    nav = " ".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        *(f"<p>{esc(p)}</p>" for p in intro),
        f"<nav>{nav}</nav>",
    ]
    for i, s in enumerate(sections):
        cls = ' class="first"' if i == 0 else ""
        parts.append(f'<section id="{esc(s.anchor)}"><h2{cls}>{esc(s.title)}</h2>')
        parts.extend(s.body)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
