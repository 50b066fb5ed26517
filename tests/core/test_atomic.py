"""Atomic outputs: a complete file or none, an earlier file never damaged, one-line errors."""
from __future__ import annotations

import os

import pytest

from edgeconf.atomic import FileSet, atomic_write, folder_lock, write_bytes, write_text
from edgeconf.errors import OutputError


def test_the_file_appears_complete_with_usual_permissions(tmp_path):
    out = tmp_path / "a.json"
    write_text(out, "hello\n")
    assert out.read_text() == "hello\n"
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    write_bytes(out, b"\x00\x01")
    assert out.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_run_leaves_the_earlier_file_untouched_and_no_temporary(tmp_path):
    out = tmp_path / "prev.jsonl"
    out.write_text("earlier results\n")
    os.chmod(out, 0o640)
    with pytest.raises(RuntimeError):
        with atomic_write(out) as f:
            f.write("half of the new ")
            raise RuntimeError("bad input half-way")
    assert out.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prev.jsonl"]
    write_text(out, "new\n")
    assert out.stat().st_mode & 0o777 == 0o640  # the old file's permissions are kept


@pytest.mark.parametrize("target, words", [
    ("/sys/kernel/edgeconf-out.json", "cannot write /sys/kernel/edgeconf-out.json: permission denied"),
    ("{tmp}/no/such/folder/x.json", "no such file or directory; create the folder first"),
    ("{tmp}", "it is a folder"),
])
def test_unwritable_targets_are_one_line_output_errors(tmp_path, target, words):
    with pytest.raises(OutputError) as err:
        write_text(target.format(tmp=tmp_path), "x")
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_devices_are_written_in_place_and_a_full_device_is_an_output_error():
    with pytest.raises(OutputError, match="cannot write /dev/full: no space left on device"):
        with atomic_write("/dev/full") as f:
            f.write("x" * 100000)
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")
    write_text("/dev/null", "discarded")  # not replaced by a regular file
    assert not os.path.isfile("/dev/null")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_set_replaces_all_its_files_or_none(tmp_path):
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.npz", tmp_path / "edgeconf.json"
    a.write_bytes(b"old a")
    c.write_text("old manifest")
    with FileSet() as files:
        assert files.write(a, b"new a")[1] == 5
        files.write(b, b"new b")  # a file that did not exist
        files.write(c, "new manifest")
        assert a.read_bytes() == b"old a" and not b.exists()  # nothing replaced before commit
        files.commit()
    assert (a.read_bytes(), b.read_bytes(), c.read_text()) == (b"new a", b"new b", "new manifest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.npz", "edgeconf.json"]  # no temporaries

    # the third rename fails for real (its target became a folder meanwhile): the first two come back as they were,
    # the fourth never happens
    with pytest.raises(OutputError, match="late: is a directory"):
        with FileSet() as files:
            files.write(a, b"newer a")
            files.write(b, b"newer b")
            files.write(tmp_path / "late", "x")
            (tmp_path / "late").mkdir()
            (tmp_path / "late" / "inside").write_text("keeps the folder non-empty")
            files.write(c, "newer manifest")
            files.commit()
    assert (a.read_bytes(), b.read_bytes(), c.read_text()) == (b"new a", b"new b", "new manifest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.npz", "edgeconf.json", "late"]


def test_a_file_set_puts_the_old_files_back_when_a_check_after_commit_fails(tmp_path):
    a, new = tmp_path / "a.onnx", tmp_path / "fused.onnx"
    a.write_bytes(b"old a")
    with pytest.raises(ValueError, match="check failed"):
        with FileSet() as files:
            files.write(a, b"new a")
            files.write(new, b"fused")
            files.commit()
            assert a.read_bytes() == b"new a" and new.read_bytes() == b"fused"
            raise ValueError("check failed")
    assert a.read_bytes() == b"old a" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx"]


def test_a_held_folder_lock_makes_the_next_one_wait_then_give_up_in_one_line(tmp_path):
    with folder_lock(tmp_path, "bundle b"):
        with pytest.raises(OutputError, match=r"another process has been changing bundle b for over 0 s; wait"):
            with folder_lock(tmp_path, "bundle b", wait_s=0.1):
                pass
    with folder_lock(tmp_path, "bundle b", wait_s=0.1):  # released: taken at once
        pass
    with pytest.raises(OutputError, match="^cannot open bundle m: the folder .*missing does not exist$"):
        with folder_lock(tmp_path / "missing", "bundle m"):  # not "does not accept new files": its parent exists
            pass


def test_a_tilde_the_shell_left_alone_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_text("~/out.json", "{}\n")  # as '--out=~/out.json' arrives: the shell expands no ~ after '='
    assert (tmp_path / "out.json").read_text() == "{}\n" and not os.path.exists("~")


def _bundle(tmp_path):
    """A real bundle folder (the shipped one, copied) and a folder of two images beside it."""
    import shutil

    from edgeconf import data_path

    bundle = tmp_path / "B"
    shutil.copytree(data_path("zoo", "bundle"), str(bundle))
    images = tmp_path / "fold"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (images / name).write_bytes(b"\x89PNG not decoded here")
    (images / "notes.txt").write_text("not data\n")
    return bundle, images


def test_an_output_over_a_file_of_an_input_bundle_or_a_data_file_of_an_input_folder_is_refused(tmp_path):
    from edgeconf.atomic import refuse_overwriting_inputs
    from edgeconf.errors import ConfigError

    bundle, images = _bundle(tmp_path)
    os.symlink(str(bundle / "stage2.onnx"), str(tmp_path / "link.onnx"))
    refused = [(bundle / "edgeconf.json", [bundle], "is a file of bundle %s, an input of this run" % bundle),
               (tmp_path / "fold" / ".." / "B" / "stage1.onnx", [bundle], "is a file of bundle"),
               (tmp_path / "link.onnx", [bundle], "is a file of bundle"),  # a link into the bundle
               (bundle / "edgeconf.json", [bundle / "stage1.onnx"], "is a file of bundle"),  # a stage file's bundle
               (images / "b.png", [images], "is a data file in folder %s, an input of this run" % images)]
    for out, inputs, words in refused:
        with pytest.raises(ConfigError) as err:
            refuse_overwriting_inputs(out, "--out", inputs)
        msg = str(err.value)
        assert msg.startswith("--out %s " % out) and words in msg and "choose another path" in msg, msg
    for out in (bundle / "new.json", images / "c.png", images / "notes.txt", tmp_path / "elsewhere.json"):
        refuse_overwriting_inputs(out, "--out", [bundle, images])  # overwrites nothing the run reads


def test_a_missing_folder_and_a_file_in_the_way_are_told_apart_before_a_run(tmp_path):
    from edgeconf.pathcheck import check_output_file, check_output_folder, missing_folder

    (tmp_path / "afile").write_text("x")
    assert missing_folder(tmp_path / "x.json") is None
    assert missing_folder(tmp_path / "no" / "x.json") == "the folder %s does not exist; create it first" % (
        tmp_path / "no")
    for path in (tmp_path / "afile" / "x.json", tmp_path / "afile" / "deeper" / "x.json"):
        assert missing_folder(path) == "%s is a file, not a folder; choose a path in a folder" % (tmp_path / "afile")
    cases = [(check_output_file, tmp_path / "afile" / "p.npz", "is a file, not a folder"),
             (check_output_file, tmp_path / "no" / "p.npz", "does not exist; create it first"),
             (check_output_file, tmp_path, "it is a folder; give a file name"),
             (check_output_folder, tmp_path / "afile", "%s is a file, not a folder" % (tmp_path / "afile")),
             (check_output_folder, tmp_path / "afile" / "rep", "%s is a file, not a folder" % (tmp_path / "afile"))]
    for check, path, words in cases:
        with pytest.raises(OutputError) as err:
            check(path, "--opt")
        assert str(err.value).startswith("cannot write --opt %s: " % path) and words in str(err.value), err.value
    check_output_file(tmp_path / "new.json", "--opt")
    check_output_folder(tmp_path / "new" / "deeper", "--opt")  # made with its parents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # checks create nothing


def test_no_output_is_committed_once_termination_was_requested(tmp_path):
    from edgeconf.atomic import FileSet, Terminated, atomic_write, request_termination

    target = tmp_path / "o.json"
    target.write_text("EARLIER")
    request_termination()
    try:
        with pytest.raises(Terminated):
            with atomic_write(target) as f:
                f.write("NEW")
        files = FileSet()
        files.write(tmp_path / "p.json", "NEW")
        with pytest.raises(Terminated):
            files.commit()
    finally:
        request_termination(False)
    assert target.read_text() == "EARLIER" and not (tmp_path / "p.json").exists()
    with atomic_write(target) as f:  # cleared: writes commit again
        f.write("NEW")
    assert target.read_text() == "NEW"
