"""``edgeconf triton-repo BUNDLE --out REPO``: a Triton model repository for a bundle's server-side stages.

For each server-side stage: ``REPO/<model>/1/model.onnx`` (the stage's ONNX file) and
``REPO/<model>/config.pbtxt`` (platform ``onnxruntime_onnx``, ``max_batch_size``, the input and output specs read
from the ONNX graph without the batch axis, ``dynamic_batching`` and an instance group), ready for
``tritonserver --model-repository REPO``. Server-side stages are the bundle's remote stages (``"backend":
"triton"`` with an ``"onnx"`` file); a bundle without any serves the stages named by ``--stage`` (default: the
last). ``--edge OUT --url URL`` also writes the edge half: a copy of the bundle whose served stages call the
server at URL. Files are written atomically; REPO may exist but a model folder in it is replaced only with
``--force``.

``--fused`` serves instead the whole cascade as one model: the bundle's fused graph (written by ``edgeconf fuse
BUNDLE``, any-batch form): raw uint8 images in; class, confidence, answering stage and probabilities out, so a client
needs no edgeconf at all. Triton's ONNX Runtime backend runs it as one request per batch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

from edgeconf.atomic import describe_os_error, new_folder_beside, same_path, write_bytes, write_text
from edgeconf.commands import checked_by, finite_range
from edgeconf.errors import BundleError, ConfigError, ModelLoadError, OutputError

#: ONNX element type -> Triton config data type
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32",
                  3: "TYPE_INT8", 2: "TYPE_UINT8", 9: "TYPE_BOOL"}
DEFAULT_MAX_BATCH = 64
#: Triton's model config stores max_batch_size and the instance count as int32, max_queue_delay_microseconds as uint64
INT32_MAX = 2 ** 31 - 1
UINT64_MAX = 2 ** 64 - 1
DEFAULT_QUEUE_DELAY_US = 500
FUSED_STAGE = "fused"  # the 'stage' a fused model serves: all of them, in one graph
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class TensorConfig:
    name: str
    data_type: str
    dims: Tuple[int, ...]  # without the batch axis; -1 for dynamic


@dataclass
class ServedModel:
    """One model of the repository and the stage it serves."""

    name: str
    stage: str
    onnx: str  # source path
    inputs: List[TensorConfig]
    outputs: List[TensorConfig]

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "stage": self.stage, "onnx": self.onnx,
                "inputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in self.inputs],
                "outputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in self.outputs]}


def _tensors(values: Sequence[Any], path: str, skip: Sequence[str] = ()) -> List[TensorConfig]:
    out = []
    for v in values:
        if v.name in skip:
            continue
        t = v.type.tensor_type
        dtype = ONNX_TO_TRITON.get(t.elem_type)
        if dtype is None:
            raise ModelLoadError("%s: tensor %r has ONNX element type %d, which the repository cannot describe"
                                 % (path, v.name, t.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims:
            raise ModelLoadError("%s: tensor %r has no batch axis; re-export the model with a dynamic batch axis"
                                 % (path, v.name))
        if dims[0] != -1:
            raise ModelLoadError("%s: tensor %r has a fixed batch axis of %d; re-export it with a dynamic batch axis so "
                                 "Triton can batch requests" % (path, v.name, dims[0]))
        out.append(TensorConfig(v.name, dtype, tuple(dims[1:])))
    return out


def describe_onnx(path: str, name: str, stage: str) -> ServedModel:
    """Input/output specs of an ONNX file for its config (the graph is read, never executed)."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelLoadError("%s is not a readable ONNX model (%s)" % (path, str(exc).splitlines()[0][:200])) from None
    inits = {i.name for i in model.graph.initializer}
    return ServedModel(name, stage, path, _tensors(model.graph.input, path, skip=sorted(inits)),
                       _tensors(model.graph.output, path))


def config_pbtxt(m: ServedModel, max_batch: int = DEFAULT_MAX_BATCH, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                 instances: int = 1, kind: str = "KIND_GPU") -> str:
    """Triton's model configuration (protobuf text format) for one served model."""
    def block(ts: List[TensorConfig]) -> str:
        rows = []
        for t in ts:
            # a per-sample scalar is dims [1] reshaped to [] (Triton wants non-empty dims on batched models)
            dims, reshape = (t.dims, "") if t.dims else ((1,), "\n    reshape: { shape: [ ] }")
            rows.append("  {\n    name: %s\n    data_type: %s\n    dims: [ %s ]%s\n  }"
                        % (json.dumps(t.name), t.data_type, ", ".join(str(d) for d in dims), reshape))
        return ",\n".join(rows)

    what = "the whole cascade (fused graph)" if m.stage == FUSED_STAGE else "stage %s" % m.stage
    return ("# written by edgeconf triton-repo for %s\n"
            "name: %s\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: %d\n"
            "input [\n%s\n]\noutput [\n%s\n]\n"
            "dynamic_batching {\n  max_queue_delay_microseconds: %d\n}\n"
            "instance_group [\n  {\n    count: %d\n    kind: %s\n  }\n]\n"
            % (what, json.dumps(m.name), max_batch, block(m.inputs), block(m.outputs), queue_delay_us, instances, kind))


def _pick(manifest: Any, stages: Sequence[str]) -> List[Any]:
    remote = [s for s in manifest.stages if s.is_remote]
    if stages:
        chosen = []
        for key in stages:
            if key.isdigit() and 1 <= int(key) <= len(manifest.stages):
                chosen.append(manifest.stages[int(key) - 1])
                continue
            found = [s for s in manifest.stages if s.name == key]
            if not found:
                raise ConfigError("--stage %s: the bundle has stages %s (or give a number 1..%d)"
                                  % (key, ", ".join(s.name for s in manifest.stages), len(manifest.stages)))
            chosen.append(found[0])
        return chosen
    return remote or [manifest.stages[-1]]


def _fused_model(bundle: str, manifest: Any, name: Optional[str]) -> ServedModel:
    """The bundle's fused graph as one served model (the whole cascade in one request)."""
    from edgeconf.fused import fused_info, remote_stage_problem, stale_reason

    remote = remote_stage_problem(manifest)
    if remote:
        source = manifest.provenance.get("edge_of")  # an edge bundle written by --edge names its source bundle
        if isinstance(source, str) and source:
            todo = "fuse the bundle it was made from and serve that: edgeconf fuse %s, then edgeconf triton-repo %s " \
                   "--out REPO --fused" % (source, source)
        else:
            todo = "fuse a bundle whose stages all run locally and serve that: edgeconf fuse SOURCE, then edgeconf " \
                   "triton-repo SOURCE --out REPO --fused"
        raise ConfigError("--fused: %s; to serve the whole cascade as one model, %s" % (remote, todo))
    info = fused_info(manifest)
    if info is None:
        raise ConfigError("%s has no fused graph; write one with: edgeconf fuse %s" % (bundle, bundle))
    why = stale_reason(manifest, info)
    if why:
        raise BundleError("the fused graph of %s no longer matches its stages (%s); re-run: edgeconf fuse %s"
                          % (bundle, why, bundle))
    if info.batch == 1:
        raise ConfigError("the fused graph of %s takes one input per call (fused with --batch 1) but Triton batches "
                          "requests; re-run: edgeconf fuse %s --batch any" % (bundle, bundle))
    model_name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", manifest.name) + "_cascade"
    if not NAME_RE.match(model_name):
        raise ConfigError("model name %r is not a valid Triton model folder name (letters, digits, _ . -)" % model_name)
    return describe_onnx(os.path.join(bundle, info.model), model_name, FUSED_STAGE)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _fused_bytes(path: str, manifest: Any) -> bytes:
    """The fused graph with the manifest's current thresholds and temperatures in its initializers.

    edgeconf's own runtime feeds them as inputs on every call; a Triton client sends only images, so the served
    copy must carry them (a bundle retuned since it was fused would otherwise be served at its old values).
    """
    from edgeconf.export.fuse import set_fused_values
    from edgeconf.export.head import load_model

    model, _ = load_model(path)
    last = len(manifest.stages) - 1
    for k, spec in enumerate(manifest.stages):
        set_fused_values(model, k, threshold=None if k == last else spec.threshold, temperature=spec.temperature)
    return model.SerializeToString()


def build_repo(bundle: str, out: str, stages: Sequence[str] = (), max_batch: int = DEFAULT_MAX_BATCH,
               queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, instances: int = 1, kind: str = "gpu",
               force: bool = False, edge: Optional[str] = None, url: Optional[str] = None,
               deadline_ms: Optional[float] = None, fused: bool = False,
               name: Optional[str] = None) -> Dict[str, Any]:
    """Write the repository (and, with ``edge``/``url``, the edge bundle); returns what was written.

    ``fused``: serve the whole cascade as one model (the bundle's fused graph), named ``name``.
    """
    from edgeconf.bundle import read_manifest, save_bundle

    if not 1 <= max_batch <= INT32_MAX:
        raise ConfigError("--max-batch must be in 1..%d (the edge sends batches; Triton's max_batch_size is an int32), "
                          "got %d" % (INT32_MAX, max_batch))
    if not 0 <= queue_delay_us <= UINT64_MAX:
        raise ConfigError("--queue-delay-us must be in 0..%d, got %d" % (UINT64_MAX, queue_delay_us))
    if not 1 <= instances <= INT32_MAX:
        raise ConfigError("--instances must be in 1..%d, got %d" % (INT32_MAX, instances))
    if fused and (stages or edge is not None):
        raise ConfigError("--fused serves the whole cascade as one model: it takes no --stage, and there is no edge "
                          "half (clients send raw images)")
    if name is not None and not fused:
        raise ConfigError("--name names the fused model; use it with --fused (stage models keep their names)")
    if (edge is None) != (url is None):
        raise ConfigError("--edge and --url go together: the edge bundle calls the server at URL")
    if deadline_ms is not None and edge is None:
        raise ConfigError("--deadline-ms sets the deadline of the edge bundle's remote requests; it goes with --edge "
                          "and --url (the repository itself has no deadline)")
    if url is not None:
        from edgeconf.backends.triton import parse_url

        parse_url(url)
    for path, option in ((out, "--out"), (edge, "--edge")):
        if path is not None and os.path.exists(path) and same_path(path, bundle):
            raise ConfigError("%s %s is the bundle itself; writing there would replace it: give a new folder"
                              % (option, path))
    manifest = read_manifest(bundle, verify=True)
    chosen = [] if fused else _pick(manifest, stages)
    if chosen and chosen[0] is manifest.stages[0]:
        raise ConfigError("the first stage must stay on the edge (a remote stage falls back on a local answer); "
                          "choose a later --stage")
    served: List[ServedModel] = []
    for spec in chosen:
        rel = spec.local_file
        if not rel:
            raise BundleError("stage %s is remote without an 'onnx' file, so the bundle does not hold the model the "
                              "server needs; add the ONNX file to the bundle" % spec.name)
        served_name = spec.model if spec.is_remote else spec.name
        if not NAME_RE.match(served_name):
            raise ConfigError("model name %r is not a valid Triton model folder name (letters, digits, _ . -)"
                              % served_name)
        served.append(describe_onnx(os.path.join(bundle, rel), served_name, spec.name))
    if fused:
        served.append(_fused_model(bundle, manifest, name))
    if len({m.name for m in served}) != len(served):
        raise ConfigError("two served stages would share the model name %s" % served[0].name)
    tri_kind = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}[kind]
    for m in served:  # refuse before writing anything
        folder = os.path.join(out, m.name)
        if os.path.exists(folder) and not force:
            raise OutputError("%s already exists; pass --force to replace that model" % folder)
    result: Dict[str, Any] = {"repository": os.path.abspath(out), "models": [m.to_json() for m in served],
                              "max_batch_size": max_batch, "max_queue_delay_us": queue_delay_us, "kind": tri_kind}
    # Everything is written to temporaries first (each model folder beside its final place, the edge bundle beside
    # EDGE) and renamed into place only once all of it is complete: a failed run leaves nothing new behind.
    created_out = not os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_os_error(out, exc, "create the repository folder")) from None
    staged: List[Tuple[str, str]] = []  # (temporary folder, final folder)
    try:
        for m in served:
            try:
                tmp = new_folder_beside(os.path.join(out, m.name))
                staged.append((tmp, os.path.join(out, m.name)))
                os.makedirs(os.path.join(tmp, "1"))
            except OSError as exc:
                raise OutputError(describe_os_error(out, exc, "create a model folder in")) from None
            write_bytes(os.path.join(tmp, "1", "model.onnx"),
                        _fused_bytes(m.onnx, manifest) if m.stage == FUSED_STAGE else _read(m.onnx))
            write_text(os.path.join(tmp, "config.pbtxt"),
                       config_pbtxt(m, max_batch, queue_delay_us, instances, tri_kind))
        if edge is not None:
            _write_edge(bundle, manifest, {m.stage: m.name for m in served}, edge, url, deadline_ms)
            result["edge_bundle"] = os.path.abspath(edge)
            result["url"] = url
        for tmp, final in staged:
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
    except OSError as exc:
        _discard(staged, out if created_out else None)
        raise OutputError(describe_os_error(out, exc, "write the repository")) from None
    except BaseException:
        _discard(staged, out if created_out else None)
        raise
    return result


def _discard(staged: Sequence[Tuple[str, str]], out: Optional[str]) -> None:
    """Remove the temporaries of a failed run (and the repository folder it created, when that is left empty)."""
    for tmp, _ in staged:
        shutil.rmtree(tmp, ignore_errors=True)
    if out is not None:
        try:
            os.rmdir(out)
        except OSError:
            pass


def _write_edge(bundle: str, manifest: Any, names: Dict[str, str], edge: str, url: Optional[str],
                deadline_ms: Optional[float]) -> None:
    """The edge half: a copy of the bundle whose served stages call the server at ``url``, written atomically.

    Every file the manifest lists comes along with its sha256 (OOD parameters included), except the TensorRT engines
    of stages now served remotely and the fused graph (a fused graph holds local models only).
    """
    from edgeconf.engine_format import sidecar_path
    from edgeconf.export.build import write_bundle
    from edgeconf.fused import fused_info

    dropped = set()
    new_stages = []
    for spec in manifest.stages:
        if spec.name in names and not spec.is_remote:
            if spec.engine:
                dropped.update((spec.engine, sidecar_path(spec.engine)))
            spec = replace(spec, model=names[spec.name], backend="triton", url=url, onnx=spec.model, engine=None,
                           deadline_ms=None if deadline_ms is None else float(deadline_ms))
        elif spec.name in names:
            spec = replace(spec, url=url, deadline_ms=spec.deadline_ms if deadline_ms is None else float(deadline_ms))
        new_stages.append(spec)
    info = fused_info(manifest)
    if info is not None:
        dropped.add(info.model)
    kept = {spec.engine for spec in new_stages if spec.engine}
    files = {rel: os.path.join(bundle, rel) for rel in manifest.files if rel not in dropped or rel in kept}
    write_bundle(edge, new_stages, files, manifest.labels, manifest.preprocessing, manifest.combine, manifest.memo,
                 manifest.name + "-edge", dict(manifest.provenance, edge_of=os.path.abspath(bundle)), manifest.extra)


def _check_url(url: str) -> None:
    """``--url``: scheme, host and port (1..65535) checked as the edge bundle's manifest will check them."""
    from edgeconf.backends.triton import parse_url

    parse_url(url)


@click.command("triton-repo")
@click.argument("bundle", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Repository folder to write.")
@click.option("--stage", "stages", multiple=True, help="Stage to serve (name or 1-based number; repeatable). "
              "Default: the bundle's remote stages, or its last stage.")
@click.option("--max-batch", type=click.IntRange(1, INT32_MAX), default=DEFAULT_MAX_BATCH, show_default=True,
              help="max_batch_size of each model.")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=DEFAULT_QUEUE_DELAY_US, show_default=True,
              help="Dynamic batching: longest wait to fill a batch, microseconds.")
@click.option("--instances", type=click.IntRange(1, INT32_MAX), default=1, show_default=True, help="Model instances.")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True, help="Instance kind.")
@click.option("--edge", type=click.Path(file_okay=False), default=None,
              help="Also write the edge bundle here: served stages become remote stages calling --url.")
@click.option("--url", default=None, callback=checked_by(_check_url),
              help="Server the edge bundle calls: grpc://HOST:8001 or http://HOST:8000.")
@click.option("--deadline-ms", type=finite_range(min=0, min_open=True), default=None,
              help="Deadline of the edge bundle's remote requests; with --edge (default: the backend's, 50 ms).")
@click.option("--fused", is_flag=True, help="Serve the whole cascade as one model: the bundle's fused graph "
              "(write it first with 'edgeconf fuse BUNDLE'); raw uint8 images in, answers out.")
@click.option("--name", default=None, help="Model name of the --fused model (default: the bundle's name + _cascade).")
@click.option("--force", is_flag=True, help="Replace model folders that exist in the repository.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def triton_repo_cmd(bundle: str, out: str, stages: Tuple[str, ...], max_batch: int, queue_delay_us: int, instances: int,
                    kind: str, edge: Optional[str], url: Optional[str], deadline_ms: Optional[float], fused: bool,
                    name: Optional[str], force: bool, as_json: bool) -> None:
    """Write a Triton model repository for BUNDLE's server-side stages, or the whole cascade (see docs/fleet.md)."""
    res = build_repo(bundle, out, stages, max_batch, queue_delay_us, instances, kind, force, edge, url, deadline_ms,
                     fused, name)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    for m in res["models"]:
        click.echo("%s/%s  (stage %s: %s -> %s)" % (res["repository"], m["name"], m["stage"],
                                                  ", ".join("%s%s" % (t["name"], t["dims"]) for t in m["inputs"]),
                                                  ", ".join("%s%s" % (t["name"], t["dims"]) for t in m["outputs"])))
    if "edge_bundle" in res:
        click.echo("edge bundle %s calls %s" % (res["edge_bundle"], res["url"]))
    click.echo("serve it: tritonserver --model-repository %s" % res["repository"])
