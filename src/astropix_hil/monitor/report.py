"""A run report: one self-contained HTML page (plots as inline base64 PNG, counters as tables,
the run header), readable offline and without any network access."""

from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Mapping

from .accumulator import Accumulator

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th { background: #eee; } td.text { text-align: left; }
pre { background: #f6f6f6; padding: 0.6em; max-height: 30em; overflow: auto; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""

_LOSS_COLUMNS = ("stream", "source", "received", "lost", "duplicated", "reordered", "late")
_TITLES = {"hitmap": "Hit maps", "tot": "ToT", "rates": "Rates"}


def render_html(acc: Accumulator, images: Mapping[str, bytes], title: str = "") -> str:
    """The report page of ``acc`` with PNG ``images`` (name to bytes) embedded."""
    esc = html.escape
    title = title or f"AstroPix run report: {acc.source}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p>Written {esc(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))}. '
        f'<span id="readouts">{acc.readouts}</span> readouts, '
        f'<span id="hits">{acc.hits}</span> hits over {acc.time_edges_s[-1]:g} s.</p>',
        *(f'<p class="warning"><b>Warning:</b> {esc(w)}</p>' for w in acc.warnings),
        "<h2>Readouts received and lost</h2>", '<table id="loss"><tr>',
        "".join(f"<th>{c}</th>" for c in _LOSS_COLUMNS), "</tr>",
    ]
    for row in acc.loss_rows():
        cells = []
        for column in _LOSS_COLUMNS:
            cls = ' class="text"' if column in ("stream", "source") else ""
            cells.append(f'<td{cls} data-column="{column}">{esc(str(row[column]))}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    if acc.receiver is not None:
        totals = acc.receiver.get("totals", {})
        drops = acc.receiver.get("socket_drops")
        parts += ['<table id="receiver">',
                  _row("datagrams", acc.receiver.get("datagrams", 0)),
                  _row("malformed datagrams", totals.get("malformed", 0)),
                  _row("socket drops", "unknown" if drops is None else drops),
                  _row("sender restarts", acc.receiver.get("restarts", 0)), "</table>"]
    parts += ["<h2>Decoding flags</h2>", '<table id="flags"><tr><th>flag</th>'
              "<th>readouts</th></tr>"]
    flags = acc.flag_counts()
    parts += [_row(name, count) for name, count in flags.items()] or [_row("none", 0)]
    parts.append("</table>")
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        parts += [f"<h2>{esc(_TITLES.get(name, name))}</h2>",
                  f'<img id="img-{esc(name)}" alt="{esc(name)}" '
                  f'src="data:image/png;base64,{data}">']
    header = json.dumps(acc.header, indent=1) if acc.header is not None else "(none)"
    parts += ["<h2>Run header</h2>", f'<pre id="header">{esc(header)}</pre>',
              "</body></html>", ""]
    return "\n".join(parts)


def _row(name: str, value: object) -> str:
    return f'<tr><td class="text">{html.escape(name)}</td><td>{html.escape(str(value))}</td></tr>'


def write_report(path: str | os.PathLike, acc: Accumulator) -> None:
    """Render ``acc``'s figures and write the report page to ``path``."""
    from .figures import png_bytes, report_figures

    images = {name: png_bytes(fig) for name, fig in report_figures(acc).items()}
    text = render_html(acc, images)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
