"""Try bad inputs through the CLI and the Python API, as a careful user would, and tally the outcomes.

Each case says what a correct edgeconf does: refuse it with a one-line error (optionally naming something), or
accept it. The outcome is classified as ``one-line error``, ``accepted``, ``traceback``, ``hang`` (no answer
within the time limit), ``wrong result`` (accepted what must be refused, or refused what must be accepted) or
``misleading`` (one line, but not saying what the case needs). Streams only ever go to 127.0.0.1 or to names
that do not resolve.

Run: .venv/bin/python benchmarks/bad_inputs.py [--json] [--only SUBSTRING]
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, Callable, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "edgeconf", "data", "zoo", "bundle")
SAMPLE = os.path.join(ROOT, "edgeconf", "data", "fashion_sample.npz")
sys.path.insert(0, os.path.join(ROOT, "tests"))


class Case:
    def __init__(self, name: str, area: str, run: Any, expect: str = "error", says: str = "", timeout: float = 90) -> None:
        self.name, self.area, self.run, self.expect, self.says, self.timeout = name, area, run, expect, says, timeout


def cli(*args: Any, env: Optional[dict] = None) -> List[str]:
    return [sys.executable, "-m", "edgeconf"] + [str(a) for a in args]


def classify_cli(case: Case, cwd: str) -> str:
    try:
        proc = subprocess.run(case.run, capture_output=True, text=True, timeout=case.timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "hang"
    err = proc.stderr
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if proc.returncode == 0:
        return "accepted" if case.expect == "ok" else "wrong result"
    if case.expect == "ok":
        return "wrong result"
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("edgeconf: WARNING")]
    errors = [ln for ln in lines if ln.startswith(("edgeconf: error:", "Error:", "edgeconf: aborted"))]
    if len(errors) != 1:
        return "misleading"
    if case.says and case.says not in errors[0]:
        return "misleading"
    return "one-line error"


def classify_api(case: Case) -> str:
    from edgeconf.errors import EdgeconfError

    try:
        value = case.run()
    except EdgeconfError as exc:
        if case.expect == "ok":
            return "wrong result"
        msg = str(exc)
        if "\n" in msg or (case.says and case.says not in msg):
            return "misleading"
        return "one-line error"
    except RecursionError:
        return "traceback"
    except Exception:  # noqa: BLE001 - anything else is what the tally is looking for
        return "traceback"
    if case.expect == "ok" and value is not False:
        return "accepted"
    return "wrong result"


# -- fixtures ---------------------------------------------------------------------------------------------------
def _first_temperature(manifest: str, value: str) -> str:
    """The manifest text with its first stage's temperature replaced by ``value`` (raw JSON text, e.g. a
    non-standard ``Infinity``), whatever number it held; refuses a manifest without one, so the case cannot
    silently test an unchanged bundle."""
    raw, n = re.subn(r'"temperature": -?[0-9.eE+-]+', '"temperature": %s' % value, manifest, count=1)
    if not n:
        raise SystemExit("bad_inputs: the shipped manifest has no temperature to replace")
    return raw


def edited_bundle(work: str, name: str, edit: Callable[[dict], Any], raw: Optional[str] = None) -> str:
    folder = os.path.join(work, "bundles", name)
    shutil.copytree(ZOO, folder)
    path = os.path.join(folder, "edgeconf.json")
    if raw is not None:
        with open(path, "w") as f:
            f.write(raw)
        return folder
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)
    return folder


def external_bundle(work: str, listed: bool, overwrite: bool) -> str:
    import onnx

    from edgeconf.bundle import StageSpec, save_bundle
    from edgeconf.preprocess import Preprocessing
    from onnx_models import random_classifier

    src = os.path.join(work, "ext-src-%d%d" % (listed, overwrite))
    os.makedirs(src)
    onnx.save_model(random_classifier(3), os.path.join(src, "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    folder = os.path.join(work, "bundles", "ext-%d%d" % (listed, overwrite))
    save_bundle(folder, [StageSpec("s", "m.onnx", "margin", 0.0)], {"m.onnx": os.path.join(src, "m.onnx")},
                [str(i) for i in range(10)], Preprocessing())
    if overwrite:
        w = np.fromfile(os.path.join(folder, "w.bin"), np.uint8)
        w[::-1].tofile(os.path.join(folder, "w.bin"))
    if not listed:
        path = os.path.join(folder, "edgeconf.json")
        with open(path) as f:
            data = json.load(f)
        data["files"].pop("w.bin")
        with open(path, "w") as f:
            json.dump(data, f)
    return folder


def class_bundle(work: str, labels: int, second_classes: Optional[int]) -> str:
    from edgeconf.bundle import StageSpec, save_bundle
    from edgeconf.preprocess import Preprocessing
    from onnx_models import random_classifier, save

    folder = os.path.join(work, "bundles", "classes-%d-%s" % (labels, second_classes))
    os.makedirs(os.path.join(work, "models"), exist_ok=True)
    ten = save(random_classifier(1), os.path.join(work, "models", "ten.onnx"))
    specs, files = [StageSpec("a", "ten.onnx", "margin", 0.5 if second_classes else 0.0)], {"ten.onnx": ten}
    if second_classes:
        other = save(random_classifier(2, classes=second_classes), os.path.join(work, "models", "other.onnx"))
        specs.append(StageSpec("b", "other.onnx", "margin", 0.0))
        files["other.onnx"] = other
    save_bundle(folder, specs, files, [str(i) for i in range(labels)], Preprocessing())
    return folder


def files(work: str) -> dict:
    import cv2

    out = {}
    out["garbage.png"] = os.path.join(work, "garbage.png")
    with open(out["garbage.png"], "wb") as f:
        f.write(b"not an image at all")
    out["huge_header.png"] = os.path.join(work, "huge_header.png")  # IHDR claims 60000x60000
    ok, enc = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    raw = bytearray(enc.tobytes())
    raw[16:24] = (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")
    with open(out["huge_header.png"], "wb") as f:
        f.write(bytes(raw))
    out["empty.npy"] = os.path.join(work, "empty.npy")
    open(out["empty.npy"], "wb").close()
    out["zero.npy"] = os.path.join(work, "zero.npy")
    np.save(out["zero.npy"], np.zeros((2, 0, 0), np.uint8))
    out["forged.npy"] = os.path.join(work, "forged.npy")
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 4, 4), np.uint8))
    head = buf.getvalue().replace(b"(1, 4, 4)", b"(999999, 99999, 9999)"[:9].ljust(9))
    with open(out["forged.npy"], "wb") as f:
        f.write(head)
    out["object.npz"] = os.path.join(work, "object.npz")
    with zipfile.ZipFile(out["object.npz"], "w") as z:
        obj = io.BytesIO()
        np.lib.format.write_array(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        z.writestr("x.npy", obj.getvalue())
    out["float.npy"] = os.path.join(work, "float.npy")
    np.save(out["float.npy"], np.zeros((2, 28, 28), np.float32))
    out["good.png"] = os.path.join(work, "good.png")
    cv2.imwrite(out["good.png"], np.full((28, 28), 120, np.uint8))
    out["video.avi"] = os.path.join(work, "video.avi")
    w = cv2.VideoWriter(out["video.avi"], cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(40):
        w.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    w.release()
    out["truncated.avi"] = os.path.join(work, "truncated.avi")
    with open(out["video.avi"], "rb") as f:
        data = f.read()
    with open(out["truncated.avi"], "wb") as f:
        f.write(data[: len(data) // 2])
    out["prev.jsonl"] = os.path.join(work, "prev.jsonl")
    with open(out["prev.jsonl"], "w") as f:
        f.write('{"earlier": true}\n')
    return out


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cases(work: str) -> List[Case]:
    f = files(work)
    b = lambda name, edit, raw=None: edited_bundle(work, name, edit, raw)  # noqa: E731
    deep = "[" * 200000 + "]" * 200000
    port = closed_port()
    out: List[Case] = []
    add = out.append
    # bundles through the CLI: classify, run, inspect
    deep_bundle = b("deep", None, deep)
    for verb in (["classify", deep_bundle, f["good.png"]], ["run", deep_bundle, "--source", "demo://", "--no-live"],
                 ["inspect", deep_bundle]):
        add(Case("manifest nested 200000 deep: %s" % verb[0], "bundle", cli(*verb), says="levels deep"))
    for name, edit, says in [
        ("memo.enabled \"false\"", lambda d: d["memo"].update(enabled="false"), "memo.enabled must be true or false"),
        ("memo.capacity 1.9", lambda d: d["memo"].update(capacity=1.9), "memo.capacity must be an integer"),
        ("memo.capacity 10**12", lambda d: d["memo"].update(capacity=10 ** 12), "memo.capacity"),
        ("memo.radius \"abc\"", lambda d: d["memo"].update(radius="abc"), "memo.radius must be an integer"),
        ("temperature 1e999", None, "temperature must be a finite number"),
        ("temperature Infinity", None, "Infinity"),
        ("stage name 7", lambda d: d["stages"][0].update(name=7), "name must be a non-empty string"),
        ("threshold \"high\"", lambda d: d["stages"][0].update(threshold="high"), "threshold"),
        ("threshold 1.5", lambda d: d["stages"][0].update(threshold=1.5), "threshold"),
        ("unknown stage key", lambda d: d["stages"][0].update(treshold=0.3), "unknown key 'treshold'"),
        ("preprocessing.size 100000^2", lambda d: d["preprocessing"].update(size=[100000, 100000]), "preprocessing.size"),
        ("preprocessing.size 32x32 for a 28x28 model", lambda d: d["preprocessing"].update(size=[32, 32]), "preprocessing"),
        ("preprocessing.channels true", lambda d: d["preprocessing"].update(channels=True), "channels"),
        ("5 labels for 10 classes", lambda d: d.update(labels=d["labels"][:5]), "10 classes but there are 5 labels"),
        ("labels not strings", lambda d: d.update(labels=list(range(10))), "labels[0]"),
        ("model path ../x", lambda d: d["stages"][0].update(model="../x.onnx"), "relative path inside"),
        ("model path with NUL", lambda d: d["stages"][0].update(model="a\u0000.onnx"), "relative path inside"),
        ("files entry /etc/passwd", lambda d: d["files"].update({"/etc/passwd": {"sha256": "0" * 64}}), "relative path"),
        ("sha256 changed", lambda d: d["files"]["stage1.onnx"].update(sha256="0" * 64), "changed or corrupted"),
        ("schema 2", lambda d: d.update(schema=2), "schema version 2"),
        ("combine \"vote\"", lambda d: d.update(combine="vote"), "combine must be one of"),
        ("stages empty", lambda d: d.update(stages=[]), "stages must be a list of 1 to 64"),
        ("memo null", lambda d: d.update(memo=None), "memo must be an object"),
    ]:
        if name == "temperature 1e999":
            with open(os.path.join(ZOO, "edgeconf.json")) as fh:
                raw = _first_temperature(fh.read(), "1e999")
            folder = b("t1e999", None, raw)
        elif name == "temperature Infinity":
            with open(os.path.join(ZOO, "edgeconf.json")) as fh:
                raw = _first_temperature(fh.read(), "Infinity")
            folder = b("tinf", None, raw)
        else:
            folder = b(name.replace(" ", "_").replace('"', "").replace("/", "_").replace("^", ""), edit)
        add(Case("manifest %s: classify" % name, "bundle", cli("classify", folder, f["good.png"]), says=says))
    add(Case("manifest 9 MB", "bundle", cli("classify", b("big", None, " " * (9 << 20)), f["good.png"]),
             says="larger than"))
    add(Case("manifest is [] ", "bundle", cli("inspect", b("list", None, "[]")), says="JSON object"))
    add(Case("manifest not JSON", "bundle", cli("classify", b("notjson", None, "{oops"), f["good.png"]),
             says="not valid JSON"))
    add(Case("external data not listed", "bundle", cli("classify", external_bundle(work, False, False), f["good.png"]),
             says="which 'files' does not list"))
    add(Case("external data overwritten", "bundle", cli("classify", external_bundle(work, True, True), f["good.png"]),
             says="changed or corrupted"))
    add(Case("5-class stage among 10-class", "bundle", cli("classify", class_bundle(work, 10, 5), f["good.png"]),
             says="answers over 5 classes"))
    add(Case("bundle folder missing", "bundle", cli("classify", os.path.join(work, "nope"), f["good.png"]),
             says="does not exist"))
    add(Case("valid zoo bundle", "bundle", cli("classify", ZOO, f["good.png"]), expect="ok"))
    # inputs (the readers)
    for name, path, says in [("garbage .png", f["garbage.png"], ""), ("PNG header 60000x60000", f["huge_header.png"], ""),
                             ("empty .npy", f["empty.npy"], "empty"), (".npy of shape (2,0,0)", f["zero.npy"], ""),
                             (".npy header claims a huge shape", f["forged.npy"], ""),
                             (".npz holding an object array", f["object.npz"], "object"),
                             ("float .npy", f["float.npy"], "")]:
        add(Case("classify %s" % name, "inputs", cli("classify", ZOO, path), says=says))
    add(Case("classify a file that does not exist", "inputs", cli("classify", ZOO, os.path.join(work, "x.png")),
             says="does not exist"))
    # outputs
    for name, argv, says in [
        ("classify --out /dev/full", cli("classify", ZOO, f["good.png"], "--out", "/dev/full"), "no space left"),
        ("classify --out /proc/x.jsonl", cli("classify", ZOO, f["good.png"], "--out", "/proc/x.jsonl"), "/proc/x.jsonl"),
        ("classify --out a folder", cli("classify", ZOO, f["good.png"], "--out", work), ""),
        ("classify --out prev.jsonl with a bad input", cli("classify", ZOO, f["garbage.png"], "--out", f["prev.jsonl"]), ""),
        ("demo --events /dev/full", cli("demo", "--frames", 10, "--no-live", "--events", "/dev/full"), "no space left"),
        ("demo --events /proc/e.jsonl", cli("demo", "--frames", 10, "--no-live", "--events", "/proc/e.jsonl"), "/proc/e.jsonl"),
        ("demo --events into a missing folder", cli("demo", "--frames", 10, "--no-live", "--events",
                                                    os.path.join(work, "nodir", "e.jsonl")), "does not exist"),
        ("demo --record /proc/r.avi", cli("demo", "--frames", 10, "--no-live", "--record", "/proc/r.avi"), "/proc/r.avi"),
        ("demo --record x.mp4", cli("demo", "--frames", 10, "--no-live", "--record", os.path.join(work, "x.mp4")), ".avi"),
        ("bench --out /dev/full", cli("bench", "--limit", 20, "--configs", "big", "--out", "/dev/full"), "no space left"),
        ("bench --report /proc/rep", cli("bench", "--limit", 20, "--configs", "big", "--report", "/proc/rep"), "/proc/rep"),
        ("bench --predictions /dev/full", cli("bench", "--limit", 20, "--configs", "big", "--predictions", "/dev/full"),
         "no space left"),
        ("retune --out /proc/x.onnx", cli("retune", os.path.join(ZOO, "stage1.onnx"), "--threshold", 0.5, "--out",
                                          "/proc/x.onnx"), "/proc/x.onnx"),
        ("export --out /proc/x.onnx", cli("export", os.path.join(ROOT, "edgeconf/data/zoo/models/tiny.onnx"), "--out",
                                          "/proc/x.onnx"), "/proc/x.onnx"),
    ]:
        add(Case(name, "outputs", argv, says=says, timeout=180))
    # streams and sources
    add(Case("run rtsp://nohost/x (default retry policy)", "streams",
             cli("run", ZOO, "--source", "rtsp://nohost/x", "--no-live"), says="gave up after", timeout=90))
    add(Case("run rtsp://127.0.0.1:closed/x", "streams",
             cli("run", ZOO, "--source", "rtsp://127.0.0.1:%d/x" % port, "--no-live", "--retry-timeout", 5),
             says="gave up after"))
    add(Case("run rtsp:// (no host)", "streams", cli("run", ZOO, "--source", "rtsp://", "--no-live"), says="names no host"))
    add(Case("run http://:80/x (no host)", "streams", cli("run", ZOO, "--source", "http://:80/x", "--no-live"),
             says="names no host"))
    add(Case("run --regions truth on a video", "streams",
             cli("run", ZOO, "--source", f["video.avi"], "--regions", "truth", "--no-live"), says="ground-truth"))
    add(Case("run a truncated video (frames reported)", "streams",
             cli("run", ZOO, "--source", f["truncated.avi"] + "?realtime=0", "--regions", "full", "--no-live"),
             expect="ok"))
    add(Case("run a missing video", "streams", cli("run", ZOO, "--source", os.path.join(work, "missing.mp4"),
                                                   "--no-live"), says="missing.mp4"))
    add(Case("run unknown scheme", "streams", cli("run", ZOO, "--source", "foo://x", "--no-live"), says="unknown source"))
    add(Case("run demo://?size=100000x100000", "streams",
             cli("run", ZOO, "--source", "demo://?size=100000x100000", "--no-live", "--frames", 2), says="size"))
    add(Case("run --size abc", "streams", cli("run", ZOO, "--source", "demo://", "--size", "abc", "--no-live"),
             says="size"))
    add(Case("run --telemetry bad://x", "streams",
             cli("run", ZOO, "--source", "demo://", "--telemetry", "bad://x", "--no-live"), says="mqtt"))
    add(Case("run v4l2:///dev/video99", "streams", cli("run", ZOO, "--source", "v4l2:///dev/video99", "--no-live"),
             says="no such camera"))
    # other commands
    add(Case("inspect a text file as a model", "misc", cli("inspect", f["garbage.png"]), says=""))
    add(Case("inspect a missing path", "misc", cli("inspect", os.path.join(work, "none.onnx")), says="does not exist"))
    add(Case("devices --profile nope", "misc", cli("devices", "--profile", "nope"), says="nope"))
    add(Case("bench --duplicate abc", "misc", cli("bench", "--duplicate", "abc"), says="--duplicate"))
    add(Case("bench --configs nope", "misc", cli("bench", "--configs", "nope"), says="unknown configurations"))
    add(Case("unknown verb", "misc", cli("frobnicate"), says="No such command"))
    # the Python API
    api = api_cases(work)
    return out + api


def api_cases(work: str) -> List[Case]:
    from edgeconf.bundle import load_bundle, parse_manifest

    out: List[Case] = []
    cascade_box: dict = {}

    def cascade():
        if "c" not in cascade_box:
            cascade_box["c"] = load_bundle(ZOO)
        return cascade_box["c"]

    for name, image in [("int64 image", np.zeros((28, 28), np.int64)), ("bool image", np.zeros((28, 28), bool)),
                        ("object image", np.array([[object()]], dtype=object)), ("None", None),
                        ("0x0 image", np.zeros((0, 0), np.uint8)), ("nested list", [[1, 2], [3, 4]]),
                        ("4-D array", np.zeros((1, 28, 28, 1, 1), np.uint8)), ("float image", np.zeros((28, 28), np.float32))]:
        out.append(Case("API classify(%s)" % name, "api", (lambda im=image: cascade().classify(im))))
        out.append(Case("API classify_batch([%s])" % name, "api", (lambda im=image: cascade().classify_batch([im, im]))))
    deep: Any = {}
    for _ in range(200000):
        deep = {"x": deep}
    out.append(Case("API parse_manifest(dict nested 200000 deep)", "api", lambda: parse_manifest(
        {"format": "edgeconf.bundle", "schema": 1, "labels": ["a"], "preprocessing": {}, "stages": [{"model": "m",
         "threshold": 0.5}], "extra": deep})))
    out.append(Case("API parse_manifest(None)", "api", lambda: parse_manifest(None)))
    out.append(Case("API load_bundle(42)", "api", lambda: load_bundle(42)))  # type: ignore[arg-type]
    out.append(Case("API set_threshold(0, 1.5)", "api", lambda: cascade().set_threshold(0, 1.5)))
    out.append(Case("API set_threshold(0, nan)", "api", lambda: cascade().set_threshold(0, float("nan"))))
    out.append(Case("API run_batch(NaN input)", "api", lambda: cascade().run_batch(np.full((1, 1, 28, 28), np.nan, np.float32))))
    out.append(Case("API classify(valid image)", "api", lambda: cascade().classify(np.zeros((28, 28), np.uint8)),
                    expect="ok"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the tally as JSON")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edgeconf-bad-inputs-")
    try:
        results = []
        for case in cases(work):
            if args.only and args.only not in case.name:
                continue
            outcome = classify_api(case) if callable(case.run) else classify_cli(case, work)
            results.append({"case": case.name, "area": case.area, "expect": case.expect, "outcome": outcome})
            if not args.json:
                print("%-16s %-8s %s" % (outcome, case.area, case.name), flush=True)
        tally = collections.Counter(r["outcome"] for r in results)
        if args.json:
            print(json.dumps({"cases": results, "tally": dict(tally)}, indent=2))
        else:
            print("\n%d cases: %s" % (len(results), ", ".join("%d %s" % (n, k) for k, n in tally.most_common())))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
