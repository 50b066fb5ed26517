"""Bundles: the deployable folder of a cascade, ``edgeconf.json`` plus the model files it names.

Loading validates the whole manifest (schema, values, paths, sha256 of every file) before any model
is loaded, and never executes code from the bundle.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from edgeconf import __version__
from edgeconf.cascade import COMBINE_RULES, IMAGE, Cascade, OodRule, Stage, graph_head
from edgeconf.confidence import OOD_SCORES, SCORES
from edgeconf.errors import BundleError
from edgeconf.memo import MemoCache, parse_key_kind
from edgeconf.preprocess import Preprocessing
from edgeconf.hashing import sha256_file

MANIFEST = "edgeconf.json"
FORMAT = "edgeconf.bundle"
SCHEMA_VERSION = 1


@dataclass
class StageSpec:
    """One stage as the manifest describes it."""

    name: str
    model: str  # path relative to the bundle folder
    score: str = "margin"
    threshold: float = 0.5
    temperature: float = 1.0
    input: str = IMAGE
    logits: str = "logits"
    engine: Optional[str] = None  # TensorRT engine file, when one was built
    cost: Optional[Dict[str, Any]] = None  # measured cost (e.g. {"ms": 0.05, "device": "..."})
    #: out-of-distribution rule: {"score", "threshold", "output" (model output or null), "params" (a plain .npz
    #: in the bundle, optional), "calibration" (how it was fitted)}; answers past the threshold are "unknown"
    ood: Optional[Dict[str, Any]] = None

    def to_json(self) -> dict:
        d = {"name": self.name, "model": self.model, "score": self.score, "threshold": self.threshold,
             "temperature": self.temperature, "input": self.input, "logits": self.logits}
        if self.engine:
            d["engine"] = self.engine
        if self.cost is not None:
            d["cost"] = self.cost
        if self.ood is not None:
            d["ood"] = self.ood
        return d

    def ood_rule(self) -> Optional[OodRule]:
        if self.ood is None:
            return None
        return OodRule(float(self.ood["threshold"]), str(self.ood.get("score", "graph")), self.ood.get("output"))


def parse_ood(value: Any, where: str) -> Optional[Dict[str, Any]]:
    """Validate a stage's ``ood`` entry (plain JSON: numbers, names and a path; never code)."""
    if value is None:
        return None
    where = where + " ood"
    if not isinstance(value, dict):
        raise BundleError("%s must be an object, got %s" % (where, type(value).__name__))
    threshold = _need(value, "threshold", float, where)
    if threshold != threshold:
        raise BundleError("%s: threshold must be a number, got NaN" % where)
    score = value.get("score", "graph")
    output = value.get("output", "ood")
    if not isinstance(score, str) or (output is not None and not isinstance(output, str)):
        raise BundleError("%s: 'score' must be a string and 'output' a string or null" % where)
    if output is None and score not in OOD_SCORES:
        raise BundleError("%s: score %r needs a model output ('output'); the runtime computes only %s"
                          % (where, score, ", ".join(OOD_SCORES)))
    params = value.get("params")
    if params is not None and not isinstance(params, str):
        raise BundleError("%s: 'params' must be a path inside the bundle" % where)
    return dict(value)


@dataclass
class MemoSettings:
    enabled: bool = True
    key: str = "dhash256"
    radius: int = 0
    capacity: int = 4096

    def to_json(self) -> dict:
        return {"enabled": self.enabled, "key": self.key, "radius": self.radius, "capacity": self.capacity}

    def build(self) -> Optional[MemoCache]:
        return MemoCache(self.capacity, self.key, self.radius) if self.enabled else None


@dataclass
class Manifest:
    """The parsed, validated ``edgeconf.json``."""

    stages: List[StageSpec]
    labels: List[str]
    preprocessing: Preprocessing
    combine: str = "last"
    memo: MemoSettings = field(default_factory=MemoSettings)
    name: str = "bundle"
    provenance: Dict[str, Any] = field(default_factory=dict)
    files: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {"format": FORMAT, "schema": SCHEMA_VERSION, "name": self.name, "labels": list(self.labels),
             "preprocessing": self.preprocessing.to_json(), "combine": self.combine,
             "stages": [s.to_json() for s in self.stages], "memo": self.memo.to_json(),
             "provenance": self.provenance, "files": self.files}
        d.update(self.extra)
        return d


def _need(obj: dict, key: str, kind: Any, where: str) -> Any:
    if key not in obj:
        raise BundleError("%s: missing key %r" % (where, key))
    value = obj[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        name = getattr(kind, "__name__", str(kind))
        raise BundleError("%s: %r must be %s, got %s" % (where, key, name, type(value).__name__))
    return value


def parse_manifest(data: Any) -> Manifest:
    """Validate a manifest's JSON value and return it as a :class:`Manifest`."""
    if not isinstance(data, dict):
        raise BundleError("%s must hold a JSON object" % MANIFEST)
    if data.get("format") != FORMAT:
        raise BundleError("%s: 'format' must be %r, got %r" % (MANIFEST, FORMAT, data.get("format")))
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise BundleError("%s: schema version %r is not supported (this edgeconf reads version %d); "
                          "re-export the bundle or upgrade edgeconf" % (MANIFEST, schema, SCHEMA_VERSION))
    labels = _need(data, "labels", list, MANIFEST)
    if not labels or not all(isinstance(x, str) for x in labels):
        raise BundleError("%s: 'labels' must be a non-empty list of strings" % MANIFEST)
    pre = Preprocessing.from_json(_need(data, "preprocessing", dict, MANIFEST))
    combine = data.get("combine", "last")
    if combine not in COMBINE_RULES:
        raise BundleError("%s: combine rule %r is unknown; use one of %s" % (MANIFEST, combine, ", ".join(COMBINE_RULES)))
    raw_stages = _need(data, "stages", list, MANIFEST)
    if not raw_stages:
        raise BundleError("%s: 'stages' is empty; a bundle needs at least one stage" % MANIFEST)
    stages = []
    for i, st in enumerate(raw_stages):
        where = "%s stage %d" % (MANIFEST, i)
        if not isinstance(st, dict):
            raise BundleError("%s must be an object" % where)
        spec = StageSpec(
            name=st.get("name", "stage%d" % (i + 1)),
            model=_need(st, "model", str, where),
            score=st.get("score", "margin"),
            threshold=_need(st, "threshold", float, where),
            temperature=float(st.get("temperature", 1.0)) if isinstance(st.get("temperature", 1.0), (int, float)) else st.get("temperature"),
            input=st.get("input", IMAGE),
            logits=st.get("logits", "logits"),
            engine=st.get("engine"),
            cost=st.get("cost"),
            ood=parse_ood(st.get("ood"), where),
        )
        if spec.score not in SCORES:
            raise BundleError("%s: unknown score %r; use one of %s" % (where, spec.score, ", ".join(SCORES)))
        if not 0.0 <= spec.threshold <= 1.0:
            raise BundleError("%s: threshold %r is outside [0, 1]" % (where, spec.threshold))
        if not isinstance(spec.temperature, float) or not spec.temperature > 0:
            raise BundleError("%s: temperature must be a number > 0, got %r" % (where, spec.temperature))
        if i == 0 and spec.input != IMAGE:
            raise BundleError("%s: the first stage must take 'image' as input" % where)
        stages.append(spec)
    memo_raw = data.get("memo", {})
    if not isinstance(memo_raw, dict):
        raise BundleError("%s: 'memo' must be an object" % MANIFEST)
    memo = MemoSettings(bool(memo_raw.get("enabled", True)), str(memo_raw.get("key", "dhash256")),
                        int(memo_raw.get("radius", 0)), int(memo_raw.get("capacity", 4096)))
    try:
        MemoCache(memo.capacity, memo.key, memo.radius)  # validates the settings
        parse_key_kind(memo.key)
    except Exception as exc:
        raise BundleError("%s: invalid memo settings: %s" % (MANIFEST, exc)) from None
    files = data.get("files", {})
    if not isinstance(files, dict):
        raise BundleError("%s: 'files' must be an object" % MANIFEST)
    known = {"format", "schema", "name", "labels", "preprocessing", "combine", "stages", "memo", "provenance", "files"}
    extra = {k: v for k, v in data.items() if k not in known}
    return Manifest(stages, list(labels), pre, combine, memo, str(data.get("name", "bundle")),
                    dict(data.get("provenance", {})), dict(files), extra)


def _inside(folder: str, rel: str, what: str) -> str:
    if os.path.isabs(rel):
        raise BundleError("%s path %r must be relative to the bundle folder" % (what, rel))
    root = os.path.realpath(folder)
    full = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, full]) != root:
        raise BundleError("%s path %r leaves the bundle folder; refusing to read it" % (what, rel))
    return full


def read_manifest(folder: str, verify: bool = True) -> Manifest:
    """Read and validate a bundle's manifest; with ``verify``, check every file's presence and sha256."""
    if not os.path.isdir(folder):
        raise BundleError("bundle folder %s does not exist" % folder)
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise BundleError("%s has no %s; is it a bundle folder?" % (folder, MANIFEST))
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError("%s is not valid JSON: %s" % (path, exc)) from None
    manifest = parse_manifest(data)
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: str, manifest: Manifest) -> None:
    """Every stage file must be listed in ``files``, inside the folder, present, and match its sha256."""
    needed = [s.model for s in manifest.stages] + [s.engine for s in manifest.stages if s.engine]
    needed += [s.ood["params"] for s in manifest.stages if s.ood and s.ood.get("params")]
    for rel in needed:
        if rel not in manifest.files:
            raise BundleError("%s names %r but 'files' has no sha256 for it" % (MANIFEST, rel))
    for rel, info in manifest.files.items():
        full = _inside(folder, rel, "file")
        if not os.path.isfile(full):
            raise BundleError("bundle file %s is missing" % full)
        want = info.get("sha256") if isinstance(info, dict) else None
        if not isinstance(want, str):
            raise BundleError("%s: files[%r] needs a 'sha256' string" % (MANIFEST, rel))
        got = sha256_file(full)
        if got != want:
            raise BundleError("bundle file %s has sha256 %s but the manifest says %s; the file was changed or "
                              "corrupted — re-export the bundle" % (rel, got[:16], want[:16]))


def load_bundle(folder: str, backend: str = "onnxruntime", providers: Optional[Sequence[Any]] = None,
                threads: Optional[int] = None, memo: Optional[bool] = None, ood: bool = True) -> Cascade:
    """Validate a bundle folder and return a ready :class:`Cascade` (memo cache as the manifest says).

    Stages with an ``ood`` rule answer ``unknown`` for inputs past its threshold; ``ood=False`` ignores the rules
    (every answer is a class, as before they were fitted).

    ``backend="tensorrt"`` runs each stage's engine (ONNX with a warning where a stage has none);
    ``"auto"`` uses an engine only where TensorRT is importable and the engine matches this device.
    """
    from edgeconf.backends import prepare
    from edgeconf.backends.tensorrt import stage_model_path  # pure: imports no TensorRT

    manifest = read_manifest(folder, verify=True)
    stages = []
    try:
        for spec in manifest.stages:
            path, stage_backend = stage_model_path(spec, backend, folder)
            runner = prepare(path, backend=stage_backend, providers=providers, threads=threads)
            stages.append(Stage(spec.name, runner, spec.score, spec.threshold, spec.temperature, spec.input,
                                spec.logits, manifest.files[spec.model]["sha256"], graph_head(runner),
                                spec.ood_rule() if ood else None))
        use_memo = manifest.memo.enabled if memo is None else memo
        cache = MemoSettings(True, manifest.memo.key, manifest.memo.radius, manifest.memo.capacity).build() if use_memo else None
        cascade = Cascade(stages, manifest.combine, manifest.labels, manifest.preprocessing, cache, manifest.name)
    except Exception:
        for st in stages:
            st.runner.close()
        raise
    cascade.manifest = manifest  # type: ignore[attr-defined]
    cascade.folder = folder  # type: ignore[attr-defined]
    return cascade


def save_bundle(folder: str, stages: Sequence[StageSpec], model_files: Dict[str, str], labels: Sequence[str],
                preprocessing: Preprocessing, combine: str = "last", memo: Optional[MemoSettings] = None,
                name: str = "bundle", provenance: Optional[Dict[str, Any]] = None,
                extra: Optional[Dict[str, Any]] = None) -> Manifest:
    """Write a bundle: copy ``model_files`` (bundle-relative name → source path) and the manifest."""
    os.makedirs(folder, exist_ok=True)
    files: Dict[str, Dict[str, Any]] = {}
    for rel, src in model_files.items():
        dst = _inside(folder, rel, "file")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.realpath(src) != dst:
            shutil.copyfile(src, dst)
        files[rel] = {"sha256": sha256_file(dst), "bytes": os.path.getsize(dst)}
    prov = {"tool": "edgeconf %s" % __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()}
    prov.update(provenance or {})
    manifest = Manifest(list(stages), list(labels), preprocessing, combine, memo or MemoSettings(), name, prov, files,
                        dict(extra or {}))
    parse_manifest(manifest.to_json())  # never write a manifest we would refuse to read
    verify_files(folder, manifest)
    tmp = os.path.join(folder, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_json(), f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(folder, MANIFEST))
    return manifest
