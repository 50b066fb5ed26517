"""``edgeconf devices``: the detected board, its profile, the power sources found and a few live readings."""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence

import click

from edgeconf.backends.threads import BATCHED_FROM, Threads, choose_threads
from edgeconf.commands import finite_range
from edgeconf.devices.detect import Board, detect_board
from edgeconf.devices.errors import DeviceError
from edgeconf.devices.power import SOURCE_NAMES, PowerSample, PowerSource, open_power_source
from edgeconf.devices.profiles import DeviceProfile, get_profile, profile_for
from edgeconf.errors import ConfigError

NO_SENSOR = "no power sensor: energy is reported as not measured"


def _reading(sample: Optional[PowerSample], t_ref: float, error: Optional[str] = None,
             rail_names: Sequence[str] = ()) -> Dict[str, Any]:
    """One reading as JSON: a rail that was not measured is null in ``rails_mw`` and says why in ``rail_errors``;
    ``total_error`` says why ``total_mw`` is null; ``error`` is set when the whole reading failed."""
    if sample is None:
        return {"t_s": None, "total_mw": None, "rails_mw": {}, "rail_errors": {}, "total_error": None, "error": error}
    names = list(rail_names) + [n for n in list(sample.rails_mw) + list(sample.rail_errors) if n not in rail_names]
    rails: Dict[str, Optional[float]] = {}
    for n in names:
        if n in sample.rails_mw:
            rails[n] = round(sample.rails_mw[n], 1)
        elif n in sample.rail_errors:
            rails[n] = None
    return {"t_s": round(sample.timestamp_s - t_ref, 4),
            "total_mw": None if sample.total_mw is None else round(sample.total_mw, 1),
            "rails_mw": rails, "rail_errors": dict(sample.rail_errors),
            "total_error": sample.total_error if sample.total_mw is None else None, "error": None}


def _read(source: PowerSource, t_ref: float) -> Dict[str, Any]:
    try:
        return _reading(source.read(), t_ref, rail_names=source.rail_names)
    except DeviceError as exc:
        return _reading(None, t_ref, str(exc))


def _not_measured(reading: Dict[str, Any], rail: Optional[str]) -> str:
    """'not measured (why)' for a rail (or the total, with ``rail`` None)."""
    why = reading.get("total_error") if rail is None else reading.get("rail_errors", {}).get(rail)
    return "not measured (%s)" % (why or "no reading")


def _readings(source: PowerSource, count: int, interval: float) -> Optional[List[Dict[str, Any]]]:
    if not source.available:
        return None
    t_ref = source.clock()
    if source.counter:  # a counter gives power only from the second read on
        _read(source, t_ref)
        time.sleep(interval)
    out = []
    for i in range(count):
        if i:
            time.sleep(interval)
        out.append(_read(source, t_ref))
    return out


def _profile_text(p: DeviceProfile) -> List[str]:
    mem = "%d MB" % p.memory_mb if p.memory_mb else "not fixed (host)"
    modes = ", ".join("%d=%s (%g W)" % (m.id, m.name, m.watts) for m in p.power_modes) or "none"
    rails = ", ".join(r.name + (" (whole board)" if r.whole_board else "") for r in p.rails) or "none"
    return ["%s: %s" % (p.id, p.name),
            "memory %s · JetPack %s · TensorRT %s · compute %s" % (mem, p.jetpack or "-", p.tensorrt or "-", p.cuda_compute or "-"),
            "fast precisions %s · INT8 %s · TensorRT workspace %s" % (
                ", ".join(p.precisions), "yes" if p.int8 else "no", "%d MB" % p.trt_workspace_mb if p.trt_workspace_mb else "-"),
            "power modes: %s" % modes, "rails: %s" % rails]


def _threads(profile: DeviceProfile) -> Dict[str, Threads]:
    """The ONNX Runtime threading edgeconf picks on this profile for batch-1 work and for batches."""
    return {"batch1": choose_threads(None, 1, profile), "batched": choose_threads(None, BATCHED_FROM, profile)}


def _board_text(b: Board) -> str:
    parts = [b.model, b.kind, b.machine]
    if b.l4t:
        parts.append("L4T %s" % b.l4t)
    if b.jetpack:
        parts.append("JetPack %s (guess)" % b.jetpack)
    if b.memory_mb:
        parts.append("%d MB RAM" % b.memory_mb)
    parts.append("NVIDIA GPU" if b.has_nvidia_gpu else "no NVIDIA GPU")
    return " · ".join(p for p in parts if p)


def _rails_table(reading: Dict[str, Any], source: PowerSource) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="power (%s)" % escape(source.name), show_header=True)
    table.add_column("rail")
    table.add_column("mW", justify="right")
    if reading.get("error"):
        table.add_row("[red]read failed[/red]", escape(reading["error"]))
        return table
    total = reading["total_mw"]
    failed = total is None or any(mw is None for mw in reading["rails_mw"].values())
    if failed:  # a rail or the total not measured: say why, whole (folded, never cut off)
        table.add_column("why not measured", overflow="fold")

    def row(label: str, mw: Optional[float], why: Optional[str]) -> None:
        if mw is not None:
            table.add_row(label, "%.1f" % mw, *([""] if failed else []))
        else:
            table.add_row(label, "[red]not measured[/red]", escape(why or "no reading"))

    for name, mw in reading["rails_mw"].items():
        row(escape(name), mw, reading.get("rail_errors", {}).get(name))
    row("[bold]total[/bold]", total, reading.get("total_error"))
    return table


def _watch(source: PowerSource, interval: float, count: Optional[int], as_json: bool) -> None:
    t_ref = source.clock()
    if source.counter:
        _read(source, t_ref)
        time.sleep(interval)
    i = 0
    if as_json:
        while count is None or i < count:
            if i:
                time.sleep(interval)
            click.echo(json.dumps(_read(source, t_ref)))
            i += 1
        return
    from rich.console import Console
    from rich.live import Live

    console = Console()
    try:
        with Live(console=console, refresh_per_second=max(1.0, 1.0 / interval)) as live:
            while count is None or i < count:
                if i:
                    time.sleep(interval)
                live.update(_rails_table(_read(source, t_ref), source))
                i += 1
    finally:
        if not console.is_terminal:  # rich ends the table with a newline on a terminal only
            console.line()


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with --watch: JSON lines, one per reading; without a power "
              "sensor to watch, one line with the device facts).")
@click.option("--watch", is_flag=True, help="Keep printing live readings until Ctrl-C (or --count readings).")
@click.option("--interval", type=finite_range(min=0.01), default=0.5, show_default=True,
              help="Seconds between readings.")
@click.option("--count", type=click.IntRange(min=0), default=None,
              help="Number of readings (default: 3, or unlimited with --watch).")
@click.option("--source", "source_name", type=click.Choice(("auto",) + SOURCE_NAMES), default="auto", show_default=True,
              help="Power source to use.")
@click.option("--profile", "profile_id", default=None, help="Use this device profile instead of the detected one.")
@click.option("--root", type=click.Path(file_okay=False), default="/", show_default=True,
              help="Read /proc, /etc and /sys under this folder (fake trees, containers).")
def devices_cmd(as_json: bool, watch: bool, interval: float, count: Optional[int], source_name: str,
                profile_id: Optional[str], root: str) -> None:
    """Show the board, its device profile, the power sources found and a few live readings."""
    if not os.path.isdir(root):
        raise ConfigError("--root %s: no such folder; give the folder that holds the board's /proc, /etc and /sys "
                          "(a copy of a board's tree), or leave --root out for this machine" % root)
    # under another root the tree is not this machine's: the host's architecture (platform.machine()) says
    # nothing about the board the tree describes, so it is left out
    other_root = os.path.realpath(root) != os.path.realpath(os.sep)
    try:
        board = detect_board(root)
        if other_root:
            board = replace(board, machine="")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            profile = get_profile(profile_id) if profile_id else profile_for(board)
        notes = [str(w.message) for w in caught]
        source = open_power_source(source_name, root=root)
    except DeviceError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        if watch:
            _show(board, profile, source, notes, None, as_json, watching=True)
            if source.available:
                _watch(source, interval, count, as_json)
            return
        readings = _readings(source, 3 if count is None else count, min(interval, 0.2) if count is None else interval)
        _show(board, profile, source, notes, readings, as_json, watching=False)
    except KeyboardInterrupt:
        pass
    finally:
        source.close()


def _show(board: Board, profile: DeviceProfile, source: PowerSource, notes: List[str],
          readings: Optional[List[Dict[str, Any]]], as_json: bool, watching: bool) -> None:
    if as_json:
        if watching and source.available:
            return  # the JSON lines of the readings follow
        doc = {"board": dict(board.to_json(), machine=board.machine or None), "profile": profile.to_json(),
               "threads": {k: t.to_json() for k, t in _threads(profile).items()},
               "power": {"source": source.name, "available": source.available, "reason": source.reason,
                         "whole_board": source.whole_board if source.available else None,
                         "counter": source.counter if source.available else None,
                         "candidates": [p.to_json() for p in source.probes]},
               "readings": readings, "warnings": notes}
        # --watch --json is JSON lines: without a sensor to watch, the device facts are its one line
        click.echo(json.dumps(doc) if watching else json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape

    con = Console()
    for n in notes:
        con.print("[yellow]warning:[/yellow] %s" % escape(n))
    con.print("[bold]board[/bold]    %s" % escape(_board_text(board)))
    lines = _profile_text(profile)
    con.print("[bold]profile[/bold]  %s" % escape(lines[0]))
    for line in lines[1:]:
        con.print("         %s" % escape(line))
    plans = _threads(profile)
    con.print("[bold]threads[/bold]  %s" % escape("ONNX Runtime threads: batch 1: %s; batches of %d+: %s"
                                                   % (plans["batch1"].describe(), BATCHED_FROM,
                                                      plans["batched"].describe())))
    if source.available:
        con.print("[bold]power[/bold]    %s: %s" % (escape(source.name), escape(source.reason or "")))
    else:
        con.print("[bold]power[/bold]    [yellow]%s[/yellow]" % NO_SENSOR)
    for p in source.probes:
        mark = "[green]yes[/green]" if p.available else "[red]no[/red]"
        con.print("         %s %s: %s" % (mark, escape(p.name), escape(p.reason or "")))
    if watching:
        if not source.available:
            con.print("[bold]watch[/bold]    nothing to watch without a power sensor")
        return
    if readings is None:
        con.print("[bold]readings[/bold] none (no sensor)")
        return
    for r in readings:
        if r["error"]:
            con.print("[bold]reading[/bold]  [red]failed[/red]: %s" % escape(r["error"]))
        else:
            total = "%.1f mW" % r["total_mw"] if r["total_mw"] is not None else _not_measured(r, None)
            rails = ", ".join("%s %s" % (k, "%.1f" % v if v is not None else _not_measured(r, k))
                              for k, v in r["rails_mw"].items())
            con.print("[bold]reading[/bold]  t=%.2fs total %s (%s)" % (r["t_s"], total, escape(rails or "no rails")))
