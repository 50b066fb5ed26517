"""``edgeconf bench``: cascade vs baseline cost and accuracy on any labelled data, with the dual-CNN paper's protocol."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, List, Optional, Sequence

import click

from edgeconf.atomic import atomic_write, refuse_overwriting_inputs, same_path, write_text
from edgeconf.bench.benchmark import (CONFIG_NAMES, TARGET_KEYS, ZOO_TARGETS, BenchSettings, default_paths, parse_targets,
                                      run_bench, unique_notes)
from edgeconf.commands import checked_by, threads_option
from edgeconf.errors import BundleError, ConfigError, ModelLoadError
from edgeconf.pathcheck import check_output_file, check_output_folder


MAX_DUPLICATE = 100  # copies per input, on average: the stream is held in memory, (1 + d)·N inputs


def parse_duplicates(text: str) -> List[float]:
    values = []
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise ConfigError("--duplicate needs at least one ratio, e.g. --duplicate 0,1")
    for part in parts:
        if not part:
            raise ConfigError("--duplicate %r has an empty ratio; give ratios such as 0,0.5,1" % text)
        try:
            v = float(part)
        except ValueError:
            raise ConfigError("--duplicate takes comma-separated ratios such as 0,0.5,1; %r is not a number" % part) from None
        if not (0 <= v <= MAX_DUPLICATE):
            raise ConfigError("--duplicate ratios must be between 0 and %d (d·N copies are appended to the N inputs), "
                              "got %r" % (MAX_DUPLICATE, part))
        values.append(v)
    return values


def parse_configs(text: Optional[str]) -> List[str]:
    if text is None:
        return list(CONFIG_NAMES)
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ConfigError("--configs names no configuration; choose from %s (or leave the option out for all)"
                          % ", ".join(CONFIG_NAMES))
    unknown = [n for n in names if n not in CONFIG_NAMES]
    if unknown:
        raise ConfigError("unknown configurations %s; choose from %s" % (", ".join(unknown), ", ".join(CONFIG_NAMES)))
    return [n for n in CONFIG_NAMES if n in names]


def check_power(name: str) -> str:
    """The --power name, refused in one line before anything runs when no power source has that name."""
    from edgeconf.devices.power import _ALIASES, SOURCE_NAMES

    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key != "auto" and key not in SOURCE_NAMES:
        raise ConfigError("unknown --power source %r; choose auto or one of %s (or an alias: %s)"
                          % (name, ", ".join(SOURCE_NAMES), ", ".join(sorted(_ALIASES))))
    return name


def _same(a: str, b: str) -> bool:
    return same_path(a, b)


def resolve_inputs(bundle: Optional[str], baseline: Optional[str], early_exit: Optional[str], configs: List[str],
                   data: Optional[str] = None, target: Sequence[str] = ()):
    """(bundle, baseline, early_exit, configs, targets): the shipped zoo's paths and targets for what was not given.

    The zoo's defaults (its baseline, early-exit bundle, the FashionMNIST data and its targets) apply to the
    zoo's bundle only: another bundle needs --data, compares against --baseline when given (else 'big' is left
    out) and reports targets only when --target sets them.
    """
    zoo = default_paths()
    if bundle is None:
        if not os.path.isdir(zoo["bundle"]):
            raise BundleError("the shipped zoo bundle %s is not installed; pass a BUNDLE (and --baseline MODEL)"
                              % zoo["bundle"])
        bundle = zoo["bundle"]
    elif not os.path.isdir(bundle):
        raise BundleError("bundle folder %s does not exist" % bundle)
    is_zoo = os.path.isdir(zoo["bundle"]) and _same(bundle, zoo["bundle"])
    if not is_zoo and data is None:
        raise ConfigError("give --data DATA for bundle %s: the data it was built for (the default data, FashionMNIST, "
                          "belongs to the shipped zoo; --data fashion-mnist:test to use it anyway)" % bundle)
    if is_zoo and early_exit is None and os.path.isdir(zoo["early_exit"]):
        early_exit = zoo["early_exit"]
    if baseline is None and "big" in configs:
        if is_zoo:
            if not os.path.isfile(zoo["baseline"]):
                raise ModelLoadError("the shipped baseline %s is not installed; pass --baseline MODEL.onnx, or leave "
                                     "'big' out with --configs" % zoo["baseline"])
            baseline = zoo["baseline"]
        else:
            configs = [c for c in configs if c != "big"]
    if early_exit == "none":
        early_exit = None
    targets = parse_targets(target) if target else (dict(ZOO_TARGETS) if is_zoo else None)
    return bundle, baseline, early_exit, configs, targets


def check_outputs(json_out: Optional[str], pred_out: Optional[str], report_dir: Optional[str],
                  inputs: Sequence[Optional[str]]) -> None:
    """Refuse, before the benchmark runs, an output that cannot be written or would overwrite an input, so a bad
    path fails at once and no output is written (bench writes them all only after the run)."""
    for value, option in ((json_out, "--out"), (pred_out, "--predictions"), (report_dir, "--report")):
        refuse_overwriting_inputs(value, option, list(inputs))
    if json_out:
        check_output_file(json_out, "--out")
    if pred_out:
        check_output_file(pred_out, "--predictions")
    if report_dir:
        check_output_folder(report_dir, "--report")


@click.command("bench")
@click.argument("bundle_arg", metavar="[BUNDLE]", required=False, type=click.Path(file_okay=False))
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help="The cascade bundle to measure, as an option [default: the shipped zoo bundle].")
@click.option("--data", "data", default=None,
              help="Labelled data to run on: an .npz (x uint8 images, y labels), an ImageFolder, IDX files "
                   "(fashion-mnist[:train|test], a folder of them), a CSV / JSON-lines list of path,label (docs/data.md) "
                   "[default, for the shipped zoo only: fashion-mnist:test, from $EDGECONF_FASHION_MNIST or the Debian "
                   "package].")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="The big model to compare against [default: the zoo's big.onnx with the zoo bundle; otherwise "
                   "none, and 'big' and the ratios are left out].")
@click.option("--early-exit", "early_exit", default=None,
              help="Multi-exit bundle for the early_exit configuration [default: the zoo's, with the zoo bundle; "
                   "'none' to skip].")
@click.option("--target", "target", multiple=True, callback=checked_by(lambda v: parse_targets(list(v))),
              help="A target to check, KEY=VALUE (repeat): %s. Default: the zoo's targets for the zoo bundle, none "
                   "otherwise." % "; ".join("%s: %s" % kv for kv in TARGET_KEYS.items()))
@click.option("--max-pixels", type=click.IntRange(1, None), default=None,
              help="Refuse images over this many pixels (header checked before decoding) [default: 50000000].")
@click.option("--duplicate", "duplicate", default="0", show_default=True, callback=checked_by(parse_duplicates),
              help="Duplication ratios d, comma-separated: d·N random copies appended, shuffled.")
@click.option("--near-duplicate", is_flag=True,
              help="Perturb the copies (1-pixel shift, small noise, JPEG re-encode) so exact keys miss.")
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True, help="Inputs per classify call.")
@threads_option()
@click.option("--limit", type=click.IntRange(1, None), default=None, help="Use N of the samples: a random sample drawn with --seed, stratified by class (each class keeps "
                   "its share, so data stored class by class is not cut to its first classes); the report notes it.")
@click.option("--seed", type=click.IntRange(0, None), default=0, show_default=True, help="Seed of the --limit sample, the copies, their order and perturbations.")
@click.option("--configs", "configs", default=None, callback=checked_by(parse_configs),
              help="Comma-separated subset of: %s [default: all]." % ", ".join(CONFIG_NAMES))
@click.option("--json", "as_json", is_flag=True,
              help="Print the results as JSON on stdout (instead of the tables); progress stays on stderr.")
@click.option("--out", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the results as JSON to this file.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.md and PNG plots into this folder.")
@click.option("--predictions", "pred_out", type=click.Path(dir_okay=False), default=None,
              help="Save per-input labels, predictions, memo hits and latencies to this .npz file.")
@click.option("--chunk", type=click.IntRange(1, None), default=250, show_default=True,
              help="Inputs per configuration turn; configurations rotate order every chunk.")
@click.option("--power", default="auto", show_default=True, callback=checked_by(check_power), help="Power source for energy (auto, jtop, ina3221-iio, …).")
@click.option("--form", type=click.Choice(["auto", "staged", "fused"]), default="auto", show_default=True,
              help="Form of the bundle's cascade configurations: staged (one call per stage), fused (the bundle's "
                   "fused graph, from edgeconf fuse; one call per batch) or auto.")
@click.option("--memo-sampling", "memo_sampling", type=click.Choice(["adaptive", "off"]), default="adaptive",
              show_default=True,
              help="The memo configurations' lookups: adaptive (as a bundle's memo: looks up one input in 8 to 64 "
                   "while repeats do not pay, docs/runtime.md) or off (every input, the paper's memo; hit counts then "
                   "do not depend on this machine's timing).")
def bench_cmd(bundle_arg: Optional[str], bundle: Optional[str], data: Optional[str], baseline: Optional[str],
              early_exit: Optional[str], target: Sequence[str], max_pixels: Optional[int], duplicate: str,
              near_duplicate: bool, batch: int, threads: Optional[int], limit: Optional[int], seed: int,
              configs: Optional[str], as_json: bool, json_out: Optional[str], report_dir: Optional[str],
              pred_out: Optional[str], chunk: int, power: str, form: str, memo_sampling: str) -> None:
    """Measure cost and accuracy of big, first, dual and memo configurations of BUNDLE on --data.

    edgeconf bench BUNDLE --data DATA [--baseline MODEL] runs your bundle on your labelled data; with no
    BUNDLE it runs the shipped zoo on the Debian FashionMNIST test split and checks the zoo's targets.
    A bundle or baseline whose preprocessing (grey vs colour) or classes do not fit the data is refused.

    Reproduces the dual-CNN paper's protocol (d·N duplicates appended and shuffled) and reports accuracy,
    latency, process CPU seconds, wall seconds, stage calls, escalation and memo hit/false-hit rates, and
    energy when a power sensor exists (otherwise null). Ratios are against the big baseline.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if bundle_arg and bundle and not _same(bundle_arg, bundle):
        raise ConfigError("two bundles given (%s and --bundle %s); give one" % (bundle_arg, bundle))
    check_power(power)
    asked = parse_configs(configs)
    skip_early = early_exit == "none"
    bundle, baseline, early_exit, names, targets = resolve_inputs(bundle_arg or bundle, baseline, early_exit, asked,
                                                                  data, target)
    check_outputs(json_out, pred_out, report_dir, [data, bundle, baseline, early_exit])
    no_big = ("no --baseline for bundle %s: 'big' is left out, so there are no ratios to it (give --baseline "
              "MODEL.onnx, your most accurate single model)" % bundle) if "big" in asked and "big" not in names else None
    no_early = None
    if "early_exit" in names and early_exit is None:
        names = [n for n in names if n != "early_exit"]
        no_early = ("'early_exit' is left out: --early-exit none skips it" if skip_early else
                    "'early_exit' is left out: no multi-exit bundle to run for bundle %s (give --early-exit "
                    "MULTI_EXIT_BUNDLE)" % bundle)
    if not names:
        why = [w for w in (no_big, no_early) if w]
        raise ConfigError("no configuration left to run of --configs %s: %s; ask for others with --configs"
                          % (",".join(asked), "; ".join(why) if why else "check --configs"))
    notes = [w for w in (no_big, no_early if (configs or not skip_early) else None) if w]
    settings = BenchSettings(bundle=bundle, baseline=baseline, early_exit=early_exit, duplicates=parse_duplicates(duplicate),
                             near_duplicate=near_duplicate, batch=batch, threads=threads, limit=limit, seed=seed,
                             data=data, configs=names, chunk=chunk, power=power, targets=targets, max_pixels=max_pixels,
                             form=form, memo_sampling=memo_sampling == "adaptive", note_unevaluated=bool(target))
    err = Console(stderr=True)
    out = Console()
    if not out.is_terminal:  # a file or a pipe: do not squeeze the table into 80 columns
        out = Console(width=200)
    with Progress(TextColumn("[bold]bench[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
                  disable=not err.is_terminal, auto_refresh=False) as bar:
        # no refresh thread: its CPU time would land in whichever configuration is being timed; the bar is
        # redrawn from the progress callback, which runs between timed windows
        task = bar.add_task("loading", total=None)
        last = [0.0]

        def progress(phase: str, advance: int, total: int) -> None:
            bar.update(task, advance=advance, total=total, description=phase)
            now = time.monotonic()
            if now - last[0] >= 0.1:
                last[0] = now
                bar.refresh()

        runs = run_bench(settings, progress)
    if notes:
        for run in runs:
            run.info["notes"] = unique_notes(list(run.info.get("notes") or []) + notes)
    from edgeconf.bench.report import print_tables, write_report

    payload: Any = runs[0].to_json() if len(runs) == 1 else [r.to_json() for r in runs]
    text = json.dumps(payload, indent=2) + "\n"
    if json_out:
        write_text(json_out, text)
    if pred_out:
        import numpy as np

        arrays = {"duplicates": np.array([float(r.info["duplicate"]) for r in runs])}  # the ratio of each d<i>_
        for i, run in enumerate(runs):
            arrays.update(run.predictions_arrays("d%d_" % i))
        with atomic_write(pred_out, "wb") as f:
            np.savez_compressed(f, **arrays)
    if report_dir:
        written = write_report(runs, report_dir)
        err.print("report: %s" % written["report"])
    if as_json:
        sys.stdout.write(text)
    else:
        print_tables(runs, out)
