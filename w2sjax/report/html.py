"""One self-contained HTML page for an experiment directory: ``DIR/report.html``.

The page holds the results table (the same cells as the text table), every PNG figure in the
directory embedded as base64 data, the run's config and its notes: what the numbers mean, which
results were kept beside this one, anything else the run stored in ``results.json``, and the
user's own ``notes.md`` / ``notes.txt`` if the directory has one. It loads nothing from
anywhere else, so it can be mailed, attached to an issue or opened offline.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import pathlib

from w2sjax.report import tables
from w2sjax.runner import atomic

# The standard figures first, in the order ``w2sjax report`` writes them; others follow by name.
_FIRST = ("pgr_heatmap.png", "accuracy_bars.png", "training_curves.png", "gain_vs_misfit.png")
_USER_NOTES = ("notes.md", "notes.txt", "NOTES.md")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def figures_in(directory: pathlib.Path) -> list[pathlib.Path]:
    """The PNG figures in ``directory``: the standard ones first, then the rest by name."""
    # Hidden files are left out: a figure being written is a hidden temporary file (w2sjax.runner.atomic).
    pngs = sorted(p for p in directory.glob("*.png") if p.is_file() and not p.name.startswith("."))
    rank = {name: i for i, name in enumerate(_FIRST)}
    return sorted(pngs, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def notes(results: dict, directory: pathlib.Path) -> list[str]:
    """Plain-text notes about the run, one per item."""
    summary = tables.summarize(results)
    seeds = sorted({r["seeds"] for r in summary})
    out = [
        f"{len(results['runs'])} run{'s' if len(results['runs']) != 1 else ''} in {len(summary)} "
        f"table row{'s' if len(summary) != 1 else ''}; seeds per row: {', '.join(map(str, seeds)) or 'none'}.",
        "Accuracies are test accuracies, mean ± standard deviation over seeds (one seed: the value alone). "
        "PGR is computed from the seed means: 0 = the weak supervisor, 1 = the strong ceiling; the interval "
        "is a 95% bootstrap over seeds.",
    ]
    undefined = sum(1 for r in summary if r["pgr"] != r["pgr"])
    if undefined:
        out.append(f"PGR is undefined in {undefined} row{'s' if undefined != 1 else ''}: there the ceiling does "
                   "not beat the supervisor, so there is no gap to recover.")
    earlier = sorted(p.name for p in directory.glob("results.*.json"))
    if earlier:
        out.append("Results of earlier runs under other settings, kept beside this one: " + ", ".join(earlier) + ".")
    if (directory / "metrics.jsonl").is_file():
        out.append("Training curves are logged in metrics.jsonl (and TensorBoard event files under tensorboard/, "
                   "when tensorboardX was installed).")
    if isinstance(results.get("notes"), str):
        out.append(results["notes"])
    elif isinstance(results.get("notes"), list):
        out += [str(n) for n in results["notes"]]
    return out


def page(results: dict, directory: pathlib.Path) -> str:
    """The HTML text of the report page."""
    esc = html.escape
    name = results.get("config", {}).get("name") or directory.name
    header, rows = tables.table(results)
    numeric = {i for i, h in enumerate(header) if h == "seeds" or "acc" in h or h.startswith("PGR")}
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>w2sjax report: {esc(name)}</title>", f"<style>{_STYLE}</style></head><body>",
        f"<h1>w2sjax report: {esc(name)}</h1>",
        f"<p>From <code>{esc(str(directory / 'results.json'))}</code>, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>",
        "<h2>Results</h2>", '<table id="results"><thead><tr>',
        *[f"<th>{esc(h)}</th>" for h in header], "</tr></thead><tbody>",
    ]
    for cells in rows:
        parts.append("<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
                                      for i, c in enumerate(cells)) + "</tr>")
    parts.append("</tbody></table>")
    figs = figures_in(directory)
    if figs:
        parts.append("<h2>Figures</h2>")
    for path in figs:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{esc(path.stem)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{esc(path.name)}</figcaption></figure>")
    parts += ["<h2>Notes</h2>", "<ul>", *[f"<li>{esc(n)}</li>" for n in notes(results, directory)], "</ul>"]
    extra = {k: v for k, v in results.items() if k not in ("config", "runs", "notes")}
    if extra:
        parts += ["<h3>Also stored in results.json</h3>",
                  f'<pre id="extra">{esc(json.dumps(extra, indent=2, default=str))}</pre>']
    for user in _USER_NOTES:
        path = directory / user
        if path.is_file():
            parts += [f"<h3>{esc(user)}</h3>", f'<pre class="user-notes">{esc(path.read_text(errors="replace"))}</pre>']
            break
    parts += ["<h2>Config</h2>",
              f'<pre id="config">{esc(json.dumps(results.get("config", {}), indent=2, default=str))}</pre>',
              "</body></html>"]
    return "\n".join(parts) + "\n"


def write(results: dict, directory: pathlib.Path) -> pathlib.Path:
    """Write ``directory/report.html`` atomically; returns its path."""
    path = pathlib.Path(directory) / "report.html"
    atomic.write_text(path, page(results, pathlib.Path(directory)))
    return path
