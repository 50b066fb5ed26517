"""Bundles: the deployable folder of a cascade, ``edgeconf.json`` plus the model files it names.

Loading validates the whole manifest before any model is loaded: its size and nesting depth, the type and
range of every value, every path (inside the folder), and the presence and sha256 of every file a stage
reads, the external-data files of ONNX models included. It never executes code from the bundle.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from edgeconf import __version__
from edgeconf.atomic import describe_os_error, write_text
from edgeconf.backends.threads import Threads, check_batch, choose_threads
from edgeconf.backends.onnx_file import read_onnx_facts
from edgeconf.cascade import COMBINE_RULES, IMAGE, Cascade, OodRule, Stage, graph_head
from edgeconf.confidence import OOD_SCORES, SCORES
from edgeconf.errors import BundleError, ConfigError, OutputError
from edgeconf.fused import FusedInfo
from edgeconf.hashing import sha256_file
from edgeconf.memo import MemoCache, Sampling, parse_key_kind
from edgeconf.pathcheck import not_a_file
from edgeconf.preprocess import Preprocessing, stage_problem
from edgeconf.schema import (Any_, Bool, DictOf, Float, Int, ListOf, Optional_, Path, Str, Struct, entry, from_json,
                             load_value, read_json, to_json)
from edgeconf.schema.fields import declared, show

log = logging.getLogger(__name__)

MANIFEST = "edgeconf.json"
FORMAT = "edgeconf.bundle"
SCHEMA_VERSION = 1
#: Largest manifest accepted, and deepest nesting of its arrays/objects (read before parsing: no input can
#: exhaust memory or recursion). Real manifests are a few kB and nest 4 levels.
MAX_MANIFEST_BYTES = 8 << 20
MAX_MANIFEST_DEPTH = 32
#: Most entries a manifest's memo cache may allocate (its table is allocated up front).
MAX_MEMO_CAPACITY = 1 << 20
#: Names: stages, tensors, labels.
_NAME = Str(max_len=256)
_SHA256 = Str(pattern=r"[0-9a-f]{64}", what="a sha256 (64 lower-case hex digits)")

#: keys of a remote stage besides ``backend``
REMOTE_KEYS = ("url", "version", "onnx", "deadline_ms", "retries", "breaker_failures", "breaker_cooldown_s")
REMOTE_BACKENDS = ("triton",)

# Every manifest value is declared once, with its typed check, on the dataclass that holds it
# (``edgeconf.schema.entry``): a new field is one ``entry(...)`` line, read strictly and written back.


@dataclass
class OodSpec:
    """A stage's out-of-distribution rule: inputs whose score is above ``threshold`` are answered "unknown".

    ``output`` names the model output holding the score (the head ``edgeconf ood`` appends); null means the
    runtime computes ``score`` from the logits (only ``energy``). ``params``: the fitted arrays as a plain
    ``.npz`` in the bundle (hashed in ``files``); ``calibration``: how the threshold was chosen.
    """

    threshold: float = entry(Float(), required=True)
    score: str = entry(_NAME, "graph")
    output: Optional[str] = entry(Optional_(_NAME), "ood")
    feature: Optional[str] = entry(Optional_(_NAME), None, write_default=False)
    params: Optional[str] = entry(Optional_(Path()), None, write_default=False)
    calibration: Optional[Dict[str, Any]] = entry(Optional_(DictOf(Any_())), None, write_default=False)
    #: lower edge of the doubt band (optional; bundles without it load unchanged): inputs scoring above it, but not
    #: above ``threshold``, may not leave the cascade at this stage and go on to the next (no effect on the last)
    escalate: Optional[float] = entry(Optional_(Float()), None, write_default=False)

    def __post_init__(self) -> None:
        if self.output is None and self.score not in OOD_SCORES:
            raise ConfigError("ood score %r needs a model output ('output'); the runtime computes only %s"
                              % (self.score, ", ".join(OOD_SCORES)))
        if self.escalate is not None and not self.escalate <= self.threshold:
            raise ConfigError("ood.escalate (%r) must not be higher than ood.threshold (%r)"
                              % (self.escalate, self.threshold))

    def rule(self) -> OodRule:
        return OodRule(self.threshold, self.score, self.output, self.escalate)

    def to_json(self) -> dict:
        return to_json(self)


@dataclass
class StageSpec:
    """One stage as the manifest describes it."""

    name: str = entry(_NAME)
    model: str = entry(Path())  # path relative to the bundle folder
    score: str = entry(Str(SCORES), "margin")
    threshold: float = entry(Float(0.0, 1.0), 0.5, required=True)
    temperature: float = entry(Float(gt=0.0), 1.0)
    input: str = entry(_NAME, IMAGE)
    logits: str = entry(_NAME, "logits")
    engine: Optional[str] = entry(Optional_(Path()), None, write_default=False)  # TensorRT engine, when built
    cost: Optional[Dict[str, Any]] = entry(Optional_(DictOf(Any_())), None, write_default=False)  # e.g. {"ms": 0.05}
    # A remote stage (``backend`` set): ``model`` is then the model's name on the server, ``onnx`` (optional) the
    # file it serves (for ``edgeconf triton-repo``); the rest tunes the deadline, retries and circuit breaker.
    backend: Optional[str] = entry(Optional_(Str(REMOTE_BACKENDS)), None, write_default=False)
    url: Optional[str] = entry(Optional_(Str(max_len=2048)), None, write_default=False)
    version: Optional[str] = entry(Optional_(Str(max_len=64)), None, write_default=False)
    onnx: Optional[str] = entry(Optional_(Path()), None, write_default=False)
    deadline_ms: Optional[float] = entry(Optional_(Float(gt=0.0)), None, write_default=False)
    retries: Optional[int] = entry(Optional_(Int(0, 10)), None, write_default=False)
    breaker_failures: Optional[int] = entry(Optional_(Int(1, 1000)), None, write_default=False)
    breaker_cooldown_s: Optional[float] = entry(Optional_(Float(gt=0.0)), None, write_default=False)
    #: out-of-distribution rule: answers past it are "unknown" (``edgeconf ood`` fits it)
    ood: Optional[OodSpec] = entry(Optional_(Struct(OodSpec)), None, write_default=False)

    def __post_init__(self) -> None:
        if self.backend is None:
            stray = [k for k in REMOTE_KEYS if getattr(self, k) is not None]
            if stray:
                raise ConfigError("stage %s: %s only apply to remote stages; add \"backend\": \"triton\" or remove them"
                                  % (self.name, ", ".join(repr(k) for k in stray)))
            return
        if self.url is None:
            raise ConfigError("stage %s: a remote stage needs 'url' (grpc://HOST:8001 or http://HOST:8000)" % self.name)
        if self.input != IMAGE:
            raise ConfigError("stage %s: a remote stage takes the image as input, not %r" % (self.name, self.input))
        from edgeconf.backends.triton import parse_url  # pure: imports no tritonclient

        parse_url(self.url)

    @property
    def is_remote(self) -> bool:
        return self.backend is not None

    @property
    def local_file(self) -> Optional[str]:
        """The stage's ONNX file in the bundle (a remote stage's may be absent)."""
        return self.onnx if self.is_remote else self.model

    @property
    def remote(self) -> Dict[str, Any]:
        """The remote stage's settings that are set (empty for a local stage)."""
        return {k: getattr(self, k) for k in ("backend",) + REMOTE_KEYS if getattr(self, k) is not None}

    def to_json(self) -> dict:
        return to_json(self)


@dataclass
class MemoSettings:
    """The memo cache a bundle asks for."""

    enabled: bool = entry(Bool(), True)
    key: str = entry(Str(("exact", "dhash64", "dhash256", "dhash1024")), "dhash256")
    radius: int = entry(Int(0, 1023), 0)
    capacity: int = entry(Int(1, MAX_MEMO_CAPACITY), 4096)
    # sample lookups while the hit rate is below break-even (edgeconf.memo.Sampling)
    adaptive: bool = entry(Bool(), True, write_default=False)

    def __post_init__(self) -> None:
        bits = parse_key_kind(self.key)
        if self.radius and (bits == 0 or self.radius >= bits):
            raise ConfigError("memo.radius %d needs a dHash key with more bits than that (key %r)" % (self.radius, self.key))

    def to_json(self) -> dict:
        return to_json(self)

    def build(self) -> Optional[MemoCache]:
        if not self.enabled:
            return None
        return MemoCache(self.capacity, self.key, self.radius, sampling=Sampling() if self.adaptive else None)


@dataclass
class FileEntry:
    """What ``files`` records for each file of the bundle."""

    sha256: str = entry(_SHA256)
    bytes: Optional[int] = entry(Optional_(Int(0)), None, write_default=False)


class _FileInfo(Struct):
    """A ``files`` entry, kept as a plain dict (``{"sha256": …, "bytes": …}``)."""

    def load(self, value: Any, where: str) -> Any:
        return to_json(super().load(value, where))

    def dump(self, value: Any) -> Any:
        return dict(value)


@dataclass
class Manifest:
    """The parsed, validated ``edgeconf.json``. Keys not declared here are kept, as plain JSON, in ``extra``."""

    stages: List[StageSpec] = entry(ListOf(Struct(StageSpec), 1, 64))
    labels: List[str] = entry(ListOf(_NAME, 1, 100_000))
    preprocessing: Preprocessing = entry(Struct(Preprocessing))
    combine: str = entry(Str(COMBINE_RULES), "last")
    memo: MemoSettings = entry(Struct(MemoSettings), MemoSettings())
    name: str = entry(_NAME, "bundle")
    provenance: Dict[str, Any] = entry(DictOf(Any_()), {})
    files: Dict[str, Dict[str, Any]] = entry(DictOf(_FileInfo(FileEntry), key=Path()), {})
    extra: Dict[str, Any] = field(default_factory=dict)
    fused: Optional[FusedInfo] = entry(Optional_(Struct(FusedInfo)), None, write_default=False)  # edgeconf fuse

    def to_json(self) -> dict:
        d = {"format": FORMAT, "schema": SCHEMA_VERSION}
        d.update(to_json(self))
        d.update(self.extra)
        return d


def parse_manifest(data: Any) -> Manifest:
    """Validate a manifest's JSON value and return it as a :class:`Manifest`.

    Every value is checked against its declaration; every failure is a :class:`BundleError` whose one-line
    message names the key (``edgeconf.json: stages[1].temperature must be a finite number > 0, got inf``).
    """
    if not isinstance(data, dict):
        raise BundleError("%s must hold a JSON object, got %s" % (MANIFEST, show(data)))
    if data.get("format") != FORMAT:
        raise BundleError("%s: 'format' must be %r, got %s; is it a bundle manifest?" % (MANIFEST, FORMAT, show(data.get("format"))))
    schema = data.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise BundleError("%s: schema version %s is not supported (this edgeconf reads version %d); "
                          "re-export the bundle or upgrade edgeconf" % (MANIFEST, show(schema), SCHEMA_VERSION))
    body = {k: v for k, v in data.items() if k not in ("format", "schema")}
    stages = body.get("stages")
    if isinstance(stages, list):  # a stage's name defaults to its position
        body["stages"] = [dict({"name": "stage%d" % (i + 1)}, **st) if isinstance(st, dict) else st
                          for i, st in enumerate(stages)]
    extra: Dict[str, Any] = {}
    manifest = from_json(Manifest, body, "", _ManifestError, extra=extra)
    manifest.extra = extra
    if manifest.stages[0].input != IMAGE:
        raise BundleError("%s: stages[0].input must be %r: the first stage takes the image" % (MANIFEST, IMAGE))
    if manifest.stages[0].is_remote:
        raise BundleError("%s: stages[0] must run locally (a remote stage falls back on a local answer)" % MANIFEST)
    names = [s.name for s in manifest.stages]
    if len(set(names)) != len(names):
        raise BundleError("%s: stage names must be unique, got %s" % (MANIFEST, ", ".join(names)))
    return manifest


class _ManifestError(BundleError):
    """A declared check failed; the message gets the manifest's name in front."""

    def __init__(self, message: str) -> None:
        super().__init__("%s: %s" % (MANIFEST, message.lstrip(".")))


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
    if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder):
        raise BundleError("a bundle is given by the path of its folder (the folder with %s), got %r"
                          % (MANIFEST, folder))
    folder = os.fspath(folder)
    if isinstance(folder, bytes):
        folder = os.fsdecode(folder)
    if os.path.isfile(folder):
        model = "n ONNX model" if folder.lower().endswith(".onnx") else ""
        raise BundleError("%s is a%s file, not a bundle folder (a folder with %s and its stages): give the bundle's "
                          "folder; for a single model use edgeconf.backends.prepare(MODEL.onnx).run(x), or build a "
                          "bundle from models with: edgeconf cascade MODEL_A.onnx [MODEL_B.onnx ...] --data "
                          "LABELLED_DATA --out BUNDLE" % (folder, model, MANIFEST))
    if not os.path.isdir(folder):
        raise BundleError("bundle folder %s does not exist" % folder)
    path = os.path.join(folder, MANIFEST)
    if os.path.isdir(path):
        raise BundleError("%s is a folder, not the bundle's manifest file; a bundle folder holds %s as a JSON file "
                          "(re-export the bundle)" % (path, MANIFEST))
    if not os.path.isfile(path):
        raise BundleError("%s has no %s; is it a bundle folder?" % (folder, MANIFEST))
    data = read_json(path, path, BundleError, MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH)
    manifest = parse_manifest(data)
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: str, manifest: Manifest) -> None:
    """Every file a stage loads is listed in ``files``, inside the folder, present and matches its sha256.

    That includes the external-data files of ONNX models (weights stored beside the graph): a model that
    refers to a file the manifest does not list is refused, since its bytes would load unchecked.
    """
    needed = [s.local_file for s in manifest.stages if s.local_file] + [s.engine for s in manifest.stages if s.engine]
    needed += [s.ood.params for s in manifest.stages if s.ood is not None and s.ood.params]
    if manifest.fused is not None:
        needed.append(manifest.fused.model)
    for rel in needed:
        if rel not in manifest.files:
            raise BundleError("%s names %r but 'files' has no sha256 for it" % (MANIFEST, rel))
    for rel, info in manifest.files.items():
        full = _inside(folder, rel, "file")
        if not os.path.isfile(full):
            raise BundleError("bundle file %s %s" % (full, "is missing" if not os.path.lexists(full) else not_a_file(full)))
        size = info.get("bytes")
        if size is not None and os.path.getsize(full) != size:
            raise BundleError("bundle file %s has %d bytes but the manifest says %d; the file was changed or "
                              "truncated — re-export the bundle" % (rel, os.path.getsize(full), size))
        want = info["sha256"]
        got = sha256_file(full)
        if got != want:
            raise BundleError("bundle file %s has sha256 %s but the manifest says %s; the file was changed or "
                              "corrupted — re-export the bundle" % (rel, got[:16], want[:16]))
    for spec in manifest.stages:
        if not spec.local_file:
            continue
        for rel in external_data_of(folder, spec.local_file):
            if rel not in manifest.files:
                raise BundleError("stage %s: model %s keeps weights in %s, which 'files' does not list, so its bytes "
                                  "cannot be checked; re-export the bundle (save_bundle lists external data)"
                                  % (spec.name, spec.model, rel))


def external_data_of(folder: str, model: str) -> List[str]:
    """Bundle-relative paths of the external-data files an ONNX model in ``folder`` refers to."""
    full = _inside(folder, model, "model")
    base = os.path.dirname(model)
    out = []
    for location in external_data_locations(full):
        rel = os.path.normpath(os.path.join(base, location)).replace(os.sep, "/")
        load_value(Path(), rel, "model %s: external data location" % model, BundleError)
        _inside(folder, rel, "external data")
        if rel not in out:
            out.append(rel)
    return out


def external_data_locations(model_path: str) -> List[str]:
    """The ``location`` of every tensor an ONNX file keeps outside itself (subgraphs included), in order.

    Read from the protobuf bytes (``edgeconf.backends.onnx_file``); a file that is not ONNX raises
    :class:`~edgeconf.errors.ModelLoadError`.
    """
    return read_onnx_facts(model_path).external


def memo_settings(value: Any, where: str = "memo") -> MemoSettings:
    """A :class:`MemoSettings` (checked like a manifest's), or its dict (the manifest's ``memo`` object); anything
    else is a one-line :class:`ConfigError`."""
    if isinstance(value, MemoSettings):
        value = {k: getattr(value, f.name) for k, f in declared(MemoSettings)}
    elif not isinstance(value, dict):
        raise ConfigError("%s must be an edgeconf.bundle.MemoSettings (e.g. MemoSettings(key=\"exact\", "
                          "capacity=1024)) or its dict, got %r" % (where, value))
    return from_json(MemoSettings, value, where, ConfigError)


def load_bundle(folder: str, backend: str = "onnxruntime", providers: Optional[Sequence[Any]] = None,
                threads: Union[None, int, Threads] = None, memo: Union[None, bool, MemoSettings] = None,
                form: str = "auto", batch: int = 1, ood: bool = True) -> Cascade:
    """Validate a bundle folder and return a ready :class:`Cascade` (memo cache as the manifest says).

    ``memo``: None for the manifest's memo cache, False for none, True for the manifest's settings even where
    the manifest switches the memo off, or a :class:`MemoSettings` (or its dict) to use instead of the
    manifest's. ``providers``: ONNX Runtime execution providers, a list (``["cuda", "cpu"]``) or one name.

    Stages with an ``ood`` rule answer "unknown" for inputs past its threshold; ``ood=False`` ignores the rules.

    ``backend="tensorrt"`` runs each stage's engine (ONNX where a stage has none, said once for the bundle by a
    warning on the ``edgeconf.bundle`` logger, which the CLI prints as a notice and ``-q`` silences);
    ``"auto"`` uses an engine only where TensorRT is importable and the engine matches this device.
    ``threads``: ONNX Runtime intra-op threads per model (>= 1); None lets
    :func:`~edgeconf.backends.threads.choose_threads` pick them for this device and ``batch`` (the inputs per
    call you expect). The choice is ``cascade.threads``.
    ``form``: ``"staged"`` (one runtime call per stage), ``"fused"`` (the bundle's fused graph, written by
    ``edgeconf fuse``: one call per request; a :class:`~edgeconf.fused.FusedCascade`) or ``"auto"``
    (:func:`edgeconf.fused.choose_form`: fused only on a GPU execution provider); the cascade's ``form``
    and ``form_reason`` say which was chosen and why.
    """
    from edgeconf.backends import prepare
    from edgeconf.backends.tensorrt import stage_model_path  # pure: imports no TensorRT
    from edgeconf.fused import FusedCascade, choose_form, runtime_model

    check_batch(batch)
    plan = choose_threads(threads, batch)
    if isinstance(providers, str):  # one provider, not a list of one-letter names
        providers = [providers]
    if memo is not None and not isinstance(memo, bool):
        memo = memo_settings(memo)
    manifest = read_manifest(folder, verify=True)
    chosen, why = choose_form(form, manifest, backend, providers)
    if chosen == "fused" and not ood and any(s.ood is not None for s in manifest.stages):
        if form == "fused":
            raise BundleError("%s: the fused graph computes the stages' OOD rules; ood=False needs the staged form"
                              % folder)
        chosen, why = "staged", "the OOD rules are off (ood=False); the fused graph computes them"
    stages = []
    fused_runner = None
    no_engine: List[str] = []  # stages that run their ONNX model on onnxruntime under backend="tensorrt"
    try:
        for spec in manifest.stages:
            if spec.is_remote:
                runner, sha = _prepare_remote(spec, manifest)
            else:
                with warnings.catch_warnings():  # said once for the whole bundle below, not as a warning per stage
                    warnings.filterwarnings("ignore", message=r"bundle stage .* has no TensorRT engine")
                    path, stage_backend = stage_model_path(spec, backend, folder)
                if backend == "tensorrt" and stage_backend != "tensorrt":
                    no_engine.append(spec.name)
                runner = prepare(path, backend=stage_backend, providers=providers, threads=plan)
                sha = manifest.files[spec.model]["sha256"]
            stages.append(Stage(spec.name, runner, spec.score, spec.threshold, spec.temperature, spec.input,
                                spec.logits, sha, graph_head(runner),
                                spec.ood.rule() if ood and spec.ood is not None else None))
            problem = stage_problem(manifest.preprocessing, getattr(runner, "metadata", None) or {})
            if problem:
                raise BundleError("%s: stage %s (%s) does not fit the bundle's preprocessing: %s"
                                  % (folder, spec.name, spec.model, problem))
        if no_engine:
            log.warning("%s %s of bundle %s %s no TensorRT engine; running %s ONNX model%s on onnxruntime. Build "
                        "engines with: edgeconf engine %s --out %s", "stage" if len(no_engine) == 1 else "stages",
                        ", ".join(no_engine), folder, "has" if len(no_engine) == 1 else "have",
                        "its" if len(no_engine) == 1 else "their", "" if len(no_engine) == 1 else "s", folder, folder)
        if isinstance(memo, MemoSettings):
            cache = memo.build()
        else:
            use_memo = manifest.memo.enabled if memo is None else memo
            cache = MemoSettings(True, manifest.memo.key, manifest.memo.radius, manifest.memo.capacity,
                                 manifest.memo.adaptive).build() if use_memo else None
        if chosen == "fused":
            path = _inside(folder, manifest.fused.model, "fused graph")  # type: ignore[union-attr]
            fused_runner = prepare(runtime_model(path), backend="onnxruntime", providers=providers,
                                   threads=plan)
        try:
            if fused_runner is not None:
                cascade: Cascade = FusedCascade(stages, fused_runner, manifest.combine, manifest.labels,
                                                manifest.preprocessing, cache, manifest.name)
            else:
                cascade = Cascade(stages, manifest.combine, manifest.labels, manifest.preprocessing, cache,
                                  manifest.name)
        except ConfigError as exc:  # labels vs class counts, preprocessing vs the first model's input
            raise BundleError("bundle %s: %s" % (folder, exc)) from None
    except Exception:
        for st in stages:
            st.runner.close()
        if fused_runner is not None:
            fused_runner.close()
        raise
    cascade.form_reason = why  # type: ignore[attr-defined]
    cascade.manifest = manifest  # type: ignore[attr-defined]
    cascade.folder = folder  # type: ignore[attr-defined]
    cascade.threads = plan  # type: ignore[attr-defined]
    return cascade


def manifest_text(manifest: Manifest) -> str:
    """``manifest`` as the text of an ``edgeconf.json``, after checking that it would be read back."""
    doc = manifest.to_json()
    parse_manifest(doc)  # never write a manifest we would refuse to read
    return json.dumps(doc, indent=2) + "\n"


def write_manifest(folder: str, manifest: Manifest) -> None:
    """Validate ``manifest`` and every file it lists, then write it as the folder's ``edgeconf.json`` atomically."""
    from edgeconf.atomic import write_text

    text = manifest_text(manifest)
    verify_files(folder, manifest)
    write_text(os.path.join(folder, MANIFEST), text)


def _prepare_remote(spec: StageSpec, manifest: Manifest) -> Any:
    """Connect a remote stage and check the served model against the stage; (runner, fingerprint id)."""
    from edgeconf.backends import prepare
    from edgeconf.backends.triton import Expectation, remote_settings

    remote = spec.remote
    pre = manifest.preprocessing
    expect = Expectation(tuple(pre.input_shape), pre.dtype, len(manifest.labels), spec.logits)
    runner = prepare("", backend=remote["backend"], url=remote["url"], model=spec.model,
                     version=remote.get("version", ""), settings=remote_settings(remote, "stage %s" % spec.name),
                     expect=expect)
    onnx = remote.get("onnx")
    sha = manifest.files[onnx]["sha256"] if onnx else "%s:%s/%s/%s" % (remote["backend"], remote["url"], spec.model,
                                                                        remote.get("version", ""))
    return runner, sha


def save_bundle(folder: str, stages: Sequence[StageSpec], model_files: Dict[str, str], labels: Sequence[str],
                preprocessing: Preprocessing, combine: str = "last", memo: Optional[MemoSettings] = None,
                name: str = "bundle", provenance: Optional[Dict[str, Any]] = None,
                extra: Optional[Dict[str, Any]] = None) -> Manifest:
    """Write a bundle: copy ``model_files`` (bundle-relative name → source path) and the manifest.

    A stage model that keeps weights in external-data files brings them along: each is copied beside the
    model, at the location the model names, and listed (with its sha256) like every other file.
    """
    copies = dict(model_files)
    for spec in stages:
        model = spec.local_file
        src = model_files.get(model) if model else None
        if src is None:
            continue
        for location in external_data_locations(src):
            rel = os.path.normpath(os.path.join(os.path.dirname(model), location)).replace(os.sep, "/")
            load_value(Path(), rel, "model %s: external data location" % model, BundleError)
            copies.setdefault(rel, os.path.join(os.path.dirname(os.path.abspath(src)), location))
    files: Dict[str, Dict[str, Any]] = {}
    try:
        os.makedirs(folder, exist_ok=True)
        for rel, src in copies.items():
            dst = _inside(folder, rel, "file")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.realpath(src) != dst:
                if not os.path.isfile(src):
                    raise BundleError("cannot add %s to the bundle: %s does not exist" % (rel, src))
                shutil.copyfile(src, dst)
            files[rel] = {"sha256": sha256_file(dst), "bytes": os.path.getsize(dst)}
    except OSError as exc:
        raise OutputError(describe_os_error(folder, exc, "write the bundle in")) from None
    prov = {"tool": "edgeconf %s" % __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()}
    prov.update(provenance or {})
    manifest = Manifest(list(stages), list(labels), preprocessing, combine, memo or MemoSettings(), name, prov, files,
                        dict(extra or {}))
    checked = parse_manifest(manifest.to_json())  # never write a manifest we would refuse to read
    verify_files(folder, checked)
    write_text(os.path.join(folder, MANIFEST), json.dumps(checked.to_json(), indent=2) + "\n")
    return checked
