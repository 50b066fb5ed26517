"""edgeconf triton-repo: the repository layout, config.pbtxt read back with Triton's own schema, the edge bundle,
and the manifest rules of remote stages."""
from __future__ import annotations

import json
import os

import pytest

from edgeconf.bundle import MemoSettings, StageSpec, read_manifest, save_bundle
from edgeconf.errors import BundleError, ConfigError, OutputError
from edgeconf.export.triton_repo import build_repo
from edgeconf.preprocess import Preprocessing

from onnx_models import random_classifier, save

LABELS = ["c%d" % i for i in range(10)]


@pytest.fixture
def bundle(tmp_path):
    a = save(random_classifier(1), tmp_path / "a.onnx")
    b = save(random_classifier(2), tmp_path / "b.onnx")
    stages = [StageSpec("small", "small.onnx", "margin", 0.5), StageSpec("big", "big.onnx", "margin", 0.0)]
    save_bundle(str(tmp_path / "bundle"), stages, {"small.onnx": a, "big.onnx": b}, LABELS,
                Preprocessing(size=(28, 28), channels=1), memo=MemoSettings(True, "exact", 0, 64))
    return str(tmp_path / "bundle")


def test_repository_layout_and_config_parse_with_tritons_schema(bundle, tmp_path):
    res = build_repo(bundle, str(tmp_path / "repo"), max_batch=32, queue_delay_us=250, kind="cpu")
    assert [m["name"] for m in res["models"]] == ["big"]  # default: the last stage
    assert os.path.isfile(tmp_path / "repo" / "big" / "1" / "model.onnx")
    with open(tmp_path / "repo" / "big" / "1" / "model.onnx", "rb") as f, open(os.path.join(bundle, "big.onnx"), "rb") as g:
        assert f.read() == g.read()
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
    from google.protobuf import text_format

    cfg = pb.ModelConfig()
    text_format.Parse((tmp_path / "repo" / "big" / "config.pbtxt").read_text(), cfg)
    assert cfg.name == "big" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("input", pb.TYPE_FP32, [1, 28, 28])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("logits", [10])]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_edge_bundle_names_the_server(bundle, tmp_path):
    res = build_repo(bundle, str(tmp_path / "repo"), edge=str(tmp_path / "edge"), url="grpc://127.0.0.1:8001",
                     deadline_ms=80)
    m = read_manifest(res["edge_bundle"])
    big = m.stages[1]
    assert big.is_remote and big.model == "big" and big.local_file == "big.onnx"
    assert big.remote == {"backend": "triton", "url": "grpc://127.0.0.1:8001", "onnx": "big.onnx", "deadline_ms": 80.0}
    with open(os.path.join(res["edge_bundle"], "edgeconf.json")) as f:
        raw = json.load(f)["stages"][1]
    assert {k: raw[k] for k in ("model", "backend", "url", "onnx", "deadline_ms")} == {
        "model": "big", "backend": "triton", "url": "grpc://127.0.0.1:8001", "onnx": "big.onnx", "deadline_ms": 80.0}
    assert "retries" not in raw and "backend" not in json.load(open(os.path.join(res["edge_bundle"], "edgeconf.json")))["stages"][0]
    assert not m.stages[0].is_remote
    # the edge bundle's remote stage can be served again from the edge bundle itself
    again = build_repo(res["edge_bundle"], str(tmp_path / "repo2"))
    assert [x["name"] for x in again["models"]] == ["big"]


def test_cli_json(bundle, tmp_path):
    from click.testing import CliRunner

    from edgeconf.cli import cli

    r = CliRunner().invoke(cli, ["triton-repo", bundle, "--out", str(tmp_path / "repo"), "--stage", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["models"][0]["stage"] == "big"


def test_refusals(bundle, tmp_path):
    with pytest.raises(ConfigError, match="first stage must stay on the edge"):
        build_repo(bundle, str(tmp_path / "r1"), stages=["small"])
    with pytest.raises(ConfigError, match="--stage nope"):
        build_repo(bundle, str(tmp_path / "r1"), stages=["nope"])
    with pytest.raises(ConfigError, match="go together"):
        build_repo(bundle, str(tmp_path / "r1"), edge=str(tmp_path / "e"))
    with pytest.raises(ConfigError, match="scheme 'tcp'"):
        build_repo(bundle, str(tmp_path / "r1"), edge=str(tmp_path / "e"), url="tcp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="--deadline-ms .* goes with --edge and --url"):
        build_repo(bundle, str(tmp_path / "r1"), deadline_ms=10)
    assert not os.path.exists(tmp_path / "r1")  # nothing written by any refusal
    build_repo(bundle, str(tmp_path / "r2"))
    with pytest.raises(OutputError, match="--force"):
        build_repo(bundle, str(tmp_path / "r2"))
    build_repo(bundle, str(tmp_path / "r2"), force=True)
    before = read_manifest(bundle, verify=True).to_json()
    with pytest.raises(ConfigError, match="--edge .* is the bundle itself; writing there would replace it"):
        build_repo(bundle, str(tmp_path / "r3"), stages=["2"], edge=os.path.join(bundle, "."), url="grpc://h:8001")
    with pytest.raises(ConfigError, match="--out .* is the bundle itself"):
        build_repo(bundle, bundle, force=True)
    assert read_manifest(bundle, verify=True).to_json() == before


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:99999", "port 99999 is out of range; a port is 1..65535"),
    ("grpc://127.0.0.1:99999", "port 99999 is out of range"),  # grpc would wrap it to 34463
    ("grpc://127.0.0.1:0", "port 0 is out of range"),
    ("http://[zz]:8000", r"\[zz\] is not an IPv6 address"),
    ("http://[::1:8000", r"is not \[IPv6 address\]:PORT"),
    ("grpc://bad host:8001", "host 'bad host' is not a host name or an IP address"),
    ("grpc://user@host:8001", "host 'user@host' is not a host name"),
    ("grpc://127.0.0.1:\u00b2", "is not a number"),  # a digit to str.isdigit, not to int()
])
def test_bad_urls_are_refused_where_they_enter(bundle, tmp_path, capsys, url, words):
    from edgeconf.backends.triton import parse_url

    with pytest.raises(ConfigError, match=words):
        parse_url(url)
    code, err = _main(capsys, "triton-repo", bundle, "--out", tmp_path / "r", "--edge", tmp_path / "e", "--url", url)
    assert code == 2 and err.startswith("edgeconf: error: Invalid value for '--url'") and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "r") and not os.path.exists(tmp_path / "e")
    _manifest_with(bundle, backend="triton", url=url)  # the same URL written into a manifest by hand
    with pytest.raises(BundleError, match=words):
        read_manifest(bundle)


@pytest.mark.parametrize("url, want", [
    ("grpc://127.0.0.1:8001", ("grpc", "127.0.0.1:8001")),
    ("http://triton-0.cluster.local", ("http", "triton-0.cluster.local:8000")),
    ("grpc://[::1]:18001/", ("grpc", "[::1]:18001")),
    ("GRPC://host_1:65535", ("grpc", "host_1:65535")),
    ("http://h:1", ("http", "h:1")),
])
def test_good_urls(url, want):
    from edgeconf.backends.triton import parse_url

    assert parse_url(url) == want


def test_deadline_without_edge_is_refused_on_the_command_line(bundle, tmp_path, capsys):
    code, err = _main(capsys, "triton-repo", bundle, "--out", tmp_path / "r", "--deadline-ms", "10")
    assert code == 1 and err.startswith("edgeconf: error: --deadline-ms") and "--edge" in err
    assert len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.parametrize("option, value, words", [
    ("--max-batch", "99999999999999999999", "99999999999999999999 is not in the range 1<=x<=2147483647"),
    ("--max-batch", "2147483648", "2147483648 is not in the range 1<=x<=2147483647"),
    ("--instances", "2147483648", "2147483648 is not in the range 1<=x<=2147483647"),
    ("--queue-delay-us", str(2 ** 64), "--queue-delay-us must be in 0..18446744073709551615"),
])
def test_values_tritons_config_cannot_hold_are_refused_in_one_line(bundle, tmp_path, capsys, option, value, words):
    code, err = _main(capsys, "triton-repo", bundle, "--out", tmp_path / "r", option, value)
    assert code in (1, 2) and words in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "r")


def test_the_largest_max_batch_triton_holds_is_written(bundle, tmp_path):
    build_repo(bundle, str(tmp_path / "r"), max_batch=2 ** 31 - 1)
    configs = [os.path.join(d, "config.pbtxt") for d, _, files in os.walk(str(tmp_path / "r")) if "config.pbtxt" in files]
    assert configs and all("max_batch_size: 2147483647\n" in open(c).read() for c in configs)
    with pytest.raises(ConfigError, match="--max-batch must be in 1..2147483647"):
        build_repo(bundle, str(tmp_path / "r2"), max_batch=2 ** 31)


def _main(capsys, *args):
    """``edgeconf ARGS`` as the console runs it: exit status and stderr."""
    from edgeconf.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr().err


def test_fixed_batch_axis_is_refused(tmp_path):
    import onnx

    from edgeconf.errors import ModelLoadError
    from edgeconf.export.triton_repo import describe_onnx

    m = random_classifier(1)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    with pytest.raises(ModelLoadError, match="fixed batch axis"):
        describe_onnx(str(tmp_path / "fixed.onnx"), "x", "x")


def _manifest_with(bundle, **stage2):
    with open(os.path.join(bundle, "edgeconf.json")) as f:
        data = json.load(f)
    data["stages"][1].update(stage2)
    with open(os.path.join(bundle, "edgeconf.json"), "w") as f:
        json.dump(data, f)


@pytest.mark.parametrize("fields, words", [
    ({"backend": "triton"}, "needs 'url'"),
    ({"backend": "magic", "url": "grpc://127.0.0.1:8001"}, r"stages\[1\]\.backend must be one of"),
    ({"backend": "triton", "url": "tcp://127.0.0.1:8001"}, "scheme 'tcp' is not supported"),
    ({"backend": "triton", "url": "grpc://"}, "names no host"),
    ({"backend": "triton", "url": "grpc://127.0.0.1:8001", "deadline_ms": -5}, r"deadline_ms must be"),
    ({"backend": "triton", "url": "grpc://127.0.0.1:8001", "retries": "3"}, r"retries must be"),
    ({"backend": "triton", "url": "grpc://127.0.0.1:8001", "retries": 99}, r"retries must be"),
    ({"backend": "triton", "url": "grpc://127.0.0.1:8001", "input": "features"}, "takes the image"),
    ({"url": "grpc://127.0.0.1:8001"}, "only apply to remote stages"),
])
def test_manifest_rules_of_remote_stages(bundle, fields, words):
    _manifest_with(bundle, **fields)
    with pytest.raises(BundleError, match=words):
        read_manifest(bundle)


def test_remote_first_stage_is_refused(bundle):
    with open(os.path.join(bundle, "edgeconf.json")) as f:
        data = json.load(f)
    data["stages"][0].update(backend="triton", url="grpc://127.0.0.1:8001")
    with open(os.path.join(bundle, "edgeconf.json"), "w") as f:
        json.dump(data, f)
    with pytest.raises(BundleError, match="must run locally"):
        read_manifest(bundle)


def test_remote_stage_without_onnx_needs_no_file(bundle):
    _manifest_with(bundle, backend="triton", url="http://127.0.0.1:8000", model="big", version="2")
    m = read_manifest(bundle)
    assert m.stages[1].local_file is None and m.stages[1].remote["version"] == "2"


@pytest.fixture
def fused_bundle(bundle):
    from edgeconf.export.fuse import fuse_bundle

    fuse_bundle(bundle)
    return bundle


def test_fused_serves_the_whole_cascade_as_one_model(fused_bundle, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgeconf.bundle import write_manifest

    m = read_manifest(fused_bundle)
    m.stages[0].threshold = 0.25  # set after fusing (as a retune would): the served copy must carry it
    m.stages[1].temperature = 1.5
    write_manifest(fused_bundle, m)
    res = build_repo(fused_bundle, str(tmp_path / "repo"), kind="cpu", fused=True)
    (m,) = res["models"]
    assert m["name"] == "bundle_cascade" and m["stage"] == "fused"
    served = onnx.load(str(tmp_path / "repo" / "bundle_cascade" / "1" / "model.onnx"))
    values = {i.name: float(numpy_helper.to_array(i).reshape(-1)[0]) for i in served.graph.initializer
              if i.name.startswith(("edgeconf_fused_threshold_", "edgeconf_fused_temperature_"))}
    assert values["edgeconf_fused_threshold_0"] == pytest.approx(0.25)
    assert values["edgeconf_fused_temperature_1"] == pytest.approx(1.5)
    text = (tmp_path / "repo" / "bundle_cascade" / "config.pbtxt").read_text()
    assert text.startswith("# written by edgeconf triton-repo for the whole cascade (fused graph)")
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")
    from google.protobuf import text_format

    cfg = pb.ModelConfig()
    text_format.Parse(text, cfg)
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("image", pb.TYPE_UINT8, [28, 28])]
    assert [o.name for o in cfg.output] == ["class", "confidence", "stage", "stages_run", "probs"]
    assert list(cfg.output[4].dims) == [10] and list(cfg.output[0].reshape.shape) == []


def test_fused_refusals(bundle, tmp_path):
    from edgeconf.export.fuse import fuse_bundle

    with pytest.raises(ConfigError, match="has no fused graph; write one with: edgeconf fuse"):
        build_repo(bundle, str(tmp_path / "r"), fused=True)
    with pytest.raises(ConfigError, match="--name names the fused model"):
        build_repo(bundle, str(tmp_path / "r"), name="x")
    fuse_bundle(bundle, batch=1)
    with pytest.raises(ConfigError, match="one input per call .*--batch any"):
        build_repo(bundle, str(tmp_path / "r"), fused=True)
    fuse_bundle(bundle)
    with pytest.raises(ConfigError, match="takes no --stage"):
        build_repo(bundle, str(tmp_path / "r"), fused=True, stages=["big"])
    with pytest.raises(ConfigError, match="no edge half"):
        build_repo(bundle, str(tmp_path / "r"), fused=True, edge=str(tmp_path / "e"), url="grpc://127.0.0.1:1")
    m = read_manifest(bundle)
    m.combine = "best"  # the graph was built for 'last': stale
    from edgeconf.bundle import write_manifest

    write_manifest(bundle, m)
    with pytest.raises(BundleError, match="no longer matches its stages"):
        build_repo(bundle, str(tmp_path / "r"), fused=True)


def test_fused_form_of_a_bundle_with_a_remote_stage_does_not_send_the_user_to_edgeconf_fuse(bundle, tmp_path):
    """`edgeconf fuse` refuses a bundle with a remote stage, so `--form fused` and `triton-repo --fused` must say
    the form does not exist for it (and what to do), not "write one with: edgeconf fuse"."""
    from edgeconf.bundle import load_bundle
    from edgeconf.export.fuse import FuseError, fuse_bundle

    edge = str(tmp_path / "edge")
    build_repo(bundle, str(tmp_path / "repo"), edge=edge, url="grpc://127.0.0.1:1")  # nothing listens: never called
    with pytest.raises(FuseError, match="served remotely"):
        fuse_bundle(edge)
    with pytest.raises(ConfigError) as exc:
        build_repo(edge, str(tmp_path / "r"), fused=True)
    msg = str(exc.value)
    assert "stage 2 (big) is served remotely (triton)" in msg and "has no fused form" in msg
    assert "fuse the bundle it was made from and serve that: edgeconf fuse %s, then" % os.path.abspath(bundle) in msg
    assert "edgeconf fuse %s" % edge not in msg
    with pytest.raises(BundleError) as exc:
        load_bundle(edge, form="fused")  # refused before any server is asked
    msg = str(exc.value)
    assert msg.startswith("cannot use the fused form: stage 2 (big) is served remotely") and "--form staged" in msg
    assert "edgeconf fuse" not in msg
    # a fused bundle whose stage was made remote by hand: the same, not "rebuild it with: edgeconf fuse"
    fuse_bundle(bundle)
    _manifest_with(bundle, backend="triton", url="grpc://127.0.0.1:1")
    with pytest.raises(BundleError, match="stage 2 \\(big\\) is served remotely .*--form staged, or auto\\)$"):
        load_bundle(bundle, form="fused")
    with pytest.raises(ConfigError, match="fuse a bundle whose stages all run locally"):
        build_repo(bundle, str(tmp_path / "r"), fused=True)


LIVE = os.path.join(os.path.dirname(__file__), "..", "..", "edgeconf", "data", "zoo", "live")


def test_edge_bundle_of_the_shipped_live_bundle_keeps_its_ood_params(tmp_path):
    # the live bundle's stages 1 and 2 carry OOD parameters (ood/stage*.npz): the edge half must list them too
    res = build_repo(LIVE, str(tmp_path / "R"), stages=["3"], kind="cpu", edge=str(tmp_path / "EDGE"),
                     url="grpc://127.0.0.1:18011")
    m = read_manifest(res["edge_bundle"], verify=True)
    src = read_manifest(LIVE)
    for rel in ("ood/stage1.npz", "ood/stage2.npz"):
        assert m.files[rel]["sha256"] == src.files[rel]["sha256"]
    assert [s.ood.params if s.ood else None for s in m.stages] == ["ood/stage1.npz", "ood/stage2.npz", None]
    assert m.stages[2].is_remote and m.stages[2].local_file == "stage3.onnx"
    assert sorted(os.listdir(tmp_path / "R")) == ["stage3"]  # no temporaries left beside the model
    assert sorted(os.listdir(tmp_path)) == ["EDGE", "R"]


def test_the_edge_stage_shown_in_the_fleet_docs_is_what_triton_repo_writes(tmp_path):
    """docs/fleet.md's example remote stage is the one `triton-repo` writes for zoo/bundle's third stage, every
    value from that one bundle (it once mixed zoo/bundle's temperature with zoo/live's cost)."""
    import re

    bundle = os.path.join(os.path.dirname(LIVE), "bundle")
    build_repo(bundle, str(tmp_path / "R"), edge=str(tmp_path / "E"), url="grpc://SERVER:8001", deadline_ms=50)
    with open(tmp_path / "E" / "edgeconf.json") as f:
        written = json.load(f)["stages"][2]
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "fleet.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc.split("## The edge half", 1)[1]
    assert "edgeconf triton-repo edgeconf/data/zoo/bundle" in section.split("```json", 1)[0].replace("\n", " ")
    shown = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    assert shown == written


def test_a_failed_run_leaves_nothing_new(tmp_path):
    # the edge half cannot be written (EDGE is a folder that is not a bundle): no repository, no model folder
    (tmp_path / "EDGE").mkdir()
    (tmp_path / "EDGE" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a bundle folder"):
        build_repo(LIVE, str(tmp_path / "R"), stages=["3"], kind="cpu", edge=str(tmp_path / "EDGE"),
                   url="grpc://127.0.0.1:18011")
    assert sorted(os.listdir(tmp_path)) == ["EDGE"]
    assert os.listdir(tmp_path / "EDGE") == ["notes.txt"]
    # an existing repository keeps its earlier model, even with --force, and a rerun needs no --force
    build_repo(LIVE, str(tmp_path / "R"), stages=["3"], kind="cpu")
    before = (tmp_path / "R" / "stage3" / "config.pbtxt").read_text()
    with pytest.raises(OutputError, match="not a bundle folder"):
        build_repo(LIVE, str(tmp_path / "R"), stages=["3"], kind="gpu", force=True, edge=str(tmp_path / "EDGE"),
                   url="grpc://127.0.0.1:18011")
    assert sorted(os.listdir(tmp_path / "R")) == ["stage3"]
    assert (tmp_path / "R" / "stage3" / "config.pbtxt").read_text() == before
    build_repo(LIVE, str(tmp_path / "R2"), stages=["3"], kind="cpu", edge=str(tmp_path / "EDGE2"),
               url="grpc://127.0.0.1:18011")
    assert read_manifest(str(tmp_path / "EDGE2")).stages[2].is_remote
