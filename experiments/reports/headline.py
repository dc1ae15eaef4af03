"""The headline experiment's summary, tables and figures (``experiments/headline.py``).

From each finished part's ``results.json`` (one ``w2sjax`` experiment per task and training
set-up) this builds one row per (task, supervisor, student, loss[, bootstrap chain]) with seed
means, PGR of the seed means and two 95% intervals (over seeds, and over seeds *and* test examples
from the saved test predictions: :func:`experiments.reports.ladder.seed_and_example_bootstrap_pgr`), the
median PGR across tasks (:func:`w2sjax.report.suite.medians`), and the checks the experiment is judged by.

Figures:

* ``size``: test accuracy against the student's parameters, one panel per task: the supervisor
  (dashed), the student trained on its labels with each loss, and the ceiling (Burns et al. 2023,
  Fig. 3, with parameters in place of compute);
* ``pgr``: PGR with its seed-and-test interval per task, student and loss;
* ``curve``: test accuracy and weak-labelled validation accuracy against steps of one naive
  student trained past the parts' schedule.
"""

from __future__ import annotations

import math
import pathlib
from collections import defaultdict

import numpy as np

from experiments.reports import ladder as ladder_report
from w2sjax.report import plots, suite, tables
from w2sjax.report.results import finite, interval, number, pgr_of_means

GAP = 0.05  # cells whose ceiling beats the supervisor by 5 points or more compare the losses
MIN_GAP = 0.03  # the suite's median over tasks with a real gap


def summary(out: pathlib.Path, parts: dict, results: dict[str, list[dict]], curve: dict | None) -> dict:
    """The summary dict written as ``headline.json``; ``parts`` maps a finished part's name to its
    :class:`Part`, ``results`` to its results: ``results.json`` and those of earlier, narrower
    passes kept beside it (``results.TIME.json``), oldest first. A pair in several of them is
    taken from the one with the most seeds (the newest among equals)."""
    rows = {}
    for name, passes in results.items():
        for res in passes:
            for row in _rows(out / name, parts[name], res):
                key = (row["task"], row["weak_model"], row["strong_model"], row["loss"], row["chain"])
                if key not in rows or row["seeds"] >= rows[key]["seeds"]:
                    rows[key] = row
    rows = list(rows.values())
    sizes = ladder_report.model_sizes(sorted({r["strong_model"] for r in rows}))
    for r in rows:
        r["params"] = sizes.get(r["strong_model"])
    direct = [r for r in rows if not r["chain"]]
    # suite.medians reads weak_acc / ceiling_acc / pgr per (supervisor, student, loss) row.
    meds = suite.medians(direct) + suite.medians(direct, min_gap=MIN_GAP)
    return {"rows": rows, "medians": meds, "targets": targets(direct, meds), "curve": curve}


def _rows(folder: pathlib.Path, part, res: dict) -> list[dict]:
    """One row per (task, supervisor, student, loss[, chain]) of one results dict of a part."""
    res = _chains_as_students(res)
    test_ci = ladder_report.seed_and_example_bootstrap_pgr(folder, res)
    question = _question_means(res)
    rows = []
    for r in tables.summarize(res):
        key = (r["task"], r["weak_model"], r["strong_model"], r["loss"])
        lo, hi = test_ci.get(key, (math.nan, math.nan))
        chain = r["strong_model"] if ">" in r["strong_model"] else None
        rows.append({
            "part": folder.name, "task": r["task"], "weak_model": r["weak_model"],
            "strong_model": r["strong_model"].split(">")[-1], "chain": chain, "loss": r["loss"],
            "trainable": part.trainable, "lr": res.get("config", {}).get("train", {}).get("lr"), "seeds": r["seeds"],
            **{k: r[k] for k in ("weak_acc", "w2s_acc", "ceiling_acc", "weak_acc_ci95", "w2s_acc_ci95",
                                 "ceiling_acc_ci95")},
            "pgr": r["pgr"], "pgr_ci95_seeds": list(r["pgr_ci95"]), "pgr_ci95": [lo, hi],
            **question.get(key, {}),
        })
    return rows


def _chains_as_students(results: dict) -> dict:
    """``results`` with each bootstrap chain's rows named by their chain as the student, so the
    seed-and-test bootstrap (which skips chain rows) scores them beside the direct pairs."""
    runs = [{**{k: v for k, v in r.items() if k != "chain"}, "strong_model": r["chain"]} if r.get("chain") else r
            for r in results["runs"]]
    return {**results, "runs": runs}


def _question_means(results: dict) -> dict:
    """Per (task, weak, strong, loss): seed means of the per-question accuracies (multiple-choice
    tasks) and the PGR of those means."""
    groups = defaultdict(list)
    for run in results["runs"]:
        if "weak_acc_question" in run:
            groups[(run["task"], run["weak_model"], run["strong_model"], run["loss"])].append(run)
    out = {}
    for key, runs in groups.items():
        acc = {k: [r[f"{k}_acc_question"] for r in runs] for k in ("weak", "w2s", "ceiling")}
        out[key] = {f"{k}_acc_question": float(np.mean(v)) for k, v in acc.items()}
        out[key]["pgr_question"] = pgr_of_means(acc["weak"], acc["w2s"], acc["ceiling"])
    return out


def targets(rows: list[dict], meds: list[dict]) -> dict:
    """The experiment's checks, on the direct (not bootstrapped) pairs: tasks with a PGR above 0,
    rungs with rising ceilings, logconf against xent, the best median PGR."""
    positive = sorted({r["task"] for r in rows if finite(r["pgr"]) and r["pgr"] > 0
                       and finite(r["pgr_ci95"][0]) and r["pgr_ci95"][0] > 0})
    rising = {}
    for task in sorted({r["task"] for r in rows}):
        ceil = {}
        for r in rows:
            if r["task"] == task and r["params"]:
                ceil.setdefault((r["params"], r["strong_model"]), r["ceiling_acc"])
        ordered = [ceil[k] for k in sorted(ceil)]
        rising[task] = _longest_rise(ordered)
    cells = {}
    for r in rows:
        if r["ceiling_acc"] - r["weak_acc"] >= GAP:
            cells.setdefault((r["task"], r["weak_model"], r["strong_model"]), {})[r["loss"]] = r["w2s_acc"]
    compared = [c for c in cells.values() if {"xent", "logconf"} <= set(c)]
    logconf_wins = sum(c["logconf"] >= c["xent"] for c in compared)
    best = max((m for m in meds if not m.get("min_gap") and finite(m["median_pgr"])),
               key=lambda m: m["median_pgr"], default=None)
    return {
        "tasks_with_pgr_above_0": positive,
        "ceiling_rungs_rising": rising,
        "logconf_at_least_xent": [logconf_wins, len(compared)],
        "best_median_pgr": None if best is None else {k: best[k] for k in (
            "weak_model", "strong_model", "loss", "median_pgr", "tasks_with_pgr", "tasks")},
    }


def _longest_rise(values: list[float]) -> int:
    """Length of the longest run of strictly rising values (the rungs on which ceilings rise)."""
    best = run = 1 if values else 0
    for a, b in zip(values, values[1:]):
        run = run + 1 if b > a else 1
        best = max(best, run)
    return best


# ---- text -------------------------------------------------------------------------------------

def _size(n) -> str:
    return "?" if not n else f"{n / 1e6:.0f}M"


def _pgr(r: dict, key: str = "pgr_ci95") -> str:
    return "undef." if not finite(r["pgr"]) else number(r["pgr"]) + interval(*r[key])


def markdown(summary: dict) -> str:
    """The tables of ``docs/results.md``: accuracies and PGR per pair, bootstrap, medians, targets."""
    rows = summary["rows"]
    lines = ["| task | supervisor | student | mode | loss | seeds | weak acc | w2s acc | ceiling acc "
             "| PGR [seeds + test] | [seeds] |", "|---" * 11 + "|"]
    order = lambda r: (r["task"], r["weak_model"], r["params"] or 0, r["chain"] or "", r["loss"])
    for r in sorted(rows, key=order):
        student = r["chain"] or f"{r['strong_model']} ({_size(r['params'])})"
        mode = r["trainable"] + ("" if r["trainable"] == "all" or r["lr"] is None else f", lr {r['lr']:g}")
        lines.append(
            f"| {r['task']} | {r['weak_model']} | {student} | {mode} | {r['loss']} | {r['seeds']} | "
            f"{r['weak_acc']:.3f} | {r['w2s_acc']:.3f} ± {r['w2s_acc_ci95']:.3f} | "
            f"{r['ceiling_acc']:.3f} ± {r['ceiling_acc_ci95']:.3f} | {_pgr(r)} | "
            f"{interval(*r['pgr_ci95_seeds'], sep='') if finite(r['pgr']) else '—'} |")
    question = [r for r in rows if "pgr_question" in r]
    if question:
        lines += ["", "Multiple choice, scored per question (seed means):", "",
                  "| task | supervisor | student | loss | weak | w2s | ceiling | PGR |", "|---" * 8 + "|"]
        for r in sorted(question, key=order):
            pq = r["pgr_question"]
            lines.append(f"| {r['task']} | {r['weak_model']} | {r['chain'] or r['strong_model']} | {r['loss']} | "
                         f"{r['weak_acc_question']:.3f} | {r['w2s_acc_question']:.3f} | "
                         f"{r['ceiling_acc_question']:.3f} | {number(pq) if finite(pq) else 'undef.'} |")
    lines += ["", "| supervisor | student | loss | tasks | median PGR [95% CI over tasks] | tasks with a PGR |",
              "|---|---|---|---|---|---|"]
    for m in summary["medians"]:
        which = "all" if not m.get("min_gap") else f"gap ≥ {m['min_gap']:.2f}"
        med = number(m["median_pgr"]) + interval(*m["median_ci95"]) if finite(m["median_pgr"]) else "undef."
        lines.append(f"| {m['weak_model']} | {m['strong_model']} | {m['loss']} | {which} | {med} | "
                     f"{m['tasks_with_pgr']} of {m['tasks']} |")
    t = summary["targets"]
    wins, cells = t["logconf_at_least_xent"]
    best = t["best_median_pgr"]
    lines += ["", "Checks on the direct pairs:", "",
              f"- tasks with a PGR above 0 whose 95% interval over seeds and test examples excludes 0: "
              f"{', '.join(t['tasks_with_pgr_above_0']) or 'none'}",
              "- longest run of rungs with rising ceilings: " + ", ".join(
                  f"{k} {v}" for k, v in t["ceiling_rungs_rising"].items()),
              f"- logconf ≥ xent in {wins} of {cells} (task, supervisor, student) cells with a gap ≥ {GAP:.2f}",
              "- best median PGR across tasks: " + (
                  f"{number(best['median_pgr'])} ({best['weak_model']} → {best['strong_model']}, {best['loss']}, "
                  f"{best['tasks_with_pgr']} of {best['tasks']} tasks)" if best else "none")]
    curve = summary.get("curve")
    if curve:
        test, weak_val = np.array(curve["test_acc"]), np.array(curve["weak_val_acc"])
        pick = int(np.argmax(weak_val))
        lines += ["", f"Training curve ({curve['supervisor']} → {curve['student']}, {curve['loss']}, "
                  f"{curve['task']}, seed {curve['seed']}, {curve['epochs']:g} epochs of "
                  f"{curve['steps_per_epoch']} steps): test accuracy peaks at "
                  f"{test.max():.3f} (step {curve['steps'][int(np.argmax(test))]}), ends at {test[-1]:.3f}; "
                  f"the weak-labelled validation slice picks step {curve['steps'][pick]} "
                  f"(test {test[pick]:.3f}); the supervisor scores {curve['weak_test_acc']:.3f}."]
    return "\n".join(lines)


# ---- figures ----------------------------------------------------------------------------------

LOSS_STYLE = {"xent": ("tab:red", "o"), "logconf": ("tab:blue", "s")}


def figures(summary: dict, supervisor: str = "glove-bow") -> dict:
    """``{"size": fig, "pgr": fig, "curve": fig}``, each only when there is something to draw."""
    out = {}
    direct = [r for r in summary["rows"] if not r["chain"] and r["params"]]
    if direct:
        out["size"] = size_figure(direct, supervisor)
        out["pgr"] = pgr_figure(direct)
    if summary.get("curve"):
        out["curve"] = curve_figure(summary["curve"])
    return out


def size_figure(rows: list[dict], supervisor: str = "glove-bow"):
    """Accuracy against student parameters, one panel per task, ``supervisor`` supervising."""
    tasks = plots._ordered(r["task"] for r in rows)
    labels = plots.model_labels([supervisor] + [r["strong_model"] for r in rows])
    note = plots.name_note(labels)
    fig = plots._figure(3.6 * len(tasks) + 0.4, 4.2 + (0.15 * (note.count("\n") + 1) if note else 0))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        sel = [r for r in rows if r["task"] == task and r["weak_model"] == supervisor]
        students = sorted({(r["params"], r["strong_model"]) for r in sel})
        xs = [p / 1e6 for p, _ in students]
        pick = lambda s, loss: next((r for r in sel if r["strong_model"] == s and r["loss"] == loss), None)
        ceil = [pick(s, "xent") or pick(s, "logconf") for _, s in students]
        ax.errorbar(xs, [r["ceiling_acc"] for r in ceil], yerr=[r["ceiling_acc_ci95"] for r in ceil],
                    color="black", marker="D", capsize=3, label="ceiling (ground truth)")
        for loss, (colour, marker) in LOSS_STYLE.items():
            got = [(x, pick(s, loss)) for x, (_, s) in zip(xs, students) if pick(s, loss)]
            if got:
                ax.errorbar([x for x, _ in got], [r["w2s_acc"] for _, r in got],
                            yerr=[r["w2s_acc_ci95"] for _, r in got], color=colour, marker=marker, capsize=3,
                            label=f"weak-to-strong, {loss}")
        ax.axhline(np.mean([r["weak_acc"] for r in sel]), color="0.4", ls="--",
                   label=f"supervisor ({plots.model_label(supervisor, labels)})")
        ax.set_xscale("log")
        ax.margins(x=0.12)  # the outermost points keep their whole marker
        ax.set_xticks(xs, [f"{_short(plots.model_label(s, labels))}\n{p / 1e6:.0f}M"
                           + _trainable_note(pick(s, "xent") or pick(s, "logconf")) for (p, s) in students], fontsize=7)
        ax.minorticks_off()
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("student parameters (L2, L4, L6: MiniLM layers)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7, loc="lower right")
    plots.suptitle(fig, f"Finetuned students on weak labels: accuracy against size "
                        f"({plots.seeds_text(r['seeds'] for r in rows)}; bars: 95% t-interval over seeds)")
    plots.footnote(fig, labels)
    return fig


def _short(model: str) -> str:
    """A tick label narrow enough for neighbouring sizes on a log axis (MiniLM-L2 at 15M, L4 at 19M)."""
    return model.replace("minilm-l", "L").replace("mpnet-base", "MPNet")


def _trainable_note(row: dict | None) -> str:
    """A tick-label line for students not finetuned end to end: ``(LoRA)``, ``(top 4 blocks)``."""
    mode = (row or {}).get("trainable", "all")
    if mode == "all":
        return ""
    return "\n(LoRA)" if mode == "lora" else f"\n(top {mode.split(':')[1]} blocks)" if mode.startswith("top:") else f"\n({mode})"


def pgr_figure(rows: list[dict]):
    """PGR with its 95% seed-and-test interval per (task, supervisor, student), xent vs logconf."""
    cells = plots._ordered((r["task"], r["weak_model"], r["params"], r["strong_model"]) for r in rows)
    cells.sort(key=lambda c: (c[0], c[1], c[2]))
    labels = plots.model_labels([m for c in cells for m in c[1::2]])
    note = plots.name_note(labels)
    fig = plots._figure(max(6.0, 0.55 * len(cells) + 1.5), 4.4 + (0.15 * (note.count("\n") + 1) if note else 0))
    ax = fig.subplots()
    for offset, (loss, (colour, marker)) in zip((-0.15, 0.15), LOSS_STYLE.items()):
        for i, (task, weak, _, student) in enumerate(cells):
            r = next((r for r in rows if (r["task"], r["weak_model"], r["strong_model"], r["loss"])
                      == (task, weak, student, loss)), None)
            if r is None or not finite(r["pgr"]):
                continue
            lo, hi = r["pgr_ci95"] if finite(r["pgr_ci95"][0]) else r["pgr_ci95_seeds"]
            y = float(np.clip(r["pgr"], -2, 2))
            err = [[max(0.0, y - max(lo, -2)) if finite(lo) else 0], [max(0.0, min(hi, 2) - y) if finite(hi) else 0]]
            ax.errorbar([i + offset], [y], yerr=err, color=colour, marker=marker, capsize=2,
                        label=loss if i == 0 or not ax.get_legend_handles_labels()[1].count(loss) else None)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.axhline(1, color="0.3", lw=0.8, ls=":")
    ax.set_xticks(range(len(cells)), [f"{t}\n{plots.model_label(w, labels)} → {plots.model_label(s, labels)}"
                                      for t, w, _, s in cells], rotation=60, ha="right", rotation_mode="anchor",
                  fontsize=6)
    ax.set_xlim(-0.6, len(cells) - 0.4)  # room for the outer markers, which sit 0.15 off their tick
    ax.set_ylim(-2.1, 2.1)
    ax.set_ylabel("PGR (clipped to ±2)")
    ax.grid(alpha=0.3, axis="y")
    handles, shown = ax.get_legend_handles_labels()
    uniq = dict(zip(shown, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.set_title("PGR of the seed means, 95% bootstrap over seeds and test examples", fontsize=10)
    ax.set_xlabel(plots.wrap("task, supervisor → student (where the test predictions were not readable: "
                             "over seeds only)", fig.get_figwidth() - 1.0, 7), fontsize=7)
    plots.footnote(fig, labels)
    return fig


def curve_figure(curve: dict):
    """Test accuracy (ground truth) and weak-labelled validation accuracy against steps."""
    labels = plots.model_labels([curve["supervisor"], curve["student"]])
    sup, student = (plots.model_label(curve[k], labels) for k in ("supervisor", "student"))
    note = plots.name_note(labels)
    fig = plots._figure(6.4, 3.8 + (0.15 * (note.count("\n") + 1) if note else 0))
    ax = fig.subplots()
    steps = np.array(curve["steps"])
    ax.plot(steps, curve["test_acc"], color="black", marker="o", ms=3, label="test accuracy (ground truth)")
    ax.plot(steps, curve["weak_val_acc"], color="tab:orange", marker="s", ms=3,
            label=f"validation accuracy on {sup}'s labels")
    ax.axhline(curve["weak_test_acc"], color="0.4", ls="--", label=f"supervisor {sup} (test)")
    pick = int(np.argmax(curve["weak_val_acc"]))
    ax.axvline(steps[pick], color="tab:orange", ls=":", label="selected by weak validation")
    for e in range(1, int(curve["epochs"]) + 1):
        ax.axvline(e * curve["steps_per_epoch"], color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel(f"step (grey lines: epochs of {curve['steps_per_epoch']} steps)")
    ax.set_ylabel("accuracy")
    ax.set_title(plots.wrap(f"{sup} → {student} ({curve['loss']}), {curve['task']}, seed {curve['seed']}",
                            fig.get_figwidth() - 1.0, 10), fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.margins(x=0.03)
    plots.footnote(fig, labels)
    return fig
