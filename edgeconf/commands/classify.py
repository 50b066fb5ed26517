"""``edgeconf classify``: run a bundle on images, folders or arrays and print JSON lines."""
from __future__ import annotations

import json
import sys
from typing import List, Optional, Sequence, Tuple

import click
import numpy as np

from edgeconf.bundle import load_bundle
from edgeconf.commands import threads_option
from edgeconf.datasets import iter_inputs


def _batches(items, size: int):
    batch: List[Tuple[str, np.ndarray]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@click.command("classify")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write JSON lines to this file instead of standard output.")
@click.option("--batch", "batch_size", type=click.IntRange(1, 4096), default=1, show_default=True,
              help="Inputs per cascade call; only the unsure part of a batch reaches later stages.")
@click.option("--no-memo", is_flag=True, help="Disable the bundle's memo cache.")
@threads_option()
@click.option("--backend", default="onnxruntime", show_default=True, help="Runner backend (onnxruntime, tensorrt).")
def classify_cmd(bundle: str, inputs: Sequence[str], out_path: Optional[str], batch_size: int, no_memo: bool,
                 threads: Optional[int], backend: str) -> None:
    """Classify INPUTS (image files, folders of images, or .npy/.npz uint8 arrays) with BUNDLE.

    Prints one JSON object per input: input, class, label, confidence, the stage that answered,
    whether the memo cache answered, and each invoked stage's time in ms. A summary goes to stderr.
    """
    cascade = load_bundle(bundle, backend=backend, threads=threads, memo=False if no_memo else None, batch=batch_size)
    out = open(out_path, "w", encoding="utf-8") if out_path else sys.stdout
    try:
        for batch in _batches(iter_inputs(inputs), batch_size):
            results = cascade.classify_batch([img for _, img in batch])
            for (name, _), res in zip(batch, results):
                row = {"input": name}
                row.update(res.to_json())
                out.write(json.dumps(row) + "\n")
            out.flush()
    finally:
        if out_path:
            out.close()
        cascade.close()
    summary = cascade.counters.to_json()
    if cascade.memo is not None:
        summary["memo"] = cascade.memo.stats.to_json()
    click.echo("summary: %s" % json.dumps(summary), err=True)
