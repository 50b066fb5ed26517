"""``edgeconf fuse BUNDLE``: write the bundle's whole cascade as one ONNX graph into the bundle."""
from __future__ import annotations

import json
from typing import Optional

import click


@click.command("fuse")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--batch", "batch", type=click.Choice(["any", "1"]), default="any", show_default=True,
              help="any: one graph for any batch size (the unsure subset gathered and scattered; TensorRT 8.5+); "
                   "1: a graph for one input per call (scalar conditionals only; TensorRT 8.0+, e.g. JetPack 4.6).")
@click.option("--remove", is_flag=True, help="Remove the bundle's fused graph instead (file and manifest entries).")
@click.option("--no-check", is_flag=True,
              help="Skip running the bundle staged and fused on probe images to compare their answers.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fuse_cmd(bundle: str, batch: str, remove: bool, no_check: bool, as_json: bool) -> None:
    """Write BUNDLE's cascade as one ONNX graph, fused.onnx, listed and hashed in its manifest.

    The graph takes uint8 pixels at the model's size ((N, H, W) grey or (N, H, W, 3) RGB), does the
    preprocessing arithmetic, runs stage 1, and runs each later stage under an If on the inputs still
    unsure; outputs class, confidence, stage (the answering one), stages_run and probs. Thresholds and
    temperatures are initializers (edgeconf_fused_threshold_K / edgeconf_fused_temperature_K, K from
    0). Load it with --form fused (classify, run, demo, bench) or load_bundle(..., form="fused"); the
    answers equal the staged cascade's (checked on probe images unless --no-check).
    """
    from edgeconf.export.fuse import fuse_bundle, unfuse_bundle

    if remove:
        removed = unfuse_bundle(bundle)
        if as_json:
            click.echo(json.dumps({"bundle": bundle, "removed": removed}))
        else:
            click.echo("%s: %s" % (bundle, "fused graph removed" if removed else "had no fused graph"))
        return
    size: Optional[int] = None if batch == "any" else 1
    report = fuse_bundle(bundle, batch=size, check=not no_check)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo("wrote %s (%d bytes, sha256 %s…, opset %d, %d stages, combine %s, batch %s, %d top-level nodes)"
               % (report.path, report.bytes, report.sha256[:16], report.opset, report.stages, report.combine,
                  "any" if report.batch is None else report.batch, report.nodes))
    if report.tensorrt_reason:
        click.echo("TensorRT: %s; the staged bundle is used there (checked statically)" % report.tensorrt_reason)
    else:
        click.echo("TensorRT: the ONNX parser needs version %s or newer (checked statically)" % report.tensorrt_min)
    if report.checked_inputs:
        click.echo("checked: %d probe images answered identically staged and fused (largest confidence "
                   "difference %.2g)" % (report.checked_inputs, report.max_confidence_diff))
    for note in report.notes:
        click.echo("note: %s" % note)


__all__ = ["fuse_cmd"]
