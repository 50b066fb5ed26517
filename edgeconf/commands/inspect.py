"""``edgeconf inspect``: show what an ONNX model, a bundle or a TensorRT engine carries."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import click

from edgeconf.backends.onnx_file import numpy_dtype
from edgeconf.backends.threads import Threads, choose_threads
from edgeconf.bundle import MANIFEST, read_manifest, sha256_file
from edgeconf.errors import ModelLoadError
from edgeconf.pathcheck import not_a_file
from edgeconf.schema import loads

META_PREFIX = "edgeconf."


def describe_onnx(path: str) -> Dict[str, Any]:
    """Inputs, outputs, opsets and metadata of an ONNX file (parsed, never executed)."""
    import onnx
    from google.protobuf.message import DecodeError

    if not os.path.isfile(path):
        raise ModelLoadError("model file %s %s" % (path, not_a_file(path)))
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise ModelLoadError("%s is not a readable ONNX model (%s); is the file complete?" % (path, exc)) from None
    except Exception as exc:  # onnx reads a .json/.txt name as its text formats: their parse errors are not ValueErrors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError("%s is not an ONNX model, a bundle or an engine (%s)" % (path, first[:160])) from None
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError("%s does not contain an ONNX graph" % path)

    def dims(vi) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]

    def dtype(vi) -> str:
        return numpy_dtype(vi.type.tensor_type.elem_type).name

    edge, other = {}, {}
    for prop in model.metadata_props:
        if prop.key.startswith(META_PREFIX):
            try:
                edge[prop.key[len(META_PREFIX):]] = loads(prop.value, prop.key, ModelLoadError)
            except ModelLoadError:  # not JSON, too deep, non-finite: shown as the text it is
                edge[prop.key[len(META_PREFIX):]] = prop.value
        else:
            other[prop.key] = prop.value
    inits = {i.name for i in model.graph.initializer}
    return {
        "kind": "onnx",
        "path": path,
        "bytes": os.path.getsize(path),
        "sha256": sha256_file(path),
        "producer": "%s %s" % (model.producer_name, model.producer_version),
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "inputs": [{"name": i.name, "shape": dims(i), "dtype": dtype(i)} for i in model.graph.input if i.name not in inits],
        "outputs": [{"name": o.name, "shape": dims(o), "dtype": dtype(o)} for o in model.graph.output],
        "nodes": len(model.graph.node),
        "edgeconf": edge,
        "metadata": other,
    }


def describe_bundle(folder: str) -> Dict[str, Any]:
    manifest = read_manifest(folder, verify=True)
    data = manifest.to_json()
    data["kind"] = "bundle"
    data["path"] = folder
    data["verified"] = True
    data["form"] = describe_form(manifest, folder)
    # what load_bundle picks on this device for batch-1 work (override with --threads / threads=)
    data["threads"] = choose_threads(None, 1).to_json()
    return data


def describe_form(manifest: Any, folder: Optional[str] = None) -> Dict[str, Any]:
    """Which cascade form load_bundle(form="auto") uses here and why, and what TensorRT needs for the fused graph.

    ``fused.tensorrt_min`` is None when no TensorRT version's parser takes the fused graph; ``fused.tensorrt_reason``
    then says why (the ops or conditionals it does not know, read from the graph in ``folder``)."""
    from edgeconf.fused import choose_form, fused_info

    form, why = choose_form("auto", manifest, "onnxruntime", None)
    out: Dict[str, Any] = {"onnxruntime_cpu": {"form": form, "why": why}}
    info = fused_info(manifest)
    if info is None:
        out["tensorrt"] = {"form": "staged", "why": "the bundle has no fused graph"}
        return out
    try:
        from edgeconf.devices.detect import detect_board
        from edgeconf.devices.profiles import profile_for

        board_trt = profile_for(detect_board()).tensorrt
    except Exception:  # detection is best effort here: inspect must still describe the bundle
        board_trt = None
    need: Optional[str] = info.tensorrt_min
    reason = None
    if need == "none":  # the manifest's mark for a graph no TensorRT parser takes
        need = None
        from edgeconf.fused import fused_tensorrt_reason

        reason = (fused_tensorrt_reason(os.path.join(folder, info.model)) if folder else None) or \
            "no TensorRT version is known to parse this graph (ops or conditionals its parser does not list)"
        trt = {"form": "staged", "why": "%s; the staged bundle is used" % reason}
    elif board_trt is None:
        trt = {"form": "staged", "why": "this board has no TensorRT (the fused graph needs %s or newer)" % need}
    elif _vkey(board_trt) >= _vkey(need):
        trt = {"form": "fused possible", "why": "this board's TensorRT %s parses the fused graph (needs %s); "
               "the tensorrt backend still runs one engine per stage" % (board_trt, need)}
    else:
        trt = {"form": "staged", "why": "this board's TensorRT %s is older than the %s the fused graph needs%s"
               % (board_trt, need, "; 'edgeconf fuse --batch 1' writes one for 8.0+" if info.batch is None else "")}
    out["tensorrt"] = trt
    out["fused"] = {"model": info.model, "batch": "any" if info.batch is None else info.batch,
                    "tensorrt_min": need, "combine": info.combine}
    if reason:
        out["fused"]["tensorrt_reason"] = reason
    problem = _fused_problem(os.path.join(folder, info.model)) if folder else None
    if problem:
        out["fused"]["problem"] = problem
    return out


def _fused_problem(path: str) -> Optional[str]:
    """Why the fused graph at ``path`` cannot be loaded (the one line ``--form fused`` would fail with), or None."""
    from edgeconf.errors import BundleError
    from edgeconf.fused import load_fused

    try:
        load_fused(path)
    except BundleError as exc:
        return str(exc)
    return None


def _vkey(v: str) -> tuple:
    return tuple(int(p) for p in str(v).split(".") if p.isdigit())


def describe(path: str) -> Dict[str, Any]:
    """Describe a bundle folder, an ONNX file or an engine file, chosen by what the path holds."""
    if os.path.isdir(path):
        return describe_bundle(path)
    if os.path.basename(path) == MANIFEST:
        return describe_bundle(os.path.dirname(path) or ".")
    if not os.path.isfile(path):
        raise ModelLoadError("%s %s" % (path, not_a_file(path)))
    engine = path[:-len(".json")]
    if path.endswith(".json") and os.path.isfile(engine):
        raise ModelLoadError("%s is the sidecar of engine %s (its header as JSON); inspect the engine: edgeconf "
                             "inspect %s" % (path, engine, engine))
    with open(path, "rb") as f:
        head = f.read(8)
    if path.endswith((".engine", ".plan", ".trt")) or _looks_like_engine(head):
        from edgeconf.engine_format import describe as describe_engine

        return describe_engine(path)
    return describe_onnx(path)


def _looks_like_engine(head: bytes) -> bool:
    """An edgeconf engine starts with a little-endian header length followed by '{'."""
    return len(head) >= 5 and head[4:5] == b"{"


def _ood_text(ood: Any) -> str:
    """A stage's out-of-distribution rule in a few words: score, threshold and doubt band (or '-')."""
    if not ood:
        return "-"
    text = "%s score above %.4g answers unknown" % (ood.get("score", "its"), ood["threshold"])
    if ood.get("escalate") is not None:
        text += ", above %.4g goes on to the next stage" % ood["escalate"]
    return text


def _print_human(info: Dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    kind = info.get("kind")
    if kind == "bundle":
        console.print("[bold]bundle[/bold] %s  (%s, schema %s, combine=%s, hashes verified)" % (
            info["path"], info.get("name"), info.get("schema"), info.get("combine")))
        table = Table("stage", "model", "score", "threshold", "temperature", "input", "engine")
        for st in info["stages"]:
            model = st["model"] if not st.get("backend") else "%s on %s (%s)" % (st["model"], st.get("url"), st["backend"])
            table.add_row(st["name"], model, st["score"], "%.4f" % st["threshold"], "%.4f" % st["temperature"],
                          st["input"], st.get("engine") or "-")
        console.print(table)
        for st in info["stages"]:
            if st.get("ood"):
                console.print("out-of-distribution rule of %s: %s" % (st["name"], _ood_text(st["ood"])))
        console.print("labels: %s" % ", ".join(info["labels"]))
        console.print("preprocessing: %s" % json.dumps(info["preprocessing"]))
        console.print("memo: %s" % json.dumps(info["memo"]))
        if info.get("threads"):
            console.print("threads here: %s" % Threads(**info["threads"]).describe())
        console.print("provenance: %s" % json.dumps(info.get("provenance", {})))
        form = info.get("form", {})
        if form.get("fused"):
            f = form["fused"]
            trt = ("TensorRT %s+" % f["tensorrt_min"] if f.get("tensorrt_min")
                   else "no TensorRT version known to parse it, see below")
            console.print("fused graph: %s (batch %s, combine %s, %s)" % (f["model"], f["batch"], f["combine"], trt))
            if f.get("problem"):
                console.print("[bold red]fused graph unusable:[/bold red] %s" % f["problem"])
        for where, label in (("onnxruntime_cpu", "form (ONNX Runtime CPU)"), ("tensorrt", "form (TensorRT)")):
            if where in form:
                console.print("%s: %s — %s" % (label, form[where]["form"], form[where]["why"]))
        return
    if kind == "onnx":
        console.print("[bold]onnx[/bold] %s  %d bytes  sha256 %s…  opsets %s  %d nodes" % (
            info["path"], info["bytes"], info["sha256"][:16], info["opsets"], info["nodes"]))
        table = Table("io", "name", "shape", "dtype")
        for i in info["inputs"]:
            table.add_row("input", i["name"], str(i["shape"]), i["dtype"])
        for o in info["outputs"]:
            table.add_row("output", o["name"], str(o["shape"]), o["dtype"])
        console.print(table)
        if info["edgeconf"]:
            for k, v in info["edgeconf"].items():
                console.print("edgeconf.%s = %s" % (k, json.dumps(v)))
        else:
            console.print("no edgeconf metadata (not exported by edgeconf)")
        return
    if kind == "engine":
        console.print("[bold]engine[/bold] %s  %d bytes (plan %d bytes)  %s" % (
            info["path"], info["bytes"], info["plan_bytes"], info["format"]))
        if info.get("header") is None:
            return
        for key, label in (("tensorrt", "TensorRT"), ("gpu", "GPU"), ("compute_capability", "compute capability"),
                           ("precision", "precision")):
            console.print("%s: %s" % (label, info.get(key) if info.get(key) is not None else "not recorded"))
        for k, v in (info.get("edgeconf") or {}).items():
            console.print("edgeconf.%s = %s" % (k, json.dumps(v)))
        console.print("sidecar (%s): %s" % (os.path.basename(info["path"]) + ".json",
                                            "present" if info.get("sidecar") else "absent"))
        if info.get("rebuild"):
            console.print("rebuild: %s" % info["rebuild"])
        return
    console.print_json(data=info)


@click.command("inspect")
@click.argument("artifact", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect_cmd(artifact: str, as_json: bool) -> None:
    """Show what ARTIFACT carries: an ONNX model, a bundle folder, or a TensorRT engine."""
    info = describe(artifact)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        _print_human(info)
