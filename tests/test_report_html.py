"""`w2sjax report DIR` writes DIR/report.html: one self-contained page whose table rows are the
results, whose figures are embedded PNGs that decode, with the config and the run's notes."""

import base64
import html.parser
import json
import pathlib
import statistics
import struct
import subprocess
import sys

from w2sjax.report import tables

# (weak, w2s, ceiling) per seed of each (weak, strong, loss); the last pair has one seed.
GROUPS = {
    ("bow", "hf:/a/very/long/path/to/a/model", "xent"): [(0.70, 0.74, 0.80), (0.72, 0.73, 0.81)],
    ("bow", "hf:/a/very/long/path/to/a/model", "logconf"): [(0.70, 0.77, 0.80), (0.72, 0.76, 0.81)],
    ("bow", "big", "xent"): [(0.70, 0.71, 0.70)],  # the ceiling does not beat the supervisor
}


def _results() -> dict:
    runs = [{"task": "toy", "weak_model": w, "strong_model": s, "loss": loss, "seed": seed, "weak_acc": a[0],
             "w2s_acc": a[1], "ceiling_acc": a[2], "pgr": None, "misfit": 0.1, "stage_seconds": {}}
            for (w, s, loss), seeds in GROUPS.items() for seed, a in enumerate(seeds)]
    return {"config": {"name": "toy <&> run", "train": {"lr": 1e-4}}, "runs": runs, "selection": {"k": 3}}


class _Page(html.parser.HTMLParser):
    """Collects the results table's cells, the images' sources, external references and <pre> texts."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.external, self.pre = [], [], [], {}
        self._in_table = self._cell = False
        self._pre = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "results":
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = True
            self.rows[-1].append("")
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "pre":
            self._pre = attrs.get("id") or attrs.get("class")
            self.pre[self._pre] = ""
        for key in ("href", "src"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag in ("td", "th"):
            self._cell = False
        elif tag == "pre":
            self._pre = None

    def handle_data(self, data):
        if self._cell:
            self.rows[-1][-1] += data
        if self._pre is not None:
            self.pre[self._pre] += data


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "w2sjax.cli", *args], capture_output=True, text=True, timeout=300)


def test_report_writes_one_self_contained_page(tmp_path):
    results = _results()
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "notes.md").write_text("Tried <b>lr 1e-4</b> first.\n")
    (tmp_path / ".gain.png.w2sjax-tmp.1.ab12cd34.png").write_bytes(b"half a PNG")  # another writer's temporary file
    proc = _cli("report", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {tmp_path / 'report.html'}" in proc.stdout
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())

    # The table: a header, then one row per group, with numbers computed here from GROUPS.
    header, *rows = page.rows
    assert header[:5] == ["task", "weak", "strong", "loss", "seeds"]
    assert len(rows) == len(GROUPS)
    for (w, s, loss), seeds in GROUPS.items():
        (row,) = [r for r in rows if r[1:4] == [w, s, loss]]
        assert row[4] == str(len(seeds))
        weak = [a[0] for a in seeds]
        expect = f"{statistics.mean(weak):.3f}" + (f" ± {statistics.stdev(weak):.3f}" if len(seeds) > 1 else "")
        assert row[5] == expect
        means = [statistics.mean(a[i] for a in seeds) for i in range(3)]
        if means[2] > means[0]:
            assert row[8].startswith(f"{(means[1] - means[0]) / (means[2] - means[0]):.2f}")
        else:
            assert row[8] == "undefined"

    # Every figure `report` wrote is embedded, decodes to a PNG, and nothing is fetched from elsewhere.
    written = sorted(p.name for p in tmp_path.glob("*.png") if not p.name.startswith("."))
    assert len(page.images) == len(written) >= 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200
    assert page.external == []

    # The config round-trips, escaped; the notes and the extra results are there.
    assert json.loads(page.pre["config"]) == results["config"]
    assert json.loads(page.pre["extra"]) == {"selection": {"k": 3}}
    assert page.pre["user-notes"] == "Tried <b>lr 1e-4</b> first.\n"
    text = (tmp_path / "report.html").read_text()
    assert "PGR is undefined in 1 row:" in text and "5 runs in 3 table rows" in text


def test_page_without_figures_still_has_table_and_config(tmp_path):
    results = _results()
    text = tables.write_html(results, tmp_path).read_text()
    page = _Page()
    page.feed(text)
    assert len(page.rows) == 1 + len(GROUPS) and page.images == []
    assert json.loads(page.pre["config"]) == results["config"]
    assert [p.name for p in pathlib.Path(tmp_path).iterdir()] == ["report.html"]  # no temporary file left
