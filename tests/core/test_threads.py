"""The one ONNX Runtime threading policy: defaults, profile hints, user override, refusals, what sessions get."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeconf.backends import prepare
from edgeconf.backends.threads import BATCHED_FROM, MAX_THREADS, Threads, check_threads, choose_threads
from edgeconf.devices.errors import ProfileError
from edgeconf.devices.profiles import ThreadHints, get_profile, parse_profile
from edgeconf.errors import ConfigError


def _profile(threads):
    data = {"id": "p", "name": "P", "kind": "jetson", "memory_mb": 4096, "precisions": ["fp32"], "int8": False,
            "trt_workspace_mb": 128}
    if threads is not None:
        data["threads"] = threads
    return parse_profile(data, "p.toml")


def test_defaults_one_thread_no_spinning_sequential():
    t = choose_threads(None, batch=1, detect=False)
    assert (t.intra_op, t.inter_op, t.spinning, t.sequential) == (1, 1, False, True)
    assert choose_threads(None, batch=BATCHED_FROM, detect=False).intra_op == 1
    assert "spinning off" in t.describe() and t.to_json()["intra_op"] == 1


def test_profile_hints_by_batch_and_the_user_override_wins():
    prof = _profile({"batch1": 1, "batched": 4, "spinning": True})
    assert prof.threads == ThreadHints(1, 4, True)
    one = choose_threads(None, batch=1, profile=prof)
    many = choose_threads(None, batch=BATCHED_FROM, profile=prof)
    assert (one.intra_op, many.intra_op, many.spinning) == (1, 4, True)
    assert "profile p" in many.reason
    user = choose_threads(3, batch=1, profile=prof)
    assert (user.intra_op, user.spinning, user.reason) == (3, False, "--threads 3")
    assert choose_threads(user) is user
    assert _profile(None).threads == ThreadHints()
    assert get_profile("x86-cpu").to_json()["threads"] == {"batch1": 1, "batched": 1, "spinning": False}


@pytest.mark.parametrize("bad", [{"batch1": 0}, {"batched": "4"}, {"spinning": "no"}, {"cores": 2}, [1]])
def test_bad_profile_threads_are_refused(bad):
    with pytest.raises(ProfileError, match="threads"):
        _profile(bad)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_zero_negative_and_non_integers_are_refused(bad):
    with pytest.raises(ConfigError, match="threads must be"):
        check_threads(bad)
    with pytest.raises(ConfigError):
        choose_threads(bad)


def test_sessions_get_the_options(tmp_path, two_models):
    opts = Threads(2, 1, False, True, "test").session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    import onnxruntime as ort

    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    runner = prepare(two_models[0], threads=2)
    assert runner.threads.intra_op == 2
    assert prepare(two_models[0]).threads.intra_op == 1


def test_load_bundle_records_the_choice_and_refuses_zero(tmp_path, two_models):
    from edgeconf.bundle import StageSpec, load_bundle, save_bundle
    from edgeconf.preprocess import Preprocessing

    folder = str(tmp_path / "b")
    save_bundle(folder, [StageSpec("a", "a.onnx", "margin", 0.3), StageSpec("b", "b.onnx", "margin", 0.0)],
                {"a.onnx": two_models[0], "b.onnx": two_models[1]}, [str(i) for i in range(10)], Preprocessing())
    c = load_bundle(folder, threads=2)
    assert c.threads.intra_op == 2 and all(st.runner.threads.intra_op == 2 for st in c.stages)
    assert load_bundle(folder).threads.intra_op == 1
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        load_bundle(folder, threads=0)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeconf", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("verb", ["classify BUNDLE x.png", "run BUNDLE --source demo://", "demo", "bench"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_threads_zero_or_negative_is_one_line_on_every_command(verb, value):
    args = [a if a != "BUNDLE" else "nonexistent" for a in verb.split()]
    out = _cli(*args, "--threads", value)
    assert out.returncode == 2, out.stderr  # a bad option value: a usage error that names the command's --help
    assert out.stderr.count("\n") == 1 and "--threads must be >= 1" in out.stderr and "Traceback" not in out.stderr
    assert "--help')" in out.stderr


def test_devices_shows_the_threading(tmp_path):
    out = _cli("devices", "--json", "--root", tmp_path, "--count", "0")
    doc = json.loads(out.stdout)
    assert doc["threads"]["batch1"]["intra_op"] == 1 and doc["threads"]["batched"]["spinning"] is False
    human = _cli("devices", "--root", tmp_path, "--count", "0")
    assert "ONNX Runtime threads" in human.stdout


@pytest.mark.parametrize("value", [MAX_THREADS + 1, 100000, 10 ** 6])
def test_more_threads_than_the_cap_are_refused_before_any_session(value, two_models):
    with pytest.raises(ConfigError, match="threads must be at most %d, got %d" % (MAX_THREADS, value)):
        check_threads(value)
    with pytest.raises(ConfigError, match="at most %d" % MAX_THREADS):
        prepare(two_models[0], threads=value)
    assert check_threads(MAX_THREADS) == MAX_THREADS and check_threads(np.int64(3)) == 3


def test_load_bundle_refuses_too_many_threads_and_a_bad_batch():
    from edgeconf import data_path
    from edgeconf.bundle import load_bundle

    with pytest.raises(ConfigError, match="threads must be at most %d" % MAX_THREADS):
        load_bundle(data_path("zoo", "bundle"), threads=10 ** 6)
    for batch in ("x", 0, -3, 1.5, None, True):
        with pytest.raises(ConfigError, match="batch must be a whole number of inputs per call >= 1"):
            load_bundle(data_path("zoo", "bundle"), batch=batch)


def test_threads_above_the_cap_is_one_line_on_the_command_line():
    out = _cli("classify", "nonexistent", "x.png", "--threads", "100000")
    assert out.returncode == 2, out.stderr  # a usage error
    assert out.stderr.count("\n") == 1 and "--threads must be at most %d" % MAX_THREADS in out.stderr
