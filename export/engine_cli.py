"""``edgeconf engine``: build TensorRT engines for a model or a bundle, check them, or strip their header.

    edgeconf engine MODEL.onnx --out MODEL.engine [--fp16|--fp32|--int8 --calib DATA] [--workspace MB]
                    [--profile MIN,OPT,MAX] [--device PROFILE] [--check DATA]
    edgeconf engine BUNDLE/ --out BUNDLE/          one engine per stage, manifest updated (ONNX kept)
    edgeconf engine --strip MODEL.engine --out MODEL.plan
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import click
import numpy as np

from edgeconf.engine_format import read_header, sha256_file, sidecar_path, strip_header
from edgeconf.errors import ConfigError, DataError
from edgeconf.export.errors import ParityError
from edgeconf.export.tensorrt_build import (BuildOptions, build_engine, load_model_inputs, preprocessing_from_metadata,
                                            resolve_options)
from edgeconf.pathcheck import not_a_file

ENGINE_DIR = "engines"


# -- parity ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParityTolerance:
    probs_abs: float  # max |p_engine - p_onnx| over all samples and classes
    min_class_agreement: float
    min_exit_agreement: float


#: FP32 allows TF32 kernels (Ampere and newer use them by default); INT8 moves probabilities most.
TOLERANCES = {
    "fp32": ParityTolerance(1e-3, 0.999, 0.995),
    "fp16": ParityTolerance(1e-2, 0.99, 0.98),
    "int8": ParityTolerance(5e-2, 0.97, 0.95),
}


@dataclass
class ParityReport:
    samples: int
    max_abs_diff_probs: float
    class_agreement: float
    exit_agreement: Optional[float]
    tolerance: ParityTolerance
    passed: bool
    problems: List[str]

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["tolerance"] = asdict(self.tolerance)
        return d


def decisions(outputs: Dict[str, np.ndarray], meta: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(probs, classes, exits) from a confidence-aware model's outputs; falls back to logits + metadata."""
    from edgeconf.confidence import score, softmax

    if "probs" in outputs:
        probs = np.asarray(outputs["probs"], dtype=np.float64)
    else:
        logits_name = str(meta.get("logits", "logits"))
        if logits_name not in outputs:
            raise DataError("the model has neither a 'probs' nor a %r output to compare" % logits_name)
        probs = softmax(np.asarray(outputs[logits_name], dtype=np.float64), float(meta.get("temperature", 1.0)))
    classes = probs.argmax(axis=1)
    if "exit" in outputs:
        exits: Optional[np.ndarray] = np.asarray(outputs["exit"]).astype(bool).reshape(-1)
    elif "threshold" in meta:
        exits = np.asarray(score(str(meta.get("score", "margin")), probs)) >= float(meta["threshold"])
    else:
        exits = None
    return probs, classes, exits


def parity_report(reference: Dict[str, np.ndarray], engine: Dict[str, np.ndarray], meta: Dict[str, Any],
                  precision: str, tolerance: Optional[float] = None) -> ParityReport:
    """Compare engine outputs with ONNX Runtime's on the same inputs against the precision's tolerance."""
    tol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    if tolerance is not None:
        tol = replace(tol, probs_abs=float(tolerance))
    p_ref, c_ref, e_ref = decisions(reference, meta)
    p_eng, c_eng, e_eng = decisions(engine, meta)
    if p_ref.shape != p_eng.shape:
        raise ParityError("engine probabilities have shape %s, ONNX Runtime's %s" % (p_eng.shape, p_ref.shape))
    n = int(p_ref.shape[0])
    if n == 0:
        raise DataError("no samples to compare")
    diff = float(np.max(np.abs(p_ref - p_eng))) if p_ref.size else 0.0
    if not np.isfinite(p_eng).all():
        diff = float("inf")
    cls = float(np.mean(c_ref == c_eng))
    ex = float(np.mean(e_ref == e_eng)) if e_ref is not None and e_eng is not None else None
    problems = []
    if not diff <= tol.probs_abs:
        problems.append("max |Δprob| %.3g > %.3g" % (diff, tol.probs_abs))
    if cls < tol.min_class_agreement:
        problems.append("class agreement %.4f < %.4f" % (cls, tol.min_class_agreement))
    if ex is not None and ex < tol.min_exit_agreement:
        problems.append("exit agreement %.4f < %.4f" % (ex, tol.min_exit_agreement))
    return ParityReport(n, diff, cls, ex, tol, not problems, problems)


def run_all(runner: Any, x: np.ndarray, batch: int) -> Dict[str, np.ndarray]:
    """Run ``x`` through ``runner`` in chunks of at most ``batch``; concatenate the outputs."""
    parts: Dict[str, List[np.ndarray]] = {}
    for i in range(0, x.shape[0], max(1, batch)):
        out = runner.run(np.ascontiguousarray(x[i:i + batch]))
        for k, v in out.items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def open_engine(path: str) -> Any:
    """The TensorRT runner for ``path`` (a seam the tests replace; needs a GPU)."""
    from edgeconf.backends import prepare

    return prepare(path, backend="tensorrt")


def check_engine(onnx_path: str, engine_path: str, data: str, precision: str, tolerance: Optional[float] = None,
                 limit: int = 1000) -> ParityReport:
    """Run ``data`` through ONNX Runtime and the engine; compare probabilities, classes and exits."""
    from edgeconf.backends.onnxruntime import OnnxRuntimeRunner

    ref = OnnxRuntimeRunner(onnx_path)
    try:
        meta = _meta_of(ref.metadata)
        spec = ref.inputs[0]
        x = load_model_inputs(data, list(spec.shape), preprocessing_from_metadata(meta), limit).astype(spec.dtype)
        ref_out = run_all(ref, x, 256)
    finally:
        ref.close()
    with open_engine(engine_path) as eng:
        rng = getattr(eng, "batch_range", None)
        eng_out = run_all(eng, x, rng.max if rng is not None else 1)
    return parity_report(ref_out, eng_out, meta, precision, tolerance)


def _meta_of(props: Dict[str, str]) -> Dict[str, Any]:
    from edgeconf.engine_format import decode_metadata

    return decode_metadata(props)


# -- building --------------------------------------------------------------------------------------
def up_to_date(engine_path: str, onnx_path: str, options: BuildOptions) -> bool:
    """An existing engine was built from this exact ONNX with these options and can run here."""
    if not os.path.isfile(engine_path):
        return False
    try:
        header = read_header(engine_path)
    except Exception:
        return False
    if header is None or header.source_onnx_sha256 != sha256_file(onnx_path):
        return False
    if (header.precision, header.workspace_mb, header.profile) != (options.precision, options.workspace_mb,
                                                                    options.profile.to_json()):
        return False
    from edgeconf.backends.tensorrt import engine_usable_here

    return engine_usable_here(engine_path)[0]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "stage"


def build_model(onnx_path: str, out: str, options: BuildOptions, force: bool = False,
                builder: Optional[Callable[..., Any]] = None, log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Build one engine (skipped when an up-to-date one exists); returns a summary row."""
    if not os.path.isfile(onnx_path):
        raise DataError("model %s %s" % (onnx_path, not_a_file(onnx_path)))
    if os.path.isdir(out):
        out = os.path.join(out, os.path.splitext(os.path.basename(onnx_path))[0] + ".engine")
    if not force and up_to_date(out, onnx_path, options):
        status = "up to date"
    else:
        (builder or build_engine)(onnx_path, options, out, log=log)
        status = "built"
    header = read_header(out)
    return {"model": onnx_path, "engine": out, "status": status, "bytes": os.path.getsize(out),
            "precision": header.precision if header else None, "tensorrt": header.tensorrt if header else None,
            "gpu": header.gpu if header else None}


def build_bundle(folder: str, out: str, options: BuildOptions, force: bool = False,
                 builder: Optional[Callable[..., Any]] = None, log: Optional[Callable[[str], None]] = None,
                 progress: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """One engine per stage under ``OUT/engines/``; the manifest in ``out`` names each stage's engine and keeps
    the ONNX files as the fallback. ``out`` may be the bundle itself (updated in place) or a new folder."""
    from edgeconf.bundle import read_manifest, save_bundle

    manifest = read_manifest(folder, verify=True)
    # folders this run makes (OUT, OUT/engines) are removed again if the build fails before writing into them
    made = [d for d in (out, os.path.join(out, ENGINE_DIR)) if not os.path.isdir(d)]
    rows = []
    stages = []
    engine_files: Dict[str, str] = {}
    try:
        for spec in manifest.stages:
            if spec.is_remote:  # served by its server (docs/fleet.md): no engine on the board
                stages.append(spec)
                continue
            if progress:
                progress(spec.name)
            rel = "%s/%s.engine" % (ENGINE_DIR, _safe_name(spec.name))
            dst = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            row = build_model(os.path.join(folder, spec.model), dst, options, force, builder, log)
            row["stage"] = spec.name
            rows.append(row)
            stages.append(replace(spec, engine=rel))
            engine_files[rel] = dst
            if os.path.isfile(sidecar_path(dst)):
                engine_files[sidecar_path(rel)] = sidecar_path(dst)
    except BaseException:
        for d in reversed(made):
            try:
                os.rmdir(d)  # only when empty: engines built before the failure stay
            except OSError:
                pass
        raise
    replaced = {s.engine for s in manifest.stages if s.engine} | {sidecar_path(s.engine) for s in manifest.stages if s.engine}
    model_files = {rel: os.path.join(folder, rel) for rel in manifest.files if rel not in replaced and rel not in engine_files}
    model_files.update(engine_files)
    provenance = dict(manifest.provenance)
    provenance["engines"] = {"precision": options.precision, "workspace_mb": options.workspace_mb,
                             "profile": options.profile.to_json(), "device_profile": options.device_profile,
                             "tensorrt": rows[0]["tensorrt"] if rows else None, "gpu": rows[0]["gpu"] if rows else None}
    os.makedirs(out, exist_ok=True)
    save_bundle(out, stages, model_files, manifest.labels, manifest.preprocessing, manifest.combine, manifest.memo,
                manifest.name, provenance, manifest.extra)
    return rows


def device_profile_for(device: Optional[str]) -> Any:
    """The named device profile, or the detected board's (None if detection fails)."""
    from edgeconf.devices.errors import DeviceError

    try:
        if device:
            from edgeconf.devices.profiles import get_profile

            return get_profile(device)
        from edgeconf.devices.detect import detect_board
        from edgeconf.devices.profiles import profile_for

        return profile_for(detect_board())
    except DeviceError as exc:
        if device:
            raise ConfigError(str(exc)) from None
        return None


def one_precision(fp16: bool, fp32: bool, int8: bool) -> Optional[str]:
    """The precision the flags ask for (None: the device profile's); more than one is refused."""
    given = [name for name, on in (("fp16", fp16), ("fp32", fp32), ("int8", int8)) if on]
    if len(given) > 1:
        raise click.UsageError("choose one precision: %s were given together" % " and ".join("--" + g for g in given))
    return given[0] if given else None


# -- the command -------------------------------------------------------------------------------------
@click.command("engine")
@click.argument("artifact", required=False, type=click.Path())
@click.option("--out", "out", type=click.Path(), help="Engine file (for a model) or bundle folder (for a bundle; may be the same bundle).")
@click.option("--fp16", "fp16", is_flag=True, help="Allow FP16 kernels (default where the device profile lists FP16).")
@click.option("--fp32", "fp32", is_flag=True, help="FP32 only.")
@click.option("--int8", "int8", is_flag=True, help="INT8 with entropy calibration (needs --calib) or a QDQ model.")
@click.option("--calib", type=click.Path(), help="Calibration data: image folder, or .npy/.npz of images or model inputs.")
@click.option("--calib-cache", type=click.Path(), help="TensorRT calibration cache: reused if present, written after calibration.")
@click.option("--qdq", type=click.Path(), help="The exporter's INT8 QDQ model (edgeconf export --int8): on TensorRT "
              "8.x/10.x its activation scales feed the calibrator and the layers it keeps in float stay FP32; on 11 "
              "the engine is built from it.")
@click.option("--workspace", type=int, help="Builder workspace in MB (default: the device profile's).")
@click.option("--profile", "batch_profile", help="Batch sizes min,opt,max of the optimisation profile (default 1,1,32).")
@click.option("--device", "device", help="Device profile id for the defaults (default: the detected board).")
@click.option("--strip", "strip", type=click.Path(), help="Write ENGINE's bare TensorRT plan to --out (for trtexec and others).")
@click.option("--check", "check_data", type=click.Path(), help="Compare the engine with ONNX Runtime on DATA.")
@click.option("--tolerance", type=float, help="Max abs difference of probabilities for --check (default per precision).")
@click.option("--force", is_flag=True, help="Rebuild even when an up-to-date engine exists.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def engine_cmd(artifact: Optional[str], out: Optional[str], fp16: bool, fp32: bool, int8: bool, calib: Optional[str],
               calib_cache: Optional[str], qdq: Optional[str], workspace: Optional[int], batch_profile: Optional[str],
               device: Optional[str], strip: Optional[str], check_data: Optional[str], tolerance: Optional[float],
               force: bool, as_json: bool) -> None:
    """Build TensorRT engines for ARTIFACT (a confidence-aware ONNX model or a bundle folder)."""
    precision = one_precision(fp16, fp32, int8)
    if strip:
        if artifact:
            raise ConfigError("--strip takes the engine itself: edgeconf engine --strip ENGINE --out PLAN")
        if not out:
            raise ConfigError("--strip needs --out PLAN (where to write the bare plan)")
        size = strip_header(strip, out)
        _emit({"stripped": strip, "plan": out, "bytes": size}, as_json, "wrote bare TensorRT plan %s (%d bytes)" % (out, size))
        return
    if not artifact:
        raise ConfigError("give a model or bundle: edgeconf engine MODEL.onnx --out MODEL.engine (or --strip ENGINE --out PLAN)")
    if not os.path.exists(artifact):
        raise DataError("%s does not exist" % artifact)
    if not out:
        raise ConfigError("--out is required: the engine file (for a model) or the bundle folder (for a bundle)")
    options = resolve_options(device_profile_for(device), precision, workspace, batch_profile, calib, calib_cache, qdq)
    err = sys.stderr

    def log(msg: str) -> None:
        if not as_json:
            click.echo("  " + msg, err=True)

    for note in options.notes:
        log(note)
    if os.path.isdir(artifact):
        rows = _with_progress(lambda step: build_bundle(artifact, out, options, force, log=log, progress=step),
                              len(_stage_names(artifact)), as_json, err)
        pairs = [(os.path.join(artifact, _stage_model(artifact, r["stage"])), r) for r in rows]
    else:
        row = _with_progress(lambda step: (step(os.path.basename(artifact)), build_model(artifact, out, options, force, log=log))[1],
                             1, as_json, err)
        rows, pairs = [row], [(artifact, row)]
    result: Dict[str, Any] = {"engines": rows, "options": {"precision": options.precision, "workspace_mb": options.workspace_mb,
                                                           "profile": options.profile.to_json(),
                                                           "device_profile": options.device_profile}}
    failed = []
    if check_data:
        checks = []
        for onnx_path, row in pairs:
            rep = check_engine(onnx_path, row["engine"], check_data, options.precision, tolerance)
            checks.append(dict(rep.to_json(), engine=row["engine"]))
            if not rep.passed:
                failed.append("%s: %s" % (row["engine"], "; ".join(rep.problems)))
        result["check"] = checks
    lines = ["%s %s (%s, TensorRT %s, %s, %d bytes)" % (r["status"], r["engine"], r["precision"], r["tensorrt"], r["gpu"],
                                                        r["bytes"]) for r in rows]
    for c in result.get("check", []):
        lines.append("check %s: %d samples, max |Δprob| %.3g, class agreement %.4f, exit agreement %s — %s" % (
            c["engine"], c["samples"], c["max_abs_diff_probs"], c["class_agreement"],
            "n/a" if c["exit_agreement"] is None else "%.4f" % c["exit_agreement"], "ok" if c["passed"] else "FAILED"))
    _emit(result, as_json, "\n".join(lines))
    if failed:
        raise ParityError("engine differs from ONNX Runtime beyond the %s tolerance: %s" % (options.precision, " | ".join(failed)))


def _stage_names(folder: str) -> List[str]:
    from edgeconf.bundle import read_manifest

    return [s.name for s in read_manifest(folder, verify=False).stages]


def _stage_model(folder: str, stage: str) -> str:
    from edgeconf.bundle import read_manifest

    return next(s.model for s in read_manifest(folder, verify=False).stages if s.name == stage)


def _with_progress(work: Callable[[Callable[[str], None]], Any], total: int, quiet: bool, stream: Any) -> Any:
    """Run ``work(step)`` with a rich progress bar on stderr; ``step(name)`` advances it."""
    if quiet:
        return work(lambda _name: None)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(file=stream), transient=True) as bar:
        task = bar.add_task("building engines", total=total)
        state = {"started": False}

        def step(name: str) -> None:
            if state["started"]:
                bar.advance(task)
            state["started"] = True
            bar.update(task, description="building %s" % name)

        result = work(step)
        bar.update(task, completed=total)
    return result


def _emit(data: Dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text)


__all__ = ["engine_cmd", "parity_report", "ParityReport", "ParityTolerance", "TOLERANCES", "build_bundle", "build_model",
           "check_engine", "decisions", "up_to_date", "device_profile_for"]
