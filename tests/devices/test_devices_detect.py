"""Board detection on fake trees of every profile's board, and the generic profile for unknown boards."""
from __future__ import annotations

import warnings

import pytest

from edgeconf.devices.detect import detect_board, jetpack_for, read_l4t, read_model
from edgeconf.devices.profiles import UnknownBoardWarning, profile_for


def test_detect_every_board(board):
    fake, root = board
    b = detect_board(root, machine=fake.machine)
    assert b.kind == fake.expected_kind
    assert b.profile_id == fake.profile_id
    assert b.l4t == fake.expected_l4t
    assert b.jetpack == fake.expected_jetpack
    assert b.has_nvidia_gpu == (fake.profile_id != "x86-cpu")
    assert b.memory_mb == 3956
    if fake.model:
        assert b.model == fake.model  # the trailing NUL is gone
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert profile_for(b).id == fake.profile_id  # known boards: no warning


def test_model_file_with_nul_and_newline(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Nano Developer Kit\n\x00")
    assert read_model(tmp_path) == "NVIDIA Jetson Nano Developer Kit"
    assert read_model(tmp_path / "nowhere") is None


@pytest.mark.parametrize("text,l4t", [
    ("# R32 (release), REVISION: 7.1, GCID: 1, BOARD: t210ref, EABI: aarch64, DATE: x\n", "32.7.1"),
    ("# R35 (release), REVISION: 5.0, GCID: 1, BOARD: t186ref\n", "35.5.0"),
    ("garbage\n", None),
    ("", None),
])
def test_read_l4t(tmp_path, text, l4t):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(text)
    assert read_l4t(tmp_path) == l4t


@pytest.mark.parametrize("l4t,jp", [("32.6.1", "4.6"), ("32.7.1", "4.6.1"), ("35.5.0", "5.1.3"), ("36.4.3", "6.2"),
                                    ("36.4.0", "6.1"), ("31.1", None), (None, None)])
def test_jetpack_guess(l4t, jp):
    assert jetpack_for(l4t) == jp


def test_unknown_jetson_gets_generic_profile_with_warning(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson TX2 Developer Kit\x00")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R32 (release), REVISION: 7.1, GCID: 1\n")
    b = detect_board(tmp_path, machine="aarch64")
    assert b.kind == "jetson" and b.profile_id is None and b.jetpack == "4.6.1"
    with pytest.warns(UnknownBoardWarning, match="TX2"):
        p = profile_for(b)
    assert p.id == "jetson-generic" and not p.int8 and p.tensorrt is None


def test_jetson_without_model_file_is_still_a_jetson(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0, GCID: 1\n")
    b = detect_board(tmp_path, machine="aarch64")
    assert b.kind == "jetson" and b.model == "unknown Jetson" and b.jetpack == "6.0"


def test_other_arm_board_gets_cpu_profile_with_warning(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    b = detect_board(tmp_path, machine="aarch64")
    assert b.kind == "other" and b.profile_id is None and not b.has_nvidia_gpu
    with pytest.warns(UnknownBoardWarning, match="Raspberry Pi"):
        assert profile_for(b).id == "x86-cpu"


def test_empty_tree_is_a_plain_x86(tmp_path):
    b = detect_board(tmp_path, machine="x86_64")
    assert (b.kind, b.profile_id, b.has_nvidia_gpu, b.l4t, b.memory_mb) == ("x86", "x86-cpu", False, None, None)


def test_nvidia_driver_file_means_gpu(tmp_path):
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia/version").write_text("NVRM version: 550\n")
    assert detect_board(tmp_path, machine="x86_64").kind == "x86-nvidia"


def test_non_display_nvidia_device_is_not_a_gpu(tmp_path):
    d = tmp_path / "sys/bus/pci/devices/0000:02:00.1"
    d.mkdir(parents=True)
    (d / "vendor").write_text("0x10de\n")
    (d / "class").write_text("0x040300\n")  # the GPU's HDMI audio function alone
    assert detect_board(tmp_path, machine="x86_64").kind == "x86"


def test_this_machine_detects_without_error():
    b = detect_board()
    assert b.kind in ("jetson", "x86", "x86-nvidia", "other")


def test_cpu_model_and_int8_flags_from_cpuinfo(tmp_path):
    from edgeconf.devices.detect import cpu_flags, cpu_model

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"
                                           "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni amx_tile avx_vnni\n\n"
                                           "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n")
    assert cpu_model(tmp_path) == "AMD EPYC 7B13"
    assert cpu_flags(tmp_path) == ["amx_tile", "avx", "avx2", "avx512_vnni", "avx512f", "avx_vnni"]
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # an ARM board's cpuinfo
    assert cpu_model(tmp_path) is None and cpu_flags(tmp_path) == []
    assert cpu_model(tmp_path / "nowhere") is None and cpu_flags(tmp_path / "nowhere") == []
