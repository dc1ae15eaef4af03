"""The pre-registered benchmark: its protocol file, its artefacts, the summary regenerated from
them alone, and the docs sections generated from that summary.

Reference numbers are recomputed here in plain numpy from the artefact arrays (means, the PGR
formula, medians, the keyed bootstrap written out independently), never read from the code under
test.
"""

import hashlib
import json
import pathlib
import runpy
import shutil

import numpy as np
import pytest

from w2sjax.config import ConfigError
from w2sjax.report import artefacts, benchmark, limits, protocol as protocol_lib
from w2sjax.report.results import nan_to_null

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "experiments" / "benchmark_protocol.json"


@pytest.fixture(scope="module")
def bench():
    return runpy.run_path(str(ROOT / "experiments" / "benchmark.py"))


# ---- the protocol file --------------------------------------------------------------------------

def test_shipped_protocol_fixes_the_rules_before_the_run():
    p = protocol_lib.load(SHIPPED)
    assert p.sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    tuned = set(p["tasks"]["tuned_on"])
    assert {"fine_foods", "vader_tweets", "vader_movies"} <= tuned
    primary = [s for s in p["students"] if s.get("role", "primary") == "primary"]
    assert primary and all(len(s["seeds"]) >= 5 for s in primary)
    assert p["gap_rule"]["slice"] == "validation" and p["gap_rule"]["min_gap"] > 0
    head = p["headline"]
    assert (head["student"], head["supervisor"], head["loss"], head["tasks"], head["group"]) == (
        "minilm-l6", "glove-bow", "logconf", "gap", "all")
    assert head["student"] in {s["name"] for s in primary} and head["supervisor"] in p["supervisors"]
    assert protocol_lib.group_of(p, "fine_foods") == "tuned" and protocol_lib.group_of(p, "bbc_news") == "untuned"


def test_the_ladder_trains_the_top_third_of_separately_pretrained_models():
    p = protocol_lib.load(SHIPPED)
    names = [s["name"] for s in p["students"]]
    assert names == ["minilm-l6", "mpnet-base"]  # no truncated MiniLM copies
    deferred = p["deferred_students"]["students"]
    assert [s["name"] for s in deferred] == ["smollm2-135m", "gemma3-270m"]
    for s in p["students"] + deferred:
        assert s["trainable"] == f"top:{-(-s['blocks'] // 3)}", s["name"]  # K = ceil(L / 3)
    for chain in p["bootstrap"]:
        assert chain["chain"] == "glove-bow>minilm-l6>mpnet-base"


@pytest.mark.slow
def test_the_ladder_block_counts_are_the_models():
    """Each student's ``blocks`` equals the layer count its own weight files declare (config.json,
    or the GGUF header read with the ``gguf`` package), where the weights are in the cache."""
    from w2sjax import assets

    p = protocol_lib.load(SHIPPED)
    where = {"minilm-l6": ("minilm-l6-v2", "config.json"), "mpnet-base": ("mpnet-base-v2", "config.json"),
             "smollm2-135m": ("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
             "gemma3-270m": ("gemma3-270m", "gemma-3-270m-q4_k_m.gguf")}
    checked = 0
    for s in p["students"] + p["deferred_students"]["students"]:
        path = assets.cache_dir() / where[s["name"]][0] / where[s["name"]][1]
        if not path.is_file():
            continue
        if path.suffix == ".json":
            layers = json.loads(path.read_text())["num_hidden_layers"]
        else:
            gguf = pytest.importorskip("gguf")
            fields = gguf.GGUFReader(str(path)).fields
            field = next(f for k, f in fields.items() if k.endswith(".block_count"))
            layers = int(field.parts[field.data[0]][0])
        assert layers == s["blocks"], s["name"]
        checked += 1
    if not checked:
        pytest.skip("no student's weights are in the cache")


def test_each_students_lr_is_the_pilots_choice_on_validation_only():
    """The protocol names the pilot file by its sha256, and each student's lr is the one the pilot's
    numbers choose, recomputed here (best mean validation accuracy, ties to the smaller lr). The
    pilot ran the protocol's recipe, and no test number is in its record."""
    p = protocol_lib.load(SHIPPED)
    pilot_path = ROOT / p["lr_pilot"]["file"]
    assert hashlib.sha256(pilot_path.read_bytes()).hexdigest() == p["lr_pilot"]["sha256"]
    pilot = json.loads(pilot_path.read_text())
    def keys(x):
        return [k for k, v in x.items() for k in [k, *keys(v)]] if isinstance(x, dict) else \
            [k for v in x for k in keys(v)] if isinstance(x, list) else []

    assert [k for k in keys(pilot) if "test" in k] == ["n_test"]  # no test accuracy anywhere
    settings = lambda recipe: {k: v for k, v in recipe.items() if not isinstance(v, str)}  # notes apart
    assert settings(pilot["recipe"]) == settings(p["recipe"])
    grid = p["lr_pilot"]["grid"]
    assert sorted(pilot["lrs"]) == sorted(grid)
    for s in p["students"]:
        tasks = pilot["students"][s["name"]]["tasks"]
        means = np.array([np.mean([t["lr"][f"{lr:g}"] for t in tasks]) for lr in grid])
        best = grid[int(np.flatnonzero(np.isclose(means, means.max(), rtol=0, atol=1e-10))[0])]
        assert s["lr"] == best == pilot["students"][s["name"]]["chosen_lr"], s["name"]
        names = [t["task"] for t in tasks]
        assert set(names) <= set(p["tasks"]["tuned_on"])  # the pilot looked only at tuned tasks
        # as the protocol says: MiniLM-L6 on two tasks, MPNet-base on vader_tweets alone
        assert names == {"minilm-l6": ["vader_tweets", "fine_foods"], "mpnet-base": ["vader_tweets"]}[s["name"]]
        # trained long enough: does the chosen ceiling reach the frozen probe's on every pilot task?
        reaches = all(t["lr"][f"{s['lr']:g}"] >= t["frozen_probe"] for t in tasks)
        assert pilot["students"][s["name"]]["ceiling_reaches_frozen_probe"] is reaches, s["name"]


def test_the_run_plan_follows_the_protocol(bench):
    p = protocol_lib.load(SHIPPED)
    groups = bench["groups"](p)
    # one group per student with its own recipe, then the chain (each rung with its student's recipe)
    assert [(g.students, g.trainable, len(g.seeds)) for g in groups] == [
        (("minilm-l6",), "top:2", 5), (("mpnet-base",), "top:4", 5), (("mpnet-base",), "top:4", 3)]
    lrs = {s["name"]: s["lr"] for s in p["students"]}
    assert [g.lr for g in groups] == [lrs[g.students[0]] for g in groups]
    assert groups[-1].bootstrap == ("glove-bow>minilm-l6>mpnet-base",) and groups[-1].supervisors == ("glove-bow",)
    assert groups[-1].recipes == (("minilm-l6", "top:2", lrs["minilm-l6"]), ("mpnet-base", "top:4", lrs["mpnet-base"]))
    cfg = bench["base_config"](p)
    r = p["recipe"]
    assert (cfg.train.epochs, cfg.train.early_stopping) == (r["student"]["epochs"], True)
    assert (cfg.data.n_train, cfg.data.n_val, cfg.data.n_test) == (r["n_train"], r["n_val"], r["n_test"])
    # part-major: every task of the first student before any part of the next
    plan = bench["Plan"](p, ["fine_foods", "vader_tweets"])
    assert [part.name for part in plan.parts] == [
        "fine_foods-minilm-l6", "vader_tweets-minilm-l6", "fine_foods-mpnet-base", "vader_tweets-mpnet-base",
        "fine_foods-chain-minilm-l6-mpnet-base", "vader_tweets-chain-minilm-l6-mpnet-base"]


def test_bad_protocol_is_one_line_exit_2(bench, tmp_path, capsys):
    spec = json.loads(SHIPPED.read_text())
    del spec["gap_rule"]
    (tmp_path / "p.json").write_text(json.dumps(spec))
    assert bench["main"](["--protocol", str(tmp_path / "p.json"), "--summary-only", "--artefacts",
                          str(tmp_path / "a"), "--docs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchmark: error: protocol:") and "gap_rule" in err and "\n" not in err
    spec = json.loads(SHIPPED.read_text())
    spec["gap_rule"]["slice"] = "test"
    (tmp_path / "p.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="gap_rule.slice"):
        protocol_lib.load(tmp_path / "p.json")


def test_resolution_restricts_and_records(tmp_path):
    p = protocol_lib.load(SHIPPED)
    res = protocol_lib.resolve_tasks(p, only=["vader_tweets"])
    assert res["tasks"] == ["vader_tweets"] and res["restricted_to"] == ["vader_tweets"]
    assert res["protocol_sha256"] == p.sha256 and "fine_foods" in res["left_out"]
    with pytest.raises(ConfigError, match="--tasks"):
        protocol_lib.resolve_tasks(p, only=["no_such_task"])


# ---- synthetic artefacts and an independent recomputation -----------------------------------------

def _tiny_protocol(tmp_path, filename="protocol.json", **changes) -> pathlib.Path:
    spec = json.loads(SHIPPED.read_text())
    spec["medians"]["n_boot"] = 300
    spec["headline"] = {"supervisor": "glove-bow", "student": "minilm-l6", "loss": "logconf", "tasks": "gap",
                        "group": "all"}
    spec.update(changes)
    path = tmp_path / filename
    path.write_text(json.dumps(spec))
    return path


def _write_synthetic(folder, sha, tasks, n_test=80, seeds=(0, 1, 2)):
    """Per task: glove-bow -> minilm-l6 with both losses and a chain, 3 seeds sharing test rows."""
    for t_i, task in enumerate(tasks):
        rng = np.random.default_rng(100 + t_i)
        arrays, rows = {}, []
        for seed in seeds:
            arrays[f"test_row/seed{seed}"] = np.arange(n_test, dtype=np.int32)
            arrays[f"test_label/seed{seed}"] = rng.integers(0, 2, n_test).astype(np.int8)
            arrays[f"val_label/seed{seed}"] = rng.integers(0, 2, 30).astype(np.int8)

            def stage(name, rate):
                arrays[f"score/{name}"] = (rng.random(n_test) < rate).astype(np.float32)
                arrays[f"val_score/{name}"] = (rng.random(30) < rate).astype(np.float32)
                arrays[f"probs/{name}"] = rng.random((n_test, 2)).astype(np.float16)
                return name

            weak = stage(f"weak__glove-bow__seed{seed}--{task}", 0.65)
            ceil = stage(f"ceiling__minilm-l6__seed{seed}--{task}", 0.65 + 0.04 * t_i)
            for loss, rate in (("xent", 0.68), ("logconf", 0.70)):
                w2s = stage(f"w2s__glove-bow__minilm-l6__{loss}__seed{seed}--{task}", rate + 0.01 * t_i)
                rows.append({"task": task, "weak_model": "glove-bow", "strong_model": "minilm-l6", "loss": loss,
                             "seed": seed, "stages": {"weak": weak, "w2s": w2s, "ceiling": ceil}})
                boot = stage(f"boot__glove-bow>minilm-l2>minilm-l6__{loss}__seed{seed}--{task}", rate - 0.02)
                direct = stage(f"w2s__glove-bow__minilm-l6__{loss}__part2of2__seed{seed}--{task}", rate - 0.01)
                rows.append({"task": task, "weak_model": "glove-bow", "strong_model": "minilm-l6", "loss": loss,
                             "seed": seed, "chain": "glove-bow>minilm-l2>minilm-l6", "n_trained": 40,
                             "direct_stage": direct, "stages": {"weak": weak, "w2s": boot, "ceiling": ceil}})
        artefacts.write_task(folder, sha, task, "per example", rows, arrays)


def _ref_rng(*key):
    text = "\x1f".join(str(k) for k in key)
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def _ref_draws(weak, w2s, ceil, key, n_boot):
    """Seeds and test examples resampled, one test resample shared by the seeds, written out."""
    rng = _ref_rng(*key)
    n_seeds, n_test = weak.shape
    rows = rng.integers(0, n_test, size=(n_boot, n_test))  # each draw's resample of the test rows
    pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    out = np.empty(n_boot)
    for b in range(n_boot):
        acc = [a[:, rows[b]].mean(1) for a in (weak, w2s, ceil)]
        wk, ws, cl = (a[pick[b]].mean() for a in acc)
        out[b] = (ws - wk) / (cl - wk) if cl > wk else np.nan
    return out


def _ref_ci(draws):
    d = draws[np.isfinite(draws)]
    return (np.percentile(d, 2.5), np.percentile(d, 97.5)) if len(d) else (np.nan, np.nan)


def _fmt(x):
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def _pgr_text(value, ci):
    if not np.isfinite(value):
        return "undef."
    return _fmt(value) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if np.all(np.isfinite(ci)) else "")


def _expected_lines(folder, spec, n_boot):
    """Every table line of the generated section, recomputed from the npz files with numpy."""
    lines, per_pair, chain_lines = [], {}, []
    tuned = set(spec["tasks"]["tuned_on"])
    for npz_path in sorted(pathlib.Path(folder).glob("*.npz")):
        task = npz_path.stem
        meta = json.loads((folder / f"{task}.json").read_text())
        z = np.load(npz_path)
        group = "tuned" if task in tuned else "untuned"
        cells = {}
        for r in meta["rows"]:
            cells.setdefault((r["loss"], r.get("chain")), []).append(r)
        gap = None
        for (loss, chain), rows in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            rows = sorted(rows, key=lambda r: r["seed"])
            get = lambda role: np.stack([z[f"score/{r['stages'][role]}"] for r in rows]).astype(float)
            weak, w2s, ceil = get("weak"), get("w2s"), get("ceiling")
            if gap is None:
                gap = np.mean([z[f"val_score/{r['stages']['ceiling']}"].mean() - z[f"val_score/{r['stages']['weak']}"].mean()
                               for r in rows])
            wk, ws, cl = weak.mean(1).mean(), w2s.mean(1).mean(), ceil.mean(1).mean()
            pgr = (ws - wk) / (cl - wk) if cl > wk else np.nan
            key = (task, "glove-bow", "minilm-l6", loss, chain or "")
            draws = _ref_draws(weak, w2s, ceil, key, n_boot)
            if chain is None:
                g = f"{gap:.3f}" + (" (gap)" if gap >= spec["gap_rule"]["min_gap"] else "")
                lines.append(f"| {task} | {group} | glove-bow | minilm-l6 | {loss} | {len(rows)} | {g} | {wk:.3f} | "
                             f"{ws:.3f} | {cl:.3f} | {_pgr_text(pgr, _ref_ci(draws))} |")
                per_pair.setdefault(loss, []).append((task, group, gap, pgr, draws))
            else:
                direct = np.stack([z[f"score/{r['direct_stage']}"] for r in rows]).astype(float)
                dm = direct.mean(1).mean()
                dpgr = (dm - wk) / (cl - wk) if cl > wk else np.nan
                ddraws = _ref_draws(weak, direct, ceil, (*key, "direct"), n_boot)
                chain_lines.append(f"| {task} | {chain} | {loss} | {len(rows)} | 40 | {ws:.3f} | "
                                   f"{_pgr_text(pgr, _ref_ci(draws))} | {dm:.3f} | {_pgr_text(dpgr, _ref_ci(ddraws))} |")
    med_lines, medians = [], {}
    for loss in sorted(per_pair):
        for tasks in ("all", "gap"):
            for group in ("all", "tuned", "untuned"):
                chosen = [c for c in per_pair[loss] if (tasks == "all" or c[2] >= spec["gap_rule"]["min_gap"])
                          and (group == "all" or c[1] == group)]
                defined = [c for c in chosen if np.isfinite(c[3])]
                med = np.median([c[3] for c in defined]) if defined else np.nan
                ci = (np.nan, np.nan)
                if len(defined) >= spec["medians"]["min_tasks_for_interval"]:
                    rng = _ref_rng("median", "glove-bow", "minilm-l6", loss, tasks, group)
                    n = len(defined)
                    t_idx = rng.integers(0, n, size=(n_boot, n))
                    c_idx = rng.integers(0, n_boot, size=(n_boot, n))
                    meds = [np.nanmedian([defined[t][4][c] for t, c in zip(t_idx[b], c_idx[b])]) for b in range(n_boot)]
                    ci = _ref_ci(np.array(meds))
                medians[(loss, tasks, group)] = (med, ci, len(chosen), len(defined))
                med_lines.append(f"| glove-bow | minilm-l6 | {loss} | {tasks} | {group} | {_pgr_text(med, ci)} | "
                                 f"{len(chosen)} ({len(defined)}) |")
    return lines, chain_lines, med_lines, medians


def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| task")
            and not line.startswith("| supervisor")]


def test_summary_only_regenerates_every_number_from_the_artefacts(bench, tmp_path, monkeypatch):
    """From synthetic artefacts of 6 tasks: every table line of the generated results.md section
    and the README sentence equal an independent recomputation; the rest of each file is kept.
    No task is loaded."""
    from w2sjax import data

    def no_loading(*args, **kwargs):
        raise AssertionError("--summary-only loaded a task")

    monkeypatch.setattr(data, "load_task", no_loading)
    proto = protocol_lib.load(_tiny_protocol(tmp_path))
    folder = tmp_path / "artefacts"
    tasks = ["fine_foods", "vader_tweets", "bbc_news", "t_three", "t_four", "t_five"]
    _write_synthetic(folder, proto.sha256, tasks)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("# Results\n\nHand-written text stays.\n")
    (tmp_path / "README.md").write_text("# w2sjax\n\n<!-- benchmark-headline:begin -->\nold\n<!-- benchmark-headline:end -->\n\nmore\n")
    argv = ["--summary-only", "--protocol", str(proto.path), "--artefacts", str(folder), "--docs-root", str(tmp_path)]
    assert bench["main"](argv) == 0
    results_md = (tmp_path / "docs" / "results.md").read_text()
    assert results_md.startswith("# Results\n\nHand-written text stays.\n")
    body = benchmark.section(results_md)
    assert proto.sha256 in body
    lines, chain_lines, med_lines, medians = _expected_lines(folder, proto.spec, 300)
    assert sorted(_table_lines(body)) == sorted(lines + chain_lines + med_lines)
    # with 6 tasks the all-tasks medians have an interval; the tuned group (2 tasks) none
    assert all(np.isfinite(medians[("logconf", "all", "all")][1]))
    assert not any(np.isfinite(medians[("logconf", "all", "tuned")][1]))
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# w2sjax\n\n") and readme.endswith("\n\nmore\n") and "old" not in readme
    med, ci, n, n_def = medians[("logconf", "gap", "all")]
    assert f"recovers a median of {_pgr_text(med, ci)} of the gap over {n} gap tasks" in readme
    # a second regeneration changes nothing, bit for bit
    summary_json = (folder / "summary.json").read_bytes()
    assert bench["main"](argv) == 0
    assert (tmp_path / "docs" / "results.md").read_text() == results_md
    assert (folder / "summary.json").read_bytes() == summary_json


def test_a_partial_run_lists_what_has_not_run(tmp_path):
    """Resolved tasks without a student's rows are listed as not run, in the tables' section and in
    the README sentence; the medians cover only what ran."""
    proto = protocol_lib.load(_tiny_protocol(tmp_path))
    _write_synthetic(tmp_path / "a", proto.sha256, ["t_one", "t_two"])
    resolution = {"protocol_sha256": proto.sha256, "tasks": ["t_one", "t_three", "t_two"], "left_out": {}}
    s = benchmark.summary(artefacts.load(tmp_path / "a"), proto, resolution)
    chain = proto["bootstrap"][0]["chain"]
    assert s["not_run"] == {"minilm-l6": ["t_three"], "mpnet-base": ["t_one", "t_three", "t_two"],
                            chain: ["t_one", "t_three", "t_two"]}
    assert {c["task"] for c in s["cells"]} == {"t_one", "t_two"}  # nothing filled in for t_three
    text = benchmark.markdown(s)
    assert "- minilm-l6: 1 of 3 tasks (t_three)" in text and "- mpnet-base: 3 of 3 tasks" in text
    assert ("the run is partial: minilm-l6 has not run on 1 of 3 tasks, mpnet-base has not run on 3 of 3 tasks, "
            f"{chain} has not run on 3 of 3 tasks;") in benchmark.headline_sentence(s)
    s["not_run"] = {name: [] for name in s["not_run"]}
    assert "partial" not in benchmark.headline_sentence(s)


def test_a_docs_root_without_the_docs_is_one_line_exit_2(bench, tmp_path, capsys):
    proto_path = _tiny_protocol(tmp_path)
    folder = tmp_path / "artefacts"
    _write_synthetic(folder, protocol_lib.load(proto_path).sha256, ["t_one"])
    (tmp_path / "root").mkdir()
    assert bench["main"](["--summary-only", "--protocol", str(proto_path), "--artefacts", str(folder),
                          "--docs-root", str(tmp_path / "root"), "--no-figure"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchmark: error: --docs-root:") and "docs/results.md or README.md" in err and "\n" not in err
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == []  # nothing half-written


def test_adding_a_task_changes_no_cell_of_another(tmp_path):
    proto = protocol_lib.load(_tiny_protocol(tmp_path))
    _write_synthetic(tmp_path / "a", proto.sha256, ["t_one", "t_two"])
    _write_synthetic(tmp_path / "b", proto.sha256, ["t_one", "t_two", "a_first"])
    cells = lambda folder: {(c["task"], c["loss"], c["chain"]): c for c in
                            benchmark.summary(artefacts.load(folder), proto, None)["cells"]}
    before, after = cells(tmp_path / "a"), cells(tmp_path / "b")
    assert before and set(before) < set(after)
    for key, cell in before.items():  # as JSON: an undefined PGR (nan) is null on both sides
        assert json.dumps(nan_to_null(after[key])) == json.dumps(nan_to_null(cell))


def test_artefacts_of_another_protocol_are_refused(bench, tmp_path, capsys):
    proto = protocol_lib.load(_tiny_protocol(tmp_path))
    folder = tmp_path / "artefacts"
    _write_synthetic(folder, proto.sha256, ["t_one"])
    with pytest.raises(ConfigError, match="another|not"):
        _write_synthetic(folder, "0" * 64, ["t_two"])
    other = _tiny_protocol(tmp_path, "other.json", name="changed")
    assert bench["main"](["--summary-only", "--protocol", str(other), "--artefacts", str(folder),
                          "--docs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchmark: error: artefacts:") and "\n" not in err
    # a task file copied in from another protocol's folder is refused too
    _write_synthetic(tmp_path / "foreign", "f" * 64, ["t_two"])
    shutil.copy(tmp_path / "foreign" / "t_two.json", folder / "t_two.json")
    shutil.copy(tmp_path / "foreign" / "t_two.npz", folder / "t_two.npz")
    with pytest.raises(ConfigError, match="cannot be summarised together"):
        artefacts.load(folder)


def test_committed_docs_match_a_regeneration(bench, tmp_path):
    """docs/results.md's generated sections (the tables, what limits the PGR) and the README
    sentence equal what --summary-only writes from the committed artefacts (or, with none
    committed yet, the 'no results' text)."""
    (tmp_path / "docs").mkdir()
    for rel in ("docs/results.md", "README.md"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    artefact_copy = tmp_path / "benchmark"
    if (ROOT / "docs" / "benchmark").is_dir():
        shutil.copytree(ROOT / "docs" / "benchmark", artefact_copy)
    # the default protocol's --summary-only writes the decoder section too, from docs/benchmark_decoders/
    # (absent until the decoder run publishes: then it says that nothing has run)
    decoder_copy = tmp_path / "benchmark_decoders"
    if (ROOT / "docs" / "benchmark_decoders").is_dir():
        shutil.copytree(ROOT / "docs" / "benchmark_decoders", decoder_copy)
    assert bench["main"](["--summary-only", "--no-figure", "--artefacts", str(artefact_copy),
                          "--decoder-artefacts", str(decoder_copy), "--docs-root", str(tmp_path)]) == 0
    for rel, begin, end in (("docs/results.md", benchmark.BEGIN, benchmark.END),
                            ("docs/results.md", limits.BEGIN, limits.END),
                            ("docs/results.md", benchmark.DECODER_BEGIN, benchmark.DECODER_END),
                            ("README.md", benchmark.README_BEGIN, benchmark.README_END),
                            ("README.md", benchmark.DECODER_README_BEGIN, benchmark.DECODER_README_END)):
        committed = benchmark.section((ROOT / rel).read_text(), begin, end)
        assert committed is not None, f"{rel} has no generated benchmark section"
        assert committed == benchmark.section((tmp_path / rel).read_text(), begin, end), rel


def test_unit_scores_per_example_and_per_question():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6], [0.5, 0.5], [0.5, 0.5]])
    labels = np.array([0, 0, 0, 1, 1, 0])
    # argmax picks the first class on a tie, as metrics.accuracy does
    np.testing.assert_array_equal(artefacts.unit_scores(probs, labels, None), [1, 0, 1, 1, 0, 1])
    # questions 7 (rows 0-1), 8 (rows 2-3), 9 (rows 4-5, a tie: half right)
    groups = np.array([7, 7, 8, 8, 9, 9])
    np.testing.assert_allclose(artefacts.unit_scores(probs, labels, groups), [0.0, 1.0, 0.5])
    from w2sjax import metrics

    assert artefacts.unit_scores(probs, labels, groups).mean() == pytest.approx(
        float(metrics.question_accuracy(probs, labels, groups)))
    assert artefacts.unit_scores(probs, labels, None).mean() == pytest.approx(float(metrics.accuracy(probs, labels)))


def test_question_ties_are_those_of_the_runs_own_score():
    """A question is tied when p1 - p0 ties, as in metrics.question_accuracy, even where p1 alone
    does not: piqa_dev's supervisor had such a question, and its export refused the run's row."""
    probs = np.array([[0.25, 0.5], [0.5, 0.75]], np.float32)  # p1 - p0 = 0.25 for both; p1 differs
    labels, groups = np.array([1, 0]), np.array([3, 3])
    np.testing.assert_array_equal(artefacts.unit_scores(probs, labels, groups), [0.5])  # a tie: half right
    from w2sjax import metrics

    assert float(metrics.question_accuracy(probs, labels, groups)) == 0.5

def test_merge_keeps_each_rows_own_predictions():
    rows, arrays = [], {}
    first = {"score/weak__a--1": np.array([1.0, 0.0]), "score/w2s__b--2": np.array([1.0, 1.0]),
             "test_label/seed0": np.array([0, 1])}
    artefacts.merge(rows, arrays, [{"stages": {"weak": "weak__a--1", "w2s": "w2s__b--2"}}], first, tag="p1")
    # the same supervisor stage trained again in another part: equal predictions are stored once
    artefacts.merge(rows, arrays, [{"stages": {"weak": "weak__a--1", "w2s": "w2s__c--3"}}],
                    {"score/weak__a--1": np.array([1.0, 0.0]), "score/w2s__c--3": np.array([0.0, 1.0])}, tag="p2")
    assert sorted(arrays) == ["score/w2s__b--2", "score/w2s__c--3", "score/weak__a--1", "test_label/seed0"]
    # ... different predictions are kept apart, and the row reads its own
    artefacts.merge(rows, arrays, [{"stages": {"weak": "weak__a--1", "w2s": "w2s__d--4"}, "direct_stage": "weak__a--1"}],
                    {"score/weak__a--1": np.array([0.0, 0.0]), "score/w2s__d--4": np.array([1.0, 0.0])}, tag="p3")
    assert rows[2]["stages"]["weak"] == rows[2]["direct_stage"] == "weak__a--1@p3"
    np.testing.assert_array_equal(arrays["score/weak__a--1@p3"], [0.0, 0.0])
    np.testing.assert_array_equal(arrays["score/weak__a--1"], [1.0, 0.0])
    with pytest.raises(ValueError, match="test_label/seed0"):
        artefacts.merge(rows, arrays, [], {"test_label/seed0": np.array([1, 1])}, tag="p4")


def test_carry_over_keeps_the_cells_a_new_export_lacks_with_their_arrays():
    def row(student, seed, w2s):
        return {"weak_model": "glove-bow", "strong_model": student, "loss": "xent", "seed": seed,
                "stages": {"weak": f"weak__g__seed{seed}", "w2s": w2s, "ceiling": f"ceiling__{student}__seed{seed}"}}

    earlier_rows = [row("a", 0, "w2s__a0"), row("a", 1, "w2s__a1"), row("b", 0, "w2s__b0_old")]
    earlier_arrays = {f"{kind}/{name}": np.array([float(i)]) for i, name in enumerate(
        ["weak__g__seed0", "weak__g__seed1", "w2s__a0", "w2s__a1", "w2s__b0_old", "ceiling__a__seed0",
         "ceiling__a__seed1", "ceiling__b__seed0"]) for kind in ("score", "val_score", "probs")}
    for seed in (0, 1):
        earlier_arrays[f"test_row/seed{seed}"] = np.array([seed])
    earlier = artefacts.TaskArtefacts("t", "per example", earlier_rows, earlier_arrays)
    rows = [row("b", 0, "w2s__b0")]
    arrays = {"score/w2s__b0": np.array([9.0]), "score/weak__g__seed0": np.array([0.0]),
              "score/ceiling__b__seed0": np.array([7.0]), "test_row/seed0": np.array([0])}
    assert artefacts.carry_over(earlier, rows, arrays) == 2  # a's two seeds; b seed 0 is the new row
    assert [(r["strong_model"], r["seed"]) for r in rows] == [("b", 0), ("a", 0), ("a", 1)]
    assert rows[0]["stages"]["w2s"] == "w2s__b0" and "score/w2s__b0_old" not in arrays
    assert "score/ceiling__b__seed0" in arrays and arrays["score/ceiling__b__seed0"][0] == 7.0
    for name in ("w2s__a0", "w2s__a1", "ceiling__a__seed1", "weak__g__seed1"):
        for kind in ("score", "val_score", "probs"):
            np.testing.assert_array_equal(arrays[f"{kind}/{name}"], earlier_arrays[f"{kind}/{name}"])
    np.testing.assert_array_equal(arrays["test_row/seed1"], [1])


def test_list_prints_the_plan_and_its_cost(bench, tmp_path, capsys):
    assert bench["main"](["--out", str(tmp_path / "run"), "--tasks", "vader_tweets", "--list"]) == 0
    out = capsys.readouterr().out
    # per seed: minilm-l6 and mpnet-base each 2 supervisors + 1 ceiling + 4 students (5 seeds);
    # the chain part 1 supervisor + 1 ceiling + 2 losses x (2 rungs + 1 direct) (3 seeds)
    assert "vader_tweets-minilm-l6: 35 of 35" in out and "vader_tweets-mpnet-base: 35 of 35" in out
    assert "vader_tweets-chain-minilm-l6-mpnet-base: 24 of 24" in out
    assert "total: 94 stages to train" in out
    # 13 glove-bow x 5 + 10 tfidf x 14 + 31 minilm-l6 (top:2) x 110 + 40 mpnet-base (top:4) x 790 = 35215 s
    assert "estimated cost: 9.8 h" in out
    assert "not counted" not in out and not (tmp_path / "run" / "artefacts").exists()


@pytest.fixture
def tasks_read_once():
    """Each task is read from its prepared data once for the whole test: the protocol runs below
    ask for each task dozens of times (every part, export and resolution), and TFDS decoding those
    reads was half of the test's time. Reading and checking prepared data on each call, as a run
    outside this scope does, is tested in test_data.py and test_integrity.py."""
    from w2sjax.data import registry

    with registry.reuse_loaded_tasks():
        yield


def test_tiny_benchmark_end_to_end(bench, tmp_path, tasks_read_once):
    """Two real tasks, two probe students and a chain, 2 seeds, tiny caps: a partial run (one
    student) lists what it has not run; the full run trains the rest, exports the artefacts,
    regenerates the summary and the docs."""
    spec = json.loads(SHIPPED.read_text())
    spec["supervisors"] = ["glove-bow"]
    spec["students"] = [{"name": "minilm-l2", "kind": "encoder", "trainable": "probe", "lr": 0.005, "seeds": [0, 1]},
                        {"name": "minilm-l6", "kind": "encoder", "trainable": "probe", "lr": 0.01, "seeds": [0, 1]}]
    spec["bootstrap"] = [{"chain": "glove-bow>minilm-l2>minilm-l6", "seeds": [0, 1]}]
    spec["recipe"].update(n_train=200, n_val=40, n_test=100, max_len=32, precision="float32")
    spec["recipe"]["supervisor"] = {"epochs": 5, "batch_size": 32, "lr": 0.02}
    spec["recipe"]["student"].update(epochs=3, batch_size=32, eval_every=4)
    spec["headline"] = {"supervisor": "glove-bow", "student": "minilm-l2", "loss": "logconf", "tasks": "all",
                        "group": "all"}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    proto = protocol_lib.load(tmp_path / "p.json")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("# R\n")
    (tmp_path / "README.md").write_text("# w2sjax\n")
    argv = ["--protocol", str(tmp_path / "p.json"), "--out", str(tmp_path / "run"), "--tasks",
            "vader_tweets,fine_foods", "--docs-root", str(tmp_path), "--no-figure"]
    folder = tmp_path / "run" / "artefacts"
    # a partial run: the first student only; the others are listed as not run, never filled in
    assert bench["main"](argv + ["--students", "minilm-l2"]) == 0
    partial = json.loads((folder / "summary.json").read_text())
    assert {c["strong_model"] for c in partial["cells"]} == {"minilm-l2"}
    assert partial["not_run"] == {"minilm-l6": ["fine_foods", "vader_tweets"],
                                  "glove-bow>minilm-l2>minilm-l6": ["fine_foods", "vader_tweets"]}
    assert "**The run is partial.**" in (tmp_path / "docs" / "results.md").read_text()
    # --list now prices what is left from the seconds that the finished stages recorded (read here
    # from their metadata files): the glove-bow supervisors by their own mean, the chain's minilm-l2
    # rungs (a stage kind never run) by the mean of minilm-l2's ceilings and students
    plan = bench["Plan"](proto, ["fine_foods", "vader_tweets"])
    stages = plan.stages(tmp_path / "run")

    def recorded(pattern):
        return [json.loads(f.read_text())["seconds"]
                for f in (tmp_path / "run").glob(f"*-minilm-l2/checkpoints/{pattern}.out/*/meta/metadata")]

    weak, l2 = recorded("weak__glove-bow__*"), recorded("ceiling__*") + recorded("w2s__*")
    assert len(weak) == 4 and len(l2) == 4 * 3  # 2 tasks x 2 seeds
    cost = bench["estimate"](plan, stages, bench["measured_seconds"](plan, stages, tmp_path / "run"))
    assert cost["measured"][("glove-bow", "probe", "weak")] == (4, pytest.approx(np.mean(weak)))
    assert cost["measured"][("minilm-l2", "probe")] == (12, pytest.approx(np.mean(l2)))
    # glove-bow: 2 tasks x 2 seeds in the minilm-l6 part and in the chain part; minilm-l2: the chain's
    # first rungs (2 x 2 x 2 losses); minilm-l6 (2 x 2 x (1 ceiling + 2 students) + 2 x 2 x (1 ceiling
    # + 2 losses x (1 rung + 1 direct))) never finished a stage and has no figure: counted apart
    assert cost["stages"] == {("glove-bow", "probe"): 8, ("minilm-l6", "probe"): 32, ("minilm-l2", "probe"): 8}
    assert cost["unmeasured"] == {("minilm-l6", "probe"): 32}
    assert cost["seconds"] == pytest.approx(8 * np.mean(weak) + 8 * np.mean(l2))
    # the other student alone: each task's artefacts keep the first student's rows beside its own
    assert bench["main"](argv + ["--students", "minilm-l6"]) == 0
    both = json.loads((folder / "summary.json").read_text())
    assert {(c["task"], c["strong_model"]) for c in both["cells"]} == {
        (t, m) for t in ("fine_foods", "vader_tweets") for m in ("minilm-l2", "minilm-l6")}
    # --export-only rewrites the same artefacts from the run folder, training nothing
    assert bench["main"](argv + ["--export-only", "--artefacts", str(tmp_path / "again")]) == 0
    for name in ("fine_foods.json", "fine_foods.npz", "vader_tweets.json", "vader_tweets.npz"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes(), name
    # a run folder holding only some parts (the run restarted elsewhere for what it had not
    # finished) exports into the published folder without dropping the cells it lacks
    moved, kept = tmp_path / "moved", tmp_path / "kept"
    shutil.copytree(tmp_path / "run", moved, ignore=shutil.ignore_patterns("artefacts"))
    for part in moved.glob("*-minilm-l2"):
        shutil.rmtree(part)
    shutil.copytree(folder, kept)
    moved_argv = [str(moved) if a == str(tmp_path / "run") else a for a in argv]
    assert bench["main"](moved_argv + ["--export-only", "--artefacts", str(kept)]) == 0
    published, exported = artefacts.load(folder, proto.sha256), artefacts.load(kept, proto.sha256)
    for task, art in exported.items():
        assert sorted(map(artefacts.cell_key, art.rows)) == sorted(map(artefacts.cell_key, published[task].rows))
        assert {r["strong_model"] for r in art.rows} == {"minilm-l2", "minilm-l6"}
        for r in art.rows:
            assert art.score(r["stages"]["w2s"]).mean() == pytest.approx(r["w2s_acc"], abs=1e-6)
    # the whole protocol
    assert bench["main"](argv) == 0
    arts = artefacts.load(folder, proto.sha256)
    assert set(arts) == {"vader_tweets", "fine_foods"}
    assert json.loads((folder / "tasks.json").read_text())["tasks"] == ["fine_foods", "vader_tweets"]
    for art in arts.values():
        plain = [r for r in art.rows if not r.get("chain")]
        chains = [r for r in art.rows if r.get("chain")]
        assert len(plain) == 2 * 2 * 2 and len(chains) == 2 * 2  # students x losses x seeds; losses x seeds
        for r in plain + chains:  # every row's accuracies are means of the saved correctness
            assert art.score(r["stages"]["w2s"]).mean() == pytest.approx(r["w2s_acc"], abs=1e-6)
            assert art.arrays[f"probs/{r['stages']['w2s']}"].dtype == np.float16
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
    body = benchmark.section((tmp_path / "docs" / "results.md").read_text())
    assert proto.sha256 in body and "| fine_foods | tuned | glove-bow | minilm-l2 |" in body
    assert "partial" not in body
    # the chain part exports only its chain rows (the plain cells are the students' own parts)
    chain_dir = tmp_path / "run" / "fine_foods-chain-minilm-l2-minilm-l6"
    results = json.loads((chain_dir / "results.json").read_text())
    assert {r["chain"] for r in results["runs"]} == {"glove-bow>minilm-l2>minilm-l6"}
    # ... and each rung trained with its own student's lr (saved in its checkpoint's settings)
    from w2sjax.runner import checkpoint
    from w2sjax.runner.stage_keys import StageKey

    lr_of = {"minilm-l2": 0.005, "minilm-l6": 0.01}
    trained = [StageKey.parse(n) for n in results["checkpoints"]]
    rungs = [k for k in trained if k.kind == "boot"] + [k for k in trained if k.kind in ("w2s", "ceiling")]
    assert {k.parts[0].split(">")[-1] for k in rungs if k.kind == "boot"} == {"minilm-l2", "minilm-l6"}
    for key in rungs:
        model = key.parts[0].split(">")[-1] if key.kind in ("boot", "ceiling") else key.parts[1]
        _, meta = checkpoint.latest(chain_dir / "checkpoints", key.outputs_name)
        assert meta["settings"]["train"]["lr"] == lr_of[model], key.name
    # each exported part's trained parameters were dropped (its predictions stay, checked on reuse)
    ckpts = sorted((tmp_path / "run").glob("*/checkpoints"))
    assert len(ckpts) == 6 and not [p for c in ckpts for p in c.glob("*/[0-9]*/model")]
    assert all(list(c.glob("*/[0-9]*/state")) for c in ckpts)
    # a rerun trains nothing (a retrained stage would save its parameters again) and writes the same summary
    before = (folder / "summary.json").read_bytes()
    assert bench["main"](argv) == 0
    assert (folder / "summary.json").read_bytes() == before
    assert not [p for c in ckpts for p in c.glob("*/[0-9]*/model")]
    # the summary regenerated from the artefacts alone equals the run's
    assert bench["main"](["--summary-only", "--protocol", str(tmp_path / "p.json"), "--artefacts", str(folder),
                          "--docs-root", str(tmp_path), "--no-figure"]) == 0
    assert (folder / "summary.json").read_bytes() == before


def test_figure_keeps_a_near_zero_gap_from_flattening_the_other_tasks():
    def cell(task, loss, pgr, weak=0.6, ceiling=0.8):
        return {"task": task, "weak_model": "glove-bow", "strong_model": "minilm-l6", "loss": loss, "chain": None,
                "weak_acc": weak, "w2s_acc": weak + pgr * (ceiling - weak), "ceiling_acc": ceiling, "pgr": pgr,
                "pgr_ci95": [pgr - 0.1, pgr + 0.1], "gap_task": True}
    cells = [cell("wide", "xent", 0.4), cell("wide", "logconf", 0.3),
             cell("tiny", "xent", -40.0, 0.5, 0.501), cell("tiny", "logconf", 9.0, 0.5, 0.501)]
    fig = benchmark.figure({"cells": cells})
    top, bottom = fig.axes[:2]
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["wide", "tiny"]  # widest test gap first
    lo, hi = benchmark.PGR_LIMITS
    ys = [y for line in bottom.get_lines() for y in line.get_ydata()]
    assert min(ys) == lo and max(ys) == hi and 0.4 in ys and 0.3 in ys  # clipped, the rest unchanged
    assert {line.get_marker() for line in bottom.get_lines()} >= {"o", "v", "^"}
    assert benchmark.figure({"cells": []}) is None


# ---- the decoder parts: their own protocol, folder and section ------------------------------------

DECODERS = ROOT / "experiments" / "benchmark_protocol_decoders.json"


def test_decoder_protocol_extends_version_2_and_fixes_the_decoder_recipe():
    """The decoder protocol names version 2 by the sha256 of its bytes (so v2's artefacts stay
    valid), keeps its task rule and gap rule, and fixes the recipe of experiments/decoder_students.py
    (its lr, top:2, epochs, caps) with balanced training parts and the encoders' test split."""
    v2 = protocol_lib.load(SHIPPED)
    p = protocol_lib.load(DECODERS)
    assert p["extends"]["sha256"] == v2.sha256 == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert p["artefacts"] == "docs/benchmark_decoders" and p.sha256 != v2.sha256
    assert [s["name"] for s in p["students"]] == ["smollm2-135m", "gemma3-270m"]
    assert all(len(s["seeds"]) >= 3 and s["kind"] == "decoder" for s in p["students"])
    assert {"glove-bow"} <= set(p["supervisors"]) and p["losses"] == ["xent", "logconf"]
    assert p["gap_rule"]["slice"] == "validation" and p["gap_rule"]["min_gap"] == v2["gap_rule"]["min_gap"]
    assert all(p["tasks"][key] == v2["tasks"][key] for key in ("exclude", "withdrawn_sources"))
    assert set(v2["tasks"]["tuned_on"]) < set(p["tasks"]["tuned_on"]) and "vader_amazon" in p["tasks"]["tuned_on"]
    recipe = runpy.run_path(str(ROOT / "experiments" / "decoder_students.py"))["get_config"]()
    r, st = p["recipe"], p["recipe"]["student"]
    assert (r["n_train"], r["max_len"], r["precision"]) == (recipe.data.n_train, recipe.data.max_len, recipe.precision)
    assert recipe.data.balance and r["balance"] == "train" and r["n_test"] == v2["recipe"]["n_test"]
    assert (st["epochs"], st["batch_size"], st["early_stopping"]) == (
        recipe.train.epochs, recipe.train.batch_size, recipe.train.early_stopping)
    assert all((s["trainable"], s["lr"]) == (recipe.train.trainable, recipe.train.lr) for s in p["students"])
    assert r["supervisor"] == {"epochs": recipe.weak_train.epochs, "batch_size": recipe.weak_train.batch_size,
                               "lr": recipe.weak_train.lr}
    head = p["headline"]
    assert (head["supervisor"], head["student"], head["loss"]) == (recipe.weak_models[0], "smollm2-135m", "logconf")


def test_decoder_protocol_refuses_a_changed_base_and_a_bad_balance(tmp_path):
    spec = json.loads(DECODERS.read_text())
    (tmp_path / "benchmark_protocol.json").write_bytes(SHIPPED.read_bytes() + b"\n")  # one byte more
    (tmp_path / "d.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=r"^protocol: extends.sha256: benchmark_protocol.json now has sha256"):
        protocol_lib.load(tmp_path / "d.json")
    (tmp_path / "benchmark_protocol.json").write_bytes(SHIPPED.read_bytes())
    assert protocol_lib.load(tmp_path / "d.json")["extends"]["sha256"] == spec["extends"]["sha256"]
    spec["recipe"]["balance"] = "test"
    (tmp_path / "d.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=r"^protocol: recipe.balance: expected one of 'none', 'all', 'train', got 'test'$"):
        protocol_lib.load(tmp_path / "d.json")


def test_decoder_parts_train_as_the_protocol_says(bench):
    """Part-major (every task of SmolLM2-135M first), each part with the decoder recipe; balanced
    training parts except on multiple-choice tasks, n_train lowered where the rarest class is short."""
    from w2sjax.data import Task

    p = protocol_lib.load(DECODERS)
    plan = bench["Plan"](p, ["fine_foods", "vader_tweets"])
    assert [part.name for part in plan.parts] == ["fine_foods-smollm2-135m", "vader_tweets-smollm2-135m",
                                                  "fine_foods-gemma3-270m", "vader_tweets-gemma3-270m"]
    base = bench["base_config"](p)
    assert base.data.balance_train and not base.data.balance and base.train.patience == 0
    labels = np.array([0] * 300 + [1] * 80 + [2] * 620, np.int32)
    text = np.array([f"t{i}" for i in range(len(labels))], dtype=object)
    three = Task("tiny3", "text", 3, ("a", "b", "c"), {"text": text, "label": labels},
                 {"text": text[:30], "label": labels[:30]})
    # the rarest class (80 rows) gives 200 // 3 = 66 to validation: 3 x 14 = 42 training rows
    assert bench["fit_balance"](base, three).data.n_train == 42
    mc = Task("tiny_mc", "text", 2, ("n", "y"), {"text": text[:40], "label": (np.arange(40) % 2).astype(np.int32),
                                                 "group": (np.arange(40) // 2).astype(np.int32)},
              {"text": text[:4], "label": np.array([0, 1, 0, 1], np.int32), "group": np.array([0, 0, 1, 1], np.int32)})
    fitted = bench["fit_balance"](base, mc).data
    assert not fitted.balance_train and fitted.n_train == base.data.n_train
    v2 = bench["base_config"](protocol_lib.load(SHIPPED))  # version 2's parts are untouched
    assert bench["fit_balance"](v2, three) == v2 and not v2.data.balance_train and v2.train.log_every == 16


def test_decoder_list_prints_the_plan_and_its_cost(bench, tmp_path, capsys):
    assert bench["main"](["--protocol", str(DECODERS), "--out", str(tmp_path / "run"), "--tasks", "vader_tweets",
                          "--list"]) == 0
    out = capsys.readouterr().out
    # per seed: 2 supervisors + 1 ceiling + 2 supervisors x 2 losses students, 3 seeds, 2 students
    assert "vader_tweets-smollm2-135m: 21 of 21" in out and "vader_tweets-gemma3-270m: 21 of 21" in out
    assert "total: 42 stages to train" in out
    # 6 x (5 + 14) + 3 x (352 + 4 x 132) + 3 x (264 + 4 x 108) = 4842 s
    assert "estimated cost: 1.3 h" in out and "not counted" not in out


def test_summary_only_writes_the_decoder_section_apart(bench, tmp_path):
    """From synthetic decoder artefacts: the decoder section's table lines and the README's decoder
    sentence equal an independent recomputation, version 2's section and sentence are left alone;
    with no artefacts the section says that nothing has run."""
    shutil.copy(SHIPPED, tmp_path / "benchmark_protocol.json")
    spec = json.loads(DECODERS.read_text())
    spec["medians"]["n_boot"] = 300
    spec["headline"]["student"] = "minilm-l6"  # the synthetic artefacts' student
    (tmp_path / "d.json").write_text(json.dumps(spec))
    proto = protocol_lib.load(tmp_path / "d.json")
    (tmp_path / "docs").mkdir()
    v2_section = f"{benchmark.BEGIN}\nversion 2 stays\n{benchmark.END}"
    (tmp_path / "docs" / "results.md").write_text(f"# R\n\n{v2_section}\n")
    v2_sentence = f"{benchmark.README_BEGIN}\nversion 2's sentence stays\n{benchmark.README_END}"
    (tmp_path / "README.md").write_text(f"# w2sjax\n\n{v2_sentence}\n")
    argv = ["--summary-only", "--protocol", str(proto.path), "--artefacts", str(tmp_path / "a"),
            "--docs-root", str(tmp_path), "--no-figure"]
    assert bench["main"](argv) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    body = benchmark.section(text, benchmark.DECODER_BEGIN, benchmark.DECODER_END)
    assert "**Nothing has run yet.**" in body and "none yet" in body and proto.sha256 in body
    readme = lambda: benchmark.section((tmp_path / "README.md").read_text(), benchmark.DECODER_README_BEGIN,
                                       benchmark.DECODER_README_END)
    assert readme() == f"Decoder students, under their own pre-registered protocol (protocol sha256 `{proto.short}`): " \
                       "no results yet; see docs/benchmark.md."
    tasks = ["fine_foods", "vader_tweets", "bbc_news", "t_three", "t_four", "t_five"]
    _write_synthetic(tmp_path / "a", proto.sha256, tasks)
    assert bench["main"](argv) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    body = benchmark.section(text, benchmark.DECODER_BEGIN, benchmark.DECODER_END)
    lines, chain_lines, med_lines, medians = _expected_lines(tmp_path / "a", proto.spec, 300)
    assert sorted(_table_lines(body)) == sorted(lines + chain_lines + med_lines)
    med, ci, n, _ = medians[("logconf", "gap", "all")]
    assert f"median PGR over gap tasks (all): {_pgr_text(med, ci)} over {n} tasks" in body
    assert "`docs/benchmark_decoders/`" in body and "Nothing has run" not in body
    assert f"# R\n\n{v2_section}\n" in text and f"# w2sjax\n\n{v2_sentence}\n" in (tmp_path / "README.md").read_text()
    assert readme() == (f"Decoder students, under their own pre-registered protocol (protocol sha256 `{proto.short}`): "
                        f"glove-bow → minilm-l6 with `logconf` recovers a median of {_pgr_text(med, ci)} of the gap "
                        f"over {n} gap tasks ({medians[('logconf', 'gap', 'all')][3]} with a defined PGR); every "
                        "number in docs/results.md's decoder section.")


@pytest.mark.slow
def test_tiny_decoder_part_end_to_end(bench, tmp_path):
    """A decoder part of a tiny decoder protocol (a 3-block random Llama from the test fixtures as
    the student, top:1, one task, one seed, tiny caps; about 30 s on 2 loaded cores): it exports
    into its own folder, its training parts and validation slice are balanced while its test rows
    are the unbalanced split's, and only the decoder section of the docs is written."""
    from w2sjax import data

    shutil.copy(SHIPPED, tmp_path / "benchmark_protocol.json")
    student = f"hf:{ROOT / 'tests' / 'fixtures' / 'hf' / 'llama_gqa_tied'}"
    spec = json.loads(DECODERS.read_text())
    spec["supervisors"], spec["losses"] = ["glove-bow"], ["logconf"]
    spec["students"] = [{"name": student, "kind": "decoder", "blocks": 3, "trainable": "top:1", "lr": 0.001,
                         "seeds": [0]}]
    spec["recipe"].update(n_train=100, n_val=40, n_test=60, max_len=32, precision="float32")
    spec["recipe"]["supervisor"]["epochs"] = 5
    spec["recipe"]["student"]["epochs"] = 2.0
    spec["headline"]["student"] = student
    (tmp_path / "d.json").write_text(json.dumps(spec))
    proto = protocol_lib.load(tmp_path / "d.json")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text(f"# R\n\n{benchmark.BEGIN}\nversion 2 stays\n{benchmark.END}\n")
    (tmp_path / "README.md").write_text("# w2sjax\n")
    assert bench["main"](["--protocol", str(proto.path), "--out", str(tmp_path / "run"), "--tasks", "vader_tweets",
                          "--docs-root", str(tmp_path), "--no-figure"]) == 0
    art = artefacts.load(tmp_path / "run" / "artefacts", proto.sha256)["vader_tweets"]
    assert {r["strong_model"] for r in art.rows} == {student} and len(art.rows) == 1
    plain = data.make_splits(data.load_task("vader_tweets"), seed=0, n_train=100, n_val=40, n_test=60)
    np.testing.assert_array_equal(art.test_rows(0), plain.indices["test"])
    assert np.bincount(art.arrays["val_label/seed0"], minlength=2).tolist() == [20, 20]
    text = (tmp_path / "docs" / "results.md").read_text()
    body = benchmark.section(text, benchmark.DECODER_BEGIN, benchmark.DECODER_END)
    assert "| vader_tweets | tuned | glove-bow |" in body and proto.sha256 in body
    assert benchmark.section(text) == "version 2 stays" and (tmp_path / "README.md").read_text() == "# w2sjax\n"


@pytest.mark.slow  # a real benchmark process, interrupted mid-run
def test_ctrl_c_is_one_line_and_the_same_command_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    spec = json.loads(SHIPPED.read_text())
    spec["supervisors"], spec["losses"], spec["bootstrap"] = ["glove-bow"], ["xent"], []
    spec["students"] = [{"name": "minilm-l2", "kind": "encoder", "trainable": "probe", "lr": 0.005, "seeds": [0]}]
    spec["recipe"].update(n_train=200, n_val=40, n_test=100, max_len=32, precision="float32")
    spec["headline"] = {"supervisor": "glove-bow", "student": "minilm-l2", "loss": "xent", "tasks": "all",
                        "group": "all"}
    (tmp_path / "p.json").write_text(json.dumps(spec))
    cmd = [sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--protocol", str(tmp_path / "p.json"),
           "--out", str(tmp_path / "run"), "--tasks", "vader_tweets", "--docs-root", str(tmp_path), "--no-figure"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("# R\n")
    (tmp_path / "README.md").write_text("# w2sjax\n")
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
        deadline = time.time() + 300
        for line in proc.stdout:  # interrupt once the part's stages are planned
            if line.startswith("plan: ") or time.time() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=300)
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "benchmark: interrupted" in err and str(tmp_path / "run") in err
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "run" / "artefacts" / "vader_tweets.json").is_file()


# sha256 of the sorted checkpoint names (name--fingerprint) of every stage of the vader_tweets parts,
# recorded on 2026-12-06 from main at 7c9422c, before train.compile_cost_steps existed.
PINNED_STAGE_NAMES = {
    "benchmark_protocol.json": (94, "135ee7f73f40dfdad4bd6f8dfc27078c5028ade52b5e3f585498235cc632dcd7"),
    "benchmark_protocol_decoders.json": (42, "752e8a141ca6aa5e71860ea5be9d1dd5fbeef59f988a7358620d927009f1c413"),
}


def test_the_registered_runs_keep_their_stage_names(bench, tmp_path):
    """Compiled lengths (train.compile_cost_steps) change outputs by float noise, so a run that
    registered before them keeps one program per length bucket and every stage's name."""
    for name, (count, want) in PINNED_STAGE_NAMES.items():
        p = protocol_lib.load(ROOT / "experiments" / name)
        plan = bench["Plan"](p, ["vader_tweets"])
        assert plan.base.train.compile_cost_steps == 0
        names = sorted(n for part in plan.stages(tmp_path / name).values() for n in part)
        assert (len(names), hashlib.sha256("\n".join(names).encode()).hexdigest()) == (count, want), name
