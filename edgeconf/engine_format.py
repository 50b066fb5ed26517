"""TensorRT engine files with an edgeconf header.

Layout: a 4-byte little-endian header length, the header as UTF-8 JSON, then the TensorRT plan
(the layout other tools use to carry metadata in front of a plan). A ``<engine>.json`` sidecar holds
the same header for tools that only want to look. The header records what TensorRT cannot: the
edgeconf metadata of the source ONNX (score, threshold, temperature, labels, preprocessing), the
TensorRT version, GPU / board and compute capability that built it, precision, I/O specs and the
sha256 of the source ONNX, so a mismatch is a clear message before TensorRT ever sees the plan.

Pure Python (no TensorRT needed): everything here is tested on any machine.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shlex
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgeconf import __version__
from edgeconf.atomic import atomic_write, describe_os_error, write_bytes, write_text
from edgeconf.errors import BackendUnavailableError, ModelLoadError, OutputError
from edgeconf.hashing import sha256_file  # noqa: F401  (re-exported)
from edgeconf.pathcheck import not_a_file
from edgeconf.schema import loads

FORMAT = "edgeconf.engine"
SCHEMA_VERSION = 1
META_PREFIX = "edgeconf."
SIDECAR_SUFFIX = ".json"
ENGINE_EXTENSIONS = (".engine", ".plan", ".trt")
#: Larger "header lengths" mean the file does not start with a header.
MAX_HEADER_BYTES = 16 << 20
#: No real TensorRT plan is smaller than this.
MIN_PLAN_BYTES = 64


class EngineFormatError(ModelLoadError):
    """An engine file cannot be read: not an engine, or a damaged header or plan."""


class NotAnEngineError(EngineFormatError):
    """The file is something else (ONNX, an image, text, an archive, empty…)."""


class EngineHeaderError(EngineFormatError):
    """The file starts with an edgeconf-style header that is truncated or corrupt."""


class EngineCompatibilityError(BackendUnavailableError):
    """The engine was built by another TensorRT version or for another GPU."""


class PlainPlanWarning(UserWarning):
    """A plan without a header: nothing can be checked before TensorRT deserialises it."""


@dataclass
class EngineHeader:
    """What edgeconf knows about an engine. ``extra`` keeps unknown keys (other tools' headers)."""

    tensorrt: str = ""
    gpu: str = ""
    compute_capability: str = ""  # "5.3", "8.7"
    board: Optional[str] = None  # device profile id or /proc/device-tree/model
    precision: str = "fp32"
    inputs: List[Dict[str, Any]] = field(default_factory=list)  # TensorSpec.to_json() entries
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    profile: Optional[Dict[str, int]] = None  # batch range {"min", "opt", "max"}
    workspace_mb: Optional[int] = None
    source_onnx: Optional[str] = None  # file name of the ONNX it was built from
    source_onnx_sha256: Optional[str] = None
    edgeconf: Dict[str, Any] = field(default_factory=dict)  # ONNX metadata_props "edgeconf.*", JSON-decoded
    plan_bytes: Optional[int] = None
    plan_sha256: Optional[str] = None
    created: Optional[str] = None
    tool: Optional[str] = None
    format: str = FORMAT
    schema: int = SCHEMA_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)

    _KEYS = ("format", "schema", "tool", "created", "tensorrt", "gpu", "compute_capability", "board", "precision",
             "inputs", "outputs", "profile", "workspace_mb", "source_onnx", "source_onnx_sha256", "edgeconf",
             "plan_bytes", "plan_sha256")

    @property
    def is_edgeconf(self) -> bool:
        return self.format == FORMAT

    def to_json(self) -> Dict[str, Any]:
        d = {k: getattr(self, k) for k in self._KEYS}
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "EngineHeader":
        if not isinstance(data, dict):
            raise EngineHeaderError("an engine header must be a JSON object, got %s" % type(data).__name__)
        kw = {k: data[k] for k in cls._KEYS if k in data}
        kw["format"] = str(data.get("format", "") or "")
        extra = {k: v for k, v in data.items() if k not in cls._KEYS}
        header = cls(extra=extra, **kw)
        for name in ("inputs", "outputs"):
            if not isinstance(getattr(header, name), list):
                raise EngineHeaderError("engine header field %r must be a list" % name)
        if not isinstance(header.edgeconf, dict):
            raise EngineHeaderError("engine header field 'edgeconf' must be an object")
        return header

    def metadata_props(self) -> Dict[str, str]:
        """The ONNX-style metadata map (``edgeconf.<key>`` → JSON string), as the ONNX runner exposes it."""
        return {META_PREFIX + k: json.dumps(v) for k, v in self.edgeconf.items()}


@dataclass
class EngineFile:
    """An engine file as read: its header (None for a plain plan) and where the plan starts."""

    path: str
    header: Optional[EngineHeader]
    plan_offset: int
    plan_bytes: int

    @property
    def plain(self) -> bool:
        return self.header is None

    def read_plan(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.plan_offset)
            return f.read()


# -- writing --------------------------------------------------------------------------------------
def sidecar_path(engine_path: str) -> str:
    return engine_path + SIDECAR_SUFFIX


def encode_header(header: EngineHeader) -> bytes:
    raw = json.dumps(header.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise EngineFormatError("engine header is %d bytes, over the %d limit" % (len(raw), MAX_HEADER_BYTES))
    return struct.pack("<I", len(raw)) + raw


def write_engine(path: str, plan: bytes, header: EngineHeader, sidecar: bool = True) -> EngineHeader:
    """Write header + plan to ``path`` (atomically) and the ``.json`` sidecar; fills plan size and hash."""
    plan = bytes(plan)
    if len(plan) == 0:
        raise EngineFormatError("refusing to write %s: the TensorRT plan is empty" % path)
    header.plan_bytes = len(plan)
    header.plan_sha256 = hashlib.sha256(plan).hexdigest()
    header.created = header.created or _now()
    header.tool = header.tool or "edgeconf %s" % __version__
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_os_error(folder, exc, "create the folder")) from None
    with atomic_write(path, "wb") as f:
        f.write(encode_header(header))
        f.write(plan)
    if sidecar:
        write_text(sidecar_path(path), json.dumps(header.to_json(), indent=2, sort_keys=True) + "\n")
    return header


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# -- reading --------------------------------------------------------------------------------------
_SIGNATURES: Sequence[Tuple[bytes, str]] = (
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint?)"),
    (b"\x93NUMPY", "a numpy .npy array"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x7fELF", "an executable"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
)


def _sniff_other(path: str, head: bytes) -> Optional[str]:
    """Name the kind of a file that is certainly not a TensorRT plan, or None (what its bytes say first; a name
    ending in .onnx only where the bytes say nothing)."""
    for sig, what in _SIGNATURES:
        if head.startswith(sig):
            return what
    if head[:1] in (b"{", b"["):
        return "a JSON/text file"
    sample = head[:256]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "a text file"
    low = head[:96].lower()
    if head[:1] == b"\x08" and (b"onnx" in low or b"pytorch" in low or b"tf2onnx" in low):
        return "an ONNX model"
    if path.lower().endswith(".onnx"):
        return "an ONNX model"
    return None


def looks_like_header(head: bytes) -> bool:
    """A header starts with a 4-byte length and then a JSON object with string keys (``{"`` or ``{}``)."""
    return len(head) >= 6 and head[4:6] in (b'{"', b"{}")


def _rebuild_hint(path: str) -> str:
    # never suggest writing an engine over a file named .onnx
    engine_name = path.lower().endswith((".engine", ".plan", ".trt"))  # else (a .onnx, a sidecar .json…) not there
    return "build one with: edgeconf engine MODEL.onnx --out %s" % (path if engine_name else "MODEL.engine")


def read_engine(path: str, verify: bool = True, warn_plain: bool = True) -> EngineFile:
    """Parse an engine file's header (if any) without reading the whole plan.

    Raises :class:`NotAnEngineError` for files that are certainly not engines, and
    :class:`EngineHeaderError` for truncated or corrupt headers / plans. A file without a header is
    returned as a plain plan (``header is None``) with a :class:`PlainPlanWarning`. With ``verify``,
    the plan's size (and sha256, when the header has it) must match the header.
    """
    if not os.path.isfile(path):
        raise ModelLoadError("engine file %s %s" % (path, not_a_file(path)))
    size = os.path.getsize(path)
    if size == 0:
        raise NotAnEngineError("%s is empty, not a TensorRT engine; %s" % (path, _rebuild_hint(path)))
    with open(path, "rb") as f:
        head = f.read(4096)
        if looks_like_header(head):
            (length,) = struct.unpack("<I", head[:4])
            if length > MAX_HEADER_BYTES:
                raise EngineHeaderError("%s: header length field says %d bytes, which is not plausible; the file is "
                                        "corrupt — rebuild it (%s)" % (path, length, _rebuild_hint(path)))
            if 4 + length > size:
                raise EngineHeaderError("%s is truncated: its header needs %d bytes but the file has only %d; copy it "
                                        "again or rebuild it (%s)" % (path, length, size - 4, _rebuild_hint(path)))
            f.seek(4)
            raw = f.read(length)
            try:
                data = loads(raw.decode("utf-8"), "the header", ModelLoadError)  # bounded depth and numbers
                if not isinstance(data, dict):
                    raise ValueError("the header is not a JSON object")
            except (UnicodeDecodeError, ValueError, ModelLoadError) as exc:
                raise EngineHeaderError("%s has a corrupt engine header (%s); rebuild it (%s)"
                                        % (path, str(exc)[:120], _rebuild_hint(path))) from None
            header = EngineHeader.from_json(data)
            engine = EngineFile(path, header, 4 + length, size - 4 - length)
            if verify:
                _verify_plan(engine)
            return engine
    other = _sniff_other(path, head)
    if other is not None:
        hint = ("build an engine from it with: edgeconf engine %s --out MODEL.engine" % path
                if other == "an ONNX model" else _rebuild_hint(path))
        raise NotAnEngineError("%s is %s, not a TensorRT engine; %s" % (path, other, hint))
    if size < MIN_PLAN_BYTES:
        raise NotAnEngineError("%s is only %d bytes, too small to be a TensorRT engine; %s" % (path, size, _rebuild_hint(path)))
    if warn_plain:
        warnings.warn("%s has no edgeconf header: its TensorRT version, GPU and thresholds cannot be checked before "
                      "loading; rebuild it with edgeconf engine to get a checked engine" % path, PlainPlanWarning,
                      stacklevel=2)
    return EngineFile(path, None, 0, size)


def _verify_plan(engine: EngineFile) -> None:
    header = engine.header
    assert header is not None
    if engine.plan_bytes == 0:
        raise EngineHeaderError("%s holds a header but no TensorRT plan (truncated); rebuild it (%s)"
                                % (engine.path, _rebuild_hint(engine.path)))
    if header.plan_bytes is not None and header.plan_bytes != engine.plan_bytes:
        what = "truncated" if engine.plan_bytes < header.plan_bytes else "longer than written"
        raise EngineHeaderError("%s is %s: the header says the plan has %d bytes, the file holds %d; copy it again or "
                                "rebuild it (%s)" % (engine.path, what, header.plan_bytes, engine.plan_bytes,
                                                     _rebuild_hint(engine.path)))
    if header.plan_sha256:
        h = hashlib.sha256()
        with open(engine.path, "rb") as f:
            f.seek(engine.plan_offset)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != header.plan_sha256:
            raise EngineHeaderError("%s is corrupt: the plan's sha256 does not match its header; rebuild it (%s)"
                                    % (engine.path, _rebuild_hint(engine.path)))


def read_header(path: str) -> Optional[EngineHeader]:
    """The header of an engine file, or None for a plain plan (no warning)."""
    return read_engine(path, verify=False, warn_plain=False).header


def read_plan(path: str, verify: bool = True) -> Tuple[Optional[EngineHeader], bytes]:
    """Header (None for a plain plan) and the bare plan bytes, ready for ``deserialize_cuda_engine``."""
    engine = read_engine(path, verify=verify)
    return engine.header, engine.read_plan()


def strip_header(src: str, dst: str) -> int:
    """Write the bare TensorRT plan of ``src`` to ``dst`` (for trtexec and other tools); returns its size."""
    engine = read_engine(src, verify=True, warn_plain=False)
    from edgeconf.atomic import same_path

    if same_path(src, dst):
        raise EngineFormatError("--strip would overwrite %s with its own plan; choose another --out" % src)
    plan = engine.read_plan()
    write_bytes(dst, plan)
    return len(plan)


# -- ONNX metadata --------------------------------------------------------------------------------
def decode_metadata(props: Dict[str, str]) -> Dict[str, Any]:
    """``edgeconf.``-prefixed metadata_props with JSON values → {key without prefix: value}."""
    out: Dict[str, Any] = {}
    for key, value in props.items():
        if not key.startswith(META_PREFIX):
            continue
        try:
            out[key[len(META_PREFIX):]] = loads(value, key, ModelLoadError)
        except ModelLoadError:  # not JSON, too deep, non-finite: kept as the text it is
            out[key[len(META_PREFIX):]] = value
    return out


def onnx_metadata(onnx_path: str) -> Dict[str, Any]:
    """The edgeconf metadata stored in an ONNX file's ``metadata_props`` (JSON-decoded)."""
    import onnx

    try:
        model = onnx.load(onnx_path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError
        raise ModelLoadError("%s is not a readable ONNX model (%s)" % (onnx_path, str(exc)[:200])) from None
    return decode_metadata({p.key: p.value for p in model.metadata_props})


# -- compatibility --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceRuntime:
    """The TensorRT version and GPU an engine is about to run on."""

    tensorrt: str
    gpu: str = ""
    compute_capability: str = ""
    board: Optional[str] = None


@dataclass
class Compatibility:
    ok: bool
    problems: List[str]
    notes: List[str]
    message: str


def _version_tuple(v: str) -> Tuple[int, ...]:
    parts = []
    for p in str(v).strip().split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def same_tensorrt(built: str, running: str) -> bool:
    """Engines run only on the TensorRT release that built them: compare every component both give (≥ 3)."""
    a, b = _version_tuple(built), _version_tuple(running)
    if not a or not b:
        return False
    n = max(3, min(len(a), len(b)))
    return a[:n] == b[:n]


def rebuild_command(header: Optional[EngineHeader], engine_path: str) -> str:
    """The ``edgeconf engine`` command that rebuilds this engine with the same options, on this device."""
    src = (header.source_onnx if header and header.source_onnx else "MODEL.onnx")
    parts = ["edgeconf", "engine", src]
    if header is not None:
        if header.precision == "fp16":
            parts.append("--fp16")
        elif header.precision == "int8":
            parts += ["--int8", "--calib", "DATA"]
        elif header.precision == "fp32":
            parts.append("--fp32")
        if header.workspace_mb:
            parts += ["--workspace", str(header.workspace_mb)]
        if header.profile:
            parts += ["--profile", "%d,%d,%d" % (header.profile.get("min", 1), header.profile.get("opt", 1),
                                                 header.profile.get("max", 1))]
    parts += ["--out", engine_path]
    return " ".join(shlex.quote(p) for p in parts)


def _gpu_words(gpu: str, cc: str) -> str:
    bits = [gpu or "an unknown GPU"]
    if cc:
        bits.append("(compute %s)" % cc)
    return " ".join(bits)


def compatibility(header: EngineHeader, runtime: DeviceRuntime, engine_path: str = "ENGINE") -> Compatibility:
    """Compare an engine's header with the running TensorRT and GPU.

    A different TensorRT release or compute capability is a problem (TensorRT refuses such plans or
    crashes); a different GPU name with the same compute capability is only a note (TensorRT warns).
    """
    problems: List[str] = []
    notes: List[str] = []
    if not header.tensorrt:
        notes.append("the header does not say which TensorRT version built it")
    elif not same_tensorrt(header.tensorrt, runtime.tensorrt):
        problems.append("it was built with TensorRT %s but this device runs TensorRT %s" % (header.tensorrt, runtime.tensorrt))
    if header.compute_capability and runtime.compute_capability:
        if _version_tuple(header.compute_capability) != _version_tuple(runtime.compute_capability):
            problems.append("it was built for %s but this device has %s" % (
                _gpu_words(header.gpu, header.compute_capability), _gpu_words(runtime.gpu, runtime.compute_capability)))
        elif header.gpu and runtime.gpu and header.gpu != runtime.gpu:
            notes.append("it was built on %s and runs on %s (same compute capability %s; TensorRT may be slower)"
                         % (header.gpu, runtime.gpu, runtime.compute_capability))
    elif header.gpu and runtime.gpu and header.gpu != runtime.gpu:
        problems.append("it was built for %s but this device has %s" % (header.gpu, runtime.gpu))
    if problems:
        message = "engine %s cannot run here: %s. Rebuild it on this device: %s" % (
            engine_path, "; and ".join(problems), rebuild_command(header, engine_path))
    else:
        message = "engine %s matches this device (TensorRT %s, %s)%s" % (
            engine_path, runtime.tensorrt, _gpu_words(runtime.gpu, runtime.compute_capability),
            "; " + "; ".join(notes) if notes else "")
    return Compatibility(not problems, problems, notes, message)


def check_compatible(header: Optional[EngineHeader], runtime: DeviceRuntime, engine_path: str = "ENGINE") -> Compatibility:
    """Raise :class:`EngineCompatibilityError` on a mismatch; warn for plain plans and notes."""
    if header is None:
        warnings.warn("%s is a plain TensorRT plan without an edgeconf header; its TensorRT version and GPU cannot be "
                      "checked, so a mismatch will fail inside TensorRT. Rebuild it on this device: %s"
                      % (engine_path, rebuild_command(None, engine_path)), PlainPlanWarning, stacklevel=2)
        return Compatibility(True, [], ["plain plan: not checked"], "plain plan: not checked")
    result = compatibility(header, runtime, engine_path)
    if not result.ok:
        raise EngineCompatibilityError(result.message)
    for note in result.notes:
        warnings.warn("engine %s: %s" % (engine_path, note), UserWarning, stacklevel=2)
    return result


# -- description for `edgeconf inspect` ------------------------------------------------------------
def describe(path: str) -> Dict[str, Any]:
    """What an engine file carries, as JSON-ready data (for ``edgeconf inspect``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlainPlanWarning)
        engine = read_engine(path, verify=True, warn_plain=False)
    info: Dict[str, Any] = {"kind": "engine", "path": path, "bytes": os.path.getsize(path),
                            "plan_bytes": engine.plan_bytes, "sidecar": os.path.isfile(sidecar_path(path))}
    if engine.header is None:
        info["header"] = None
        info["format"] = "plain TensorRT plan (no header: version and GPU unknown)"
        return info
    h = engine.header
    info["format"] = h.format if h.is_edgeconf else "foreign header (%s)" % (h.format or "unknown format")
    info["header"] = h.to_json()
    info["tensorrt"] = h.tensorrt
    info["gpu"] = h.gpu
    info["compute_capability"] = h.compute_capability
    info["precision"] = h.precision
    info["edgeconf"] = dict(h.edgeconf)
    info["rebuild"] = rebuild_command(h, path)
    return info


__all__ = ["EngineHeader", "EngineFile", "DeviceRuntime", "Compatibility", "EngineFormatError", "NotAnEngineError",
           "EngineHeaderError", "EngineCompatibilityError", "PlainPlanWarning", "write_engine", "read_engine",
           "read_header", "read_plan", "strip_header", "sidecar_path", "onnx_metadata", "decode_metadata",
           "compatibility", "check_compatible", "rebuild_command", "same_tensorrt", "describe", "sha256_file"]
