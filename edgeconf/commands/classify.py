"""``edgeconf classify``: run a bundle on images, folders, arrays or labelled data sets; JSON lines out.

Every input is counted (repeats and memo hits included). With labels (an .npz ``y``, an ImageFolder, a
labelled list, IDX files) the summary gives accuracy, per-class accuracy, escalation and memo hits.
``--out`` is written atomically: a failed run leaves an earlier file untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import click
import numpy as np

from edgeconf.atomic import atomic_write, check_termination, refuse_overwriting_inputs
from edgeconf import data_path
from edgeconf.bundle import MANIFEST, load_bundle, read_manifest
from edgeconf.commands import threads_option
from edgeconf.datasets import FORMATS_HELP, Dataset, Sample, open_dataset
from edgeconf.datasets.images import is_image_path
from edgeconf.errors import DataError

#: Inputs per cascade call by default: files are not a camera, so classify batches them. On the shipped bundle
#: (2-core x86, one thread) --batch 64 costs 0.89-0.91x the CPU per image of a batch-1 loop over the cascade alone,
#: JSON lines included; --batch 1 costs 1.5x, as the Python between two model calls evicts their weights from cache.
DEFAULT_BATCH = 64

#: What --backend accepts: the runners a bundle's local stages can load on (Triton stages are named in the bundle).
BACKENDS = ("onnxruntime", "tensorrt", "ort-tensorrt", "auto")

#: Seconds between flushes of the JSON lines (a reader of stdout gets them as they come, without a write per input).
FLUSH_S = 0.2


@dataclass
class Tally:
    """What a classify run saw: answers, labels, skipped inputs."""

    classes: int
    inputs: int = 0
    memo_hits: int = 0
    unknown: int = 0  # answered "unknown" by a stage's out-of-distribution rule
    skipped: List[Dict[str, str]] = field(default_factory=list)
    truth: List[int] = field(default_factory=list)
    answer: List[int] = field(default_factory=list)

    def add(self, res: Any, target: Optional[int]) -> None:
        self.inputs += 1
        self.memo_hits += int(res.memo_hit)
        self.unknown += int(bool(res.unknown))
        if target is not None:
            self.truth.append(target)
            self.answer.append(int(res.class_id))

    def summary(self, cascade: Any) -> Dict[str, Any]:
        labels = cascade.labels or []
        out: Dict[str, Any] = {"inputs": self.inputs + len(self.skipped), "classified": self.inputs,
                               "skipped": len(self.skipped), "labelled": len(self.truth), "accuracy": None,
                               "per_class": None, "memo_hits": self.memo_hits,
                               "memo_hit_rate": self.memo_hits / self.inputs if self.inputs else None,
                               "unknown": self.unknown, "unknown_rate": self.unknown / self.inputs if self.inputs else None}
        if self.truth:
            t, a = np.asarray(self.truth), np.asarray(self.answer)
            out["accuracy"] = float((t == a).mean())
            per = {}
            for k in np.unique(t):
                name = labels[k] if k < len(labels) else str(int(k))
                sel = t == k
                per[name] = {"class": int(k), "inputs": int(sel.sum()), "accuracy": float((a[sel] == k).mean())}
            out["per_class"] = per
        c = cascade.counters
        out.update({"model_inputs": c.inputs, "stage_calls": list(c.calls), "exits": list(c.exits),
                    "escalation_rate": c.escalation_rate,
                    "stage_seconds": [round(s, 6) for s in c.stage_seconds]})
        remote = set(cascade.remote_stages)
        if remote:  # a remote stage's entry in stage_seconds is the wait on its server, not this machine's compute:
            # model_seconds sums the local stages, remote_seconds the remote ones (as run and demo report them)
            out.update({"model_seconds": round(sum(s for k, s in enumerate(c.stage_seconds) if k not in remote), 6),
                        "remote_seconds": round(sum(s for k, s in enumerate(c.stage_seconds) if k in remote), 6)})
        if getattr(c, "remote_inputs", 0):  # a remote stage: the inputs that reached it, of them those sent to its
            # server, and those that fell back (the circuit breaker's local answers among them: circuit_open)
            out.update({"remote_inputs": c.remote_inputs, "remote_sent": c.remote_sent,
                        "remote_failures": c.remote_failures, "remote_reasons": dict(c.remote_reasons)})
        if cascade.memo is not None:
            out["memo"] = cascade.memo.stats.to_json()
        if self.skipped:
            out["skipped_inputs"] = list(self.skipped)
        return out


def _open_all(inputs: Sequence[str], max_pixels: Optional[int]) -> List[Dataset]:
    out = []
    for spec in inputs:
        ds = open_dataset(spec, max_pixels=max_pixels)
        if ds.model_ready:
            raise DataError("%s holds model-ready float arrays; classify takes raw uint8 images (the bundle's "
                            "preprocessing prepares them)" % spec)
        out.append(ds)
    return out


def _targets(ds: Dataset, cascade: Any) -> Optional[np.ndarray]:
    classes = getattr(cascade, "classes", 0) or (len(cascade.labels) if cascade.labels else None)
    return ds.labels_for(cascade.labels, classes)


def _batches(datasets: Sequence[Dataset], targets: Sequence[Optional[np.ndarray]], size: int, skip_errors: bool,
             tally: Tally) -> Iterator[List[Tuple[Sample, Optional[int]]]]:
    batch: List[Tuple[Sample, Optional[int]]] = []
    for ds, y in zip(datasets, targets):
        for s in ds.samples(skip_errors=skip_errors):
            if s.error is not None:
                tally.skipped.append({"input": s.name, "error": s.error})
                continue
            batch.append((s, int(y[s.index]) if y is not None else None))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def _output(path: Optional[str]) -> Iterator[IO[str]]:
    if path:
        with atomic_write(path, "w") as f:
            yield f
    else:
        yield sys.stdout


class _NoBar:
    """Stands in for the progress bar when stderr is not a terminal (nothing is drawn, not even a newline)."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        return None


def _progress(total: int) -> Any:
    from rich.console import Console

    err = Console(stderr=True)
    if not err.is_terminal:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("classify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                    transient=True)


def _print_summary(s: Dict[str, Any], labels: Sequence[str]) -> None:
    echo = lambda text: click.echo(text, err=True)  # noqa: E731
    line = "classified %d of %d inputs" % (s["classified"], s["inputs"])
    if s["skipped"]:
        line += " (%d unreadable, skipped)" % s["skipped"]
    if s["unknown"]:
        line += "; %d answered unknown (%.1f %%: no class, by a stage's out-of-distribution rule)" % (
            s["unknown"], 100 * s["unknown_rate"])
    if s["memo_hits"]:
        line += "; memo hits %d (%.1f %%)" % (s["memo_hits"], 100 * s["memo_hit_rate"])
    if s["escalation_rate"] is not None:
        line += "; escalation %.1f %% of %d model inputs" % (100 * s["escalation_rate"], s["model_inputs"])
    echo(line)
    if s.get("remote_inputs"):
        echo("remote stage wait %.3f s (the server's work and the network, not this machine's compute; model time "
             "here %.3f s)" % (s["remote_seconds"], s["model_seconds"]))
    if s.get("remote_failures"):
        from edgeconf.backends.remote import reach_text

        echo("%s; %d of them answered by the last local stage instead (%s); their rows carry "
             "remote_failure" % (reach_text(s["remote_inputs"], s["remote_sent"], s["remote_reasons"]),
                                 s["remote_failures"], ", ".join("%s %d" % kv for kv in sorted(s["remote_reasons"].items()))))
    if s["accuracy"] is not None:
        echo("accuracy %.2f %% on %d labelled inputs" % (100 * s["accuracy"], s["labelled"]))
        width = max(len(n) for n in s["per_class"])
        for name, row in s["per_class"].items():
            echo("  %-*s %7.2f %%  (%d)" % (width, name, 100 * row["accuracy"], row["inputs"]))
    for item in s.get("skipped_inputs", []):
        echo("skipped %s: %s" % (item["input"], item["error"]))
    echo("summary: %s" % json.dumps({k: v for k, v in s.items() if k not in ("per_class", "skipped_inputs")}))


def split_bundle(args: Sequence[str]) -> Tuple[str, List[str]]:
    """``[BUNDLE] INPUTS...``: the first argument is the bundle when it is a bundle folder (it holds the
    manifest); otherwise every argument is an input and the shipped FashionMNIST cascade answers."""
    if args and args[0].lower().endswith(".onnx") and os.path.isfile(args[0]):
        raise DataError("%s is an ONNX model, not a bundle folder; classify runs a bundle (a folder with %s and its "
                        "stages): build one from your models with 'edgeconf cascade MODEL_A.onnx [MODEL_B.onnx ...] "
                        "--data LABELLED_DATA --out BUNDLE' (see 'edgeconf cascade --help'), then run 'edgeconf "
                        "classify BUNDLE INPUTS...'" % (args[0], MANIFEST))
    if args and os.path.isfile(os.path.join(args[0], MANIFEST)):
        if len(args) == 1:
            raise DataError("%s is a bundle; give the images to classify after it: edgeconf classify %s INPUTS..."
                            % (args[0], args[0]))
        return args[0], list(args[1:])
    if args and _looks_like_bundle(args[0]):
        read_manifest(args[0], verify=False)  # raises the bundle's problem in inspect's words (no manifest file)
    return data_path("zoo", "bundle"), list(args)


def _looks_like_bundle(path: str) -> bool:
    """A folder with an ``edgeconf.json`` entry (not a readable file), or with ONNX stage files and no images:
    a bundle gone wrong, not a folder of data."""
    if not os.path.isdir(path):
        return False
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return MANIFEST in names or (any(n.lower().endswith(".onnx") for n in names)
                                 and not any(is_image_path(n) for n in names))


@click.command("classify")
@click.argument("args", nargs=-1, required=True, metavar="[BUNDLE] INPUTS...")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON lines to this file (atomically: complete or not at all) instead of stdout.")
@click.option("--batch", "batch_size", type=click.IntRange(1, 4096), default=DEFAULT_BATCH, show_default=True,
              help="Inputs per cascade call; only the unsure part of a batch reaches later stages. Batches cost less "
                   "CPU per input than one call per input; --batch 1 answers each input as a camera would.")
@click.option("--skip-errors", is_flag=True,
              help="Continue past unreadable inputs and list them at the end (default: stop at the first).")
@click.option("--max-pixels", type=click.IntRange(1, None), default=None,
              help="Refuse images larger than this many pixels, checked from the file header before decoding "
                   "[default: $EDGECONF_MAX_IMAGE_PIXELS or 50000000].")
@click.option("--no-memo", is_flag=True, help="Disable the bundle's memo cache.")
@threads_option()
@click.option("--backend", type=click.Choice(BACKENDS), default="onnxruntime", show_default=True,
              help="How the bundle's local stages run: onnxruntime; tensorrt (each stage's engine, its ONNX model on "
                   "onnxruntime where a stage has none); ort-tensorrt (ONNX Runtime's TensorRT execution provider); "
                   "auto (a stage's engine where it runs on this device, else onnxruntime). Remote (Triton) stages "
                   "are set in the bundle.")
@click.option("--json", "json_lines", is_flag=True,
              help="JSON lines on stdout, one object per input: the default output; --json says so explicitly.")
@click.option("--form", type=click.Choice(["auto", "staged", "fused"]), default="auto", show_default=True,
              help="staged: one call per stage; fused: the bundle's fused graph (edgeconf fuse), one call per "
                   "batch; auto: fused only on a GPU execution provider ('edgeconf inspect BUNDLE' says why).")
def classify_cmd(args: Sequence[str], out_path: Optional[str], batch_size: int, skip_errors: bool,
                 max_pixels: Optional[int], no_memo: bool, threads: Optional[int], backend: str, json_lines: bool,
                 form: str) -> None:
    """Classify INPUTS with BUNDLE: one JSON object per input on stdout (JSON lines, with or without --json;
    or --out FILE). Without a BUNDLE (the first argument is not a bundle folder) the shipped FashionMNIST
    cascade answers. BUNDLE is a bundle folder; 'edgeconf cascade' builds one from ONNX models.

    INPUTS are image files, folders of images, ImageFolders (one subfolder per class), .npy/.npz uint8
    arrays (.npz y = labels), IDX files (fashion-mnist[:train|test]) or CSV / JSON-lines lists of
    path,label. Each row: input, class, label, confidence, stage (the stage that answered, counted from 0:
    0 is the first stage, which 'edgeconf inspect' and 'retune --stage' call stage 1), stages_run (how many
    stages ran: 0 for a memo hit), memo_hit, unknown, ood, stage_ms (each invoked stage's time in ms; a remote
    stage's is the wait on its server, listed also when it failed and the row carries remote_failure), and with
    labels truth, truth_label and correct.

    The summary (stderr) counts every input, repeats included; with labels it gives accuracy and
    per-class accuracy, plus escalation, memo hits and the inputs answered unknown (a stage's out-of-distribution
    rule). With a remote stage it adds model_seconds (the local stages' time) and remote_seconds (the wait on the
    server, which stage_seconds counts under that stage), the inputs that reached it (remote_inputs), of them those
    sent to its server (remote_sent; the rest were answered here while its circuit breaker was open) and those
    answered by the last local stage instead (remote_failures, remote_reasons). Its last line is 'summary: {JSON}'.
    """
    bundle, inputs = split_bundle(args)
    refuse_overwriting_inputs(out_path, "--out", [bundle] + list(inputs))
    datasets = _open_all(inputs, max_pixels)
    cascade = load_bundle(bundle, backend=backend, threads=threads, memo=False if no_memo else None, form=form,
                          batch=batch_size)
    try:
        targets = [_targets(ds, cascade) for ds in datasets]
        tally = Tally(len(cascade.labels or []))
        labels = cascade.labels or []
        flushed = time.monotonic()
        with _output(out_path) as out, _progress(sum(len(d) for d in datasets)) as bar:
            task = bar.add_task("classify", total=sum(len(d) for d in datasets))
            for batch in _batches(datasets, targets, batch_size, skip_errors, tally):
                check_termination()  # (a SIGTERM whose exception was dropped stops the run here)
                results = cascade.classify_batch([s.image for s, _ in batch])
                for (s, target), res in zip(batch, results):
                    row: Dict[str, Any] = {"input": s.name}
                    row.update(res.to_json())
                    if target is not None:
                        row.update({"truth": target, "truth_label": labels[target] if target < len(labels) else None,
                                    "correct": bool(res.class_id == target)})
                    out.write(json.dumps(row) + "\n")
                    tally.add(res, target)
                now = time.monotonic()
                if now - flushed >= FLUSH_S:  # stream the lines to a reader without a write per input
                    out.flush()
                    flushed = now
                bar.advance(task, len(batch))
        summary = tally.summary(cascade)
    finally:
        cascade.close()
    summary["form"] = getattr(cascade, "form", None)
    _print_summary(summary, labels)


__all__ = ["classify_cmd", "split_bundle", "Tally", "FORMATS_HELP"]
