"""Presenting ``edgeconf bench`` results: a rich table, a Markdown report and PNG plots (matplotlib, lazily)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeconf.atomic import atomic_write, describe_os_error, write_text
from edgeconf.bench.benchmark import CONFIG_HELP, RunResult, unique_notes
from edgeconf.errors import OutputError
from edgeconf.lazy import require

COLUMNS = ("config", "acc %", "cpu s", "cpu ×big", "wall s", "wall ×big", "mean ms", "p50 ms", "p95 ms", "p99 ms",
           "stage calls", "escal.", "memo hit", "false hit", "energy J")


def _seconds(value: float) -> str:
    """CPU seconds with enough digits to compare small runs (0.0031 s, not 0.00 s)."""
    return "%.2f s" % value if value >= 1 else "%.3g s" % value


def _f(v: Optional[float], fmt: str = "%.3f") -> str:
    return "—" if v is None else fmt % v


def _signed(v: float, digits: int = 2) -> str:
    """A difference with its sign (+0.25, −0.10 as -0.10); one that rounds to zero is 0.00, never -0.00."""
    text = "%+.*f" % (digits, v)
    return "%.*f" % (digits, 0.0) if float(text) == 0 else text


def _pct(v: Optional[float], digits: int = 1) -> str:
    return "—" if v is None else "%.*f %%" % (digits, v * 100)


def rows(run: RunResult) -> List[List[str]]:
    """One row of strings per configuration (shared by the terminal table and the Markdown report)."""
    out = []
    for name, r in run.configs.items():
        rat = run.ratios.get(name, {})
        lat = r.latency_ms
        out.append([name, "%.2f" % (r.accuracy * 100), "%.3f" % r.cpu_s, _f(rat.get("cpu_s")), "%.3f" % r.wall_s,
                    _f(rat.get("wall_s")), "%.3f" % lat["mean"], "%.3f" % lat["p50"], "%.3f" % lat["p95"],
                    "%.3f" % lat["p99"], "/".join(str(c) for c in r.stage_calls), _pct(r.escalation_rate),
                    _pct(r.memo_hit_rate), _pct(r.memo_false_hit_rate, 2),
                    "not measured" if r.energy_j is None else "%.2f" % r.energy_j])
    return out


def title(run: RunResult) -> str:
    i = run.info
    return ("%s, n=%d, duplicate %g%s → %d inputs, batch %d, %s, %d thread(s), energy: %s"
            % (i["dataset"], i["n"], i["duplicate"], " (near-duplicates)" if i["near_duplicate"] else "",
               i["stream_length"], i["batch"], _forms(i.get("form")), _threads(i["threads"])["intra_op"],
               i["power_source"] or "not measured"))


def _forms(value: Any) -> str:
    """The cascade form(s) of a run: one word when every configuration has the same."""
    if isinstance(value, dict):
        forms = sorted(set(value.values()))
        return forms[0] if len(forms) == 1 else ", ".join("%s %s" % kv for kv in sorted(value.items()))
    return str(value or "staged")


def _threads(value: Any) -> Dict[str, Any]:
    """The run's threading (older JSON recorded only the intra-op count)."""
    return value if isinstance(value, dict) else {"intra_op": value, "spinning": None, "reason": ""}


def target_lines(run: RunResult) -> List[str]:
    """One line per target of the run (the zoo's, or those given with --target), with its limits."""
    t = run.targets
    lines = []
    met = lambda x: "MET" if x["met"] else "not met"  # noqa: E731
    if "dual_vs_big" in t:
        x = t["dual_vs_big"]
        parts = ["accuracy %s points" % _signed(-x["accuracy_drop_points"])]
        if x.get("max_drop_points") is not None:
            need = _signed(-x["max_drop_points"])
            parts[0] += " (need ≥ %s)" % (need if need.startswith("-") else need.lstrip("+")).replace("-", "−")
        parts.append("cpu ratio %s" % _f(x["cpu_ratio"]))
        if x.get("max_cpu_ratio") is not None:
            parts[1] += " (need ≤ %g)" % x["max_cpu_ratio"]
        lines.append("dual vs big: %s: %s" % (", ".join(parts), met(x)))
    if "dual_memo_at_duplicate_1" in t:
        x = t["dual_memo_at_duplicate_1"]
        parts = []
        if x["cpu_ratio"] is not None:  # (None without big: only the false hits were judged)
            parts.append("cpu ratio %s" % _f(x["cpu_ratio"]))
            if x.get("max_cpu_ratio") is not None:
                parts[-1] += " (need ≤ %g)" % x["max_cpu_ratio"]
        parts.append("false hits %s" % _pct(x["false_hit_rate"], 3))
        if x.get("max_false_hit_rate") is not None:
            parts[-1] += " (need ≤ %.2f %%)" % (100 * x["max_false_hit_rate"])
        line = "dual_memo at duplicate 1: %s: %s" % (", ".join(parts), met(x))
        if x.get("repeat_bound") is not None:
            line += "; at best %s (dual × %.0f %% first sightings: every copy answered free)" % (
                _f(x["repeat_bound"]), 100 * x["first_share"])
        lines.append(line)
    if "dual_memo_at_duplicate_0" in t:
        x = t["dual_memo_at_duplicate_0"]
        lines.append("dual_memo at duplicate 0: cpu %s × dual (need ≤ %g): %s"
                     % (_f(x["cpu_ratio_vs_dual"]), x["max_ratio"], met(x)))
    if "dual_cost_model" in t:
        x = t["dual_cost_model"]
        terms = " + ".join("%.3f × %.2f" % rq for rq in zip(x.get("reach", [x["escalation_rate"]]),
                                                           x.get("stage_cost_ratios", [x["stage_cost_ratio"]])))
        lines.append("dual cost %s vs first × (1 + %s) × %g = %s: %s"
                     % (_seconds(x["dual_cpu_s"]), terms, x.get("slack", 1.05), _seconds(x["bound_cpu_s"]), met(x)))
    return lines


def rich_table(run: RunResult) -> Any:
    from rich.table import Table

    table = Table(title=title(run), title_justify="left")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows(run):
        table.add_row(*row)
    return table


def print_tables(runs: Sequence[RunResult], console: Any) -> None:
    for run in runs:
        console.print(rich_table(run))
        for line in target_lines(run):
            console.print("  " + line)
        for note in unique_notes(run.info.get("notes")):
            console.print("  note: " + note)
        console.print()


# ------------------------------------------------------------------------------------------ plots
def _figure(w: float, h: float) -> Any:
    require("matplotlib", "the bench report's plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis 0.05, 0.1, 0.2, 0.5, 1 instead of 5×10⁻²."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _pos: "%g" % v)
    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def _minor_label(v: float, _pos: Any = None) -> str:
    """Labels for the minor ticks of a short log axis: only 2, 3 and 5 times a power of ten."""
    import math

    if v <= 0:
        return ""
    lead = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return "%g" % v if any(abs(lead - d) < 1e-6 for d in (2.0, 3.0, 5.0)) else ""


def base_accuracy(run: RunResult, name: str) -> Optional[float]:
    """A configuration's measured accuracy on the N base samples only: its predictions on the stream inputs that
    are not appended copies (each base sample once), the inputs the λ curve is computed on. None when unknown."""
    m, stream = run.measured.get(name), run.stream
    if m is None or stream is None:
        return None
    base = ~np.asarray(stream.is_copy, dtype=bool)
    if not base.any() or len(m.predictions) != len(base):
        return None
    return float(np.mean(np.asarray(m.predictions)[base] == np.asarray(stream.labels)[base]))


def _span(values: Sequence[float], log: bool, frac: float = 0.05, least: float = 0.0) -> Tuple[float, float]:
    """Axis limits holding every value with a margin of ``frac`` of the span (at least ``least``; on a log axis
    the margin is a factor)."""
    lo, hi = min(values), max(values)
    if log:
        f = max((hi / lo) ** frac, 1.03)
        return lo / f, hi * f
    pad = max((hi - lo) * frac, least)
    return lo - pad, hi + pad


def plot_tradeoff(run: RunResult, path: str) -> Optional[str]:
    """Write :func:`tradeoff_figure` as a PNG to ``path``; None (nothing written) when the run has no curve."""
    fig = tradeoff_figure(run)
    if fig is None:
        return None
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    return path


def tradeoff_figure(run: RunResult) -> Any:
    """Cost vs accuracy over λ (stage-1 threshold), the chosen point, the measured dual and big marked.

    Every accuracy drawn is on the N base samples (the curve's inputs): the measured configurations' accuracy
    is taken from their predictions on the stream's non-copy inputs; the legend gives the whole stream's figure
    (the table's) when the stream holds copies. The legend sits below the axes, so it hides no point."""
    t = run.tradeoff
    if t is None:
        return None
    relative = t["cost_ratio"] is not None
    x = np.asarray(t["cost_ratio"] if relative else t["cost_s"] * 1e6, dtype=float)
    y = np.asarray(t["accuracy"], dtype=float) * 100
    n, length = int(t["inputs"]), int(run.info.get("stream_length") or t["inputs"])
    copies = length != n
    fig = _figure(7.5, 5.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, y, "-", color="#1f77b4", lw=1.5, label="cascade, stage-1 threshold λ swept"
            + (" (later thresholds fixed)" if t.get("later_thresholds") else ""))
    c = t["chosen"]
    cx = c["cost_ratio"] if relative else c["cost_s"] * 1e6
    xs, ys = list(x), list(y)
    ax.plot([cx], [c["accuracy"] * 100], "o", color="#d62728", ms=8, zorder=5,
            label="chosen λ = %.3f (%.1f %% escalate)" % (c["lambda"], c["escalation"] * 100))
    xs.append(cx)
    ys.append(c["accuracy"] * 100)

    def measured(name: str) -> Tuple[float, str]:
        r = run.configs[name]
        acc = base_accuracy(run, name)
        if acc is None or not copies:  # no copies: the stream is the base samples
            return r.accuracy, ""
        return acc, "\n(over the %d-input stream, %scopies included: %.2f %%, the table's figure)" % (
            length, "perturbed " if run.info.get("near_duplicate") else "", r.accuracy * 100)

    dual = run.configs.get("dual")
    ratio = run.ratios.get("dual", {}).get("cpu_s")
    if dual is not None and (ratio is not None or not relative):
        dx = ratio if relative else dual.cpu_s / dual.inputs * 1e6
        acc, more = measured("dual")
        ax.plot([dx], [acc * 100], "x", color="#2ca02c", ms=9, mew=2, zorder=6,
                label="dual, measured: accuracy on the %d base samples %.2f %%, CPU per input over the stream%s"
                % (n, acc * 100, more))
        xs.append(dx)
        ys.append(acc * 100)
    big = run.configs.get("big")
    if big is not None and relative:
        acc, more = measured("big")
        ax.plot([1.0], [acc * 100], "s", color="black", ms=7, zorder=5,
                label="big baseline, measured: accuracy on the %d base samples %.2f %%%s" % (n, acc * 100, more))
        ax.axhline(acc * 100, color="black", lw=0.8, ls=":", label="big's accuracy")
        ax.axhline(acc * 100 - 0.3, color="grey", lw=0.8, ls="--", label="big − 0.3 points")
        xs.append(1.0)
        ys += [acc * 100, acc * 100 - 0.3]
    if relative:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    xs = [v for v in xs if np.isfinite(v) and (v > 0 or not relative)]
    ax.set_xlim(*_span(xs, relative, 0.04, 0.0 if relative else 1.0))
    ax.set_ylim(*_span(ys, False, 0.06, 0.3))
    ax.set_xlabel("CPU cost per input relative to big (log)" if relative else "CPU µs per input")
    ax.set_ylabel("accuracy on the %d base samples (%%)" % n)
    ax.set_title("Cost vs accuracy over λ (n=%d; costs measured at duplicate %g%s)"
                 % (n, run.info["duplicate"], ", near-duplicates" if run.info.get("near_duplicate") else ""))
    if relative:
        lo_x, hi_x = ax.get_xlim()
        if hi_x / max(lo_x, 1e-12) < 10:  # less than a decade: label the minor ticks too
            from matplotlib.ticker import FuncFormatter
            ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.13), fontsize=7.5, frameon=False, ncol=1)
    fig.tight_layout()
    return fig


def plot_costs(runs: Sequence[RunResult], path: str) -> str:
    """Write :func:`costs_figure` as a PNG to ``path``."""
    fig = costs_figure(runs)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def costs_figure(runs: Sequence[RunResult]) -> Any:
    """CPU µs per input of every configuration, one bar per duplication ratio (log scale), with ratios vs big."""
    import numpy as np

    names: List[str] = []
    for run in runs:
        names += [n for n in run.configs if n not in names]
    fig = _figure(max(7.5, 1.25 * len(names) + 2), 4.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(runs))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for j, run in enumerate(runs):
        xs, ys, labels = [], [], []
        for i, name in enumerate(names):
            r = run.configs.get(name)
            if r is None or not r.inputs:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(r.cpu_s / r.inputs * 1e6)
            rat = run.ratios.get(name, {}).get("cpu_s")
            labels.append("" if rat is None else "%.3f" % rat)
        bars = ax.bar(xs, ys, width * 0.95, color=colors[j % len(colors)],
                      label="duplicate %g%s" % (run.info["duplicate"], " (near)" if run.info["near_duplicate"] else ""))
        for bx, by, text in zip(xs, ys, labels):
            ax.text(bx, by * 1.05, text, ha="center", va="bottom", fontsize=6.5, rotation=90)
        del bars
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    top = max((r.cpu_s / r.inputs * 1e6 for run in runs for r in run.configs.values() if r.inputs), default=1.0)
    low = min((r.cpu_s / r.inputs * 1e6 for run in runs for r in run.configs.values() if r.inputs and r.cpu_s > 0),
              default=top)
    ax.set_ylim(low / 3, top * 4)  # the lowest bar keeps a visible height on the log axis
    ax.set_ylabel("process CPU µs per input (log)")
    with_ratios = any(run.ratios.get(n, {}).get("cpu_s") is not None for run in runs for n in run.configs)
    ax.set_title("Cost per configuration" + (" (labels: CPU ratio vs big)" if with_ratios else
                                             " (no baseline: no ratios to big)"))
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------- markdown
def _md_table(run: RunResult) -> List[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    for row in rows(run):
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(runs: Sequence[RunResult], images: Dict[str, Optional[str]]) -> str:
    first = runs[0].info
    lines = ["# edgeconf bench report", "",
             "- data: %s (%s), n = %d, seed %d%s" % (first["dataset"], first["data"] or "default folder", first["n"],
                                                    first["seed"], ", near-duplicate copies" if first["near_duplicate"] else ""),
             "- bundle: `%s` (stage thresholds %s)" % (first["bundle"], "[%s]" % ", ".join(
                 "%.6g" % t for t in first["thresholds"]) if first["thresholds"] is not None else "none"),
             "- baseline: %s" % ("`%s`" % first["baseline"] if first["baseline"] else
                                 "none (no --baseline: `big` and the ratios to it are left out)"),
             "- early-exit bundle: %s" % ("`%s`" % first["early_exit"] if first["early_exit"] else "none"),
             "- batch %d, %s form, ONNX Runtime intra-op threads %d (spinning %s; %s); configurations run %s in one process"
             % (first["batch"], _forms(first.get("form")), _threads(first["threads"])["intra_op"],
                {True: "on", False: "off", None: "?"}[_threads(first["threads"])["spinning"]],
                _threads(first["threads"])["reason"], first["order"]),
             "- CPU seconds are `time.process_time()` deltas of this process; latency is the wall time of the "
             "call that answered each input",
             "- energy: %s" % first["energy_note"], "",
             "Configurations: " + "; ".join("`%s` %s" % (n, CONFIG_HELP[n]) for n in runs[0].configs), ""]
    for run in runs:
        lines += ["## Duplicate %g%s (%d inputs)" % (run.info["duplicate"], " — near-duplicates" if run.info["near_duplicate"] else "",
                                                     run.info["stream_length"]), ""]
        lines += _md_table(run)
        lines.append("")
        for line in target_lines(run):
            lines.append("- " + line)
        for note in unique_notes(run.info.get("notes")):
            lines.append("- note: " + note)
        lines += ["", "Per input: process CPU; wall time; wall time inside the models' run calls; the rest of the wall "
                  "time (edgeconf's own work: preprocessing, cascade bookkeeping, memo key and lookup):", "",
                  "| config | CPU µs | wall µs | model µs | other µs | memo hit ms | memo miss ms |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in run.configs.items():
            if not r.inputs:
                continue
            cpu, wall = r.cpu_s / r.inputs * 1e6, r.wall_s / r.inputs * 1e6
            model = sum(x or 0.0 for x in r.stage_model_s) / r.inputs * 1e6  # fused: the one call, on stage 1
            lines.append("| %s | %.1f | %.1f | %.1f | %s | %s | %s |" % (
                name, cpu, wall, model, _signed(wall - model, 1).lstrip("+"), _f(r.latency_ms.get("hit_mean")), _f(r.latency_ms.get("miss_mean"))))
        lines.append("")
    curve_run = _curve_run(runs)
    t = curve_run.tradeoff if curve_run is not None else None
    if t is not None:
        c, m = t["chosen"], t["max_accuracy"]
        lines += ["## Trade-off over λ", "",
                  "Stage-1 threshold λ swept over 2000 values in (0, 1) on the n base samples, from stage outputs "
                  "computed once; later stages keep their thresholds; cost(λ) = first's process CPU per input + the share "
                  "of inputs reaching each later stage × that stage's process CPU per call (`dual` − `first`, split "
                  "among later stages by their model time): the measured points' unit. The plot draws every "
                  "accuracy on the n base samples (the measured configurations' predictions on the stream's inputs "
                  "that are not copies), so the measured `dual` lies on the curve at the bundle's λ; its cost is the "
                  "whole stream's, equal to the curve's when the stream escalates as often as the base samples (always "
                  "at duplicate 0). Costs from the duplicate %g stream." % curve_run.info["duplicate"], "",
                  "- chosen (bundle) λ = %.4f: accuracy %.2f %%, escalation %.1f %%, cost ratio %s"
                  % (c["lambda"], c["accuracy"] * 100, c["escalation"] * 100, _f(c["cost_ratio"])),
                  "- the paper's rule (max accuracy; here picked on the benchmark split itself, for reference only): "
                  "λ = %.4f, accuracy %.2f %%, escalation %.1f %%, cost ratio %s"
                  % (m["lambda"], m["accuracy"] * 100, m["escalation"] * 100, _f(m["cost_ratio"]))]
        dual = curve_run.configs.get("dual")
        if dual is not None:
            acc = base_accuracy(curve_run, "dual")
            stream = curve_run.info["stream_length"]
            lines.append("- `dual`, measured: accuracy %s on the %d base samples%s, escalation %s over the stream, "
                         "cost ratio %s" % (_pct(acc, 2), t["inputs"], "" if stream == t["inputs"] else
                                            " (%.2f %% over the %d-input stream, %scopies included, as in the table)"
                                            % (dual.accuracy * 100, stream, "perturbed " if
                                               curve_run.info.get("near_duplicate") else ""),
                                            _pct(dual.escalation_rate), _f(curve_run.ratios.get("dual", {}).get("cpu_s"))))
        lines.append("")
    for key, label in (("tradeoff", "Cost vs accuracy over λ"), ("costs", "Cost per configuration")):
        if images.get(key):
            lines += ["![%s](%s)" % (label, os.path.basename(images[key] or "")), ""]
    return "\n".join(lines)


def _curve_run(runs: Sequence[RunResult]) -> Optional[RunResult]:
    """The run whose λ curve the report shows: the duplicate-0 one when there is one, else the first with a curve."""
    with_curve = [r for r in runs if r.tradeoff is not None]
    return next((r for r in with_curve if r.info["duplicate"] == 0), with_curve[0] if with_curve else None)


def write_report(runs: Sequence[RunResult], folder: str) -> Dict[str, Optional[str]]:
    """Write ``report.md``, ``tradeoff.png`` and ``costs.png`` into ``folder``; return their paths."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_os_error(folder, exc, "create the report folder")) from None
    images: Dict[str, Optional[str]] = {"tradeoff": None, "costs": None}
    base = _curve_run(runs)
    if base is not None:
        images["tradeoff"] = plot_tradeoff(base, os.path.join(folder, "tradeoff.png"))
    images["costs"] = plot_costs(runs, os.path.join(folder, "costs.png"))
    md = os.path.join(folder, "report.md")
    write_text(md, markdown(runs, images) + "\n")
    images["report"] = md
    return images
