"""Safe readers: image sizes from headers before decoding, the pixel limit, .npy/.npz headers, API images."""
from __future__ import annotations

import io
import resource
import struct
import zipfile
import zlib

import cv2
import numpy as np
import pytest

from edgeconf.backends import prepare
from edgeconf.cascade import Cascade, Stage
from edgeconf.datasets import limits
from edgeconf.datasets.arrays import read_npy, read_npz
from edgeconf.datasets.imageheader import image_size
from edgeconf.datasets.images import read_image, read_image_array
from edgeconf.errors import ConfigError, DataError, InputValidationError, PreprocessingError
from edgeconf.memo import MemoCache
from edgeconf.preprocess import Preprocessing
from onnx_models import random_classifier, save


# -- helpers -----------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(w: int, h: int) -> bytes:
    """A PNG signature and IHDR claiming w×h, and nothing else."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))


def zero_png(w: int, h: int, rows_per_block: int = 200) -> bytes:
    """A complete, decodable black grey PNG of w×h, built without holding its pixels in memory.

    Each block of rows is deflated once and repeated (a full flush makes deflate blocks independent);
    the zlib checksum is computed over the whole pixel stream.
    """
    n = h // rows_per_block
    assert n * rows_per_block == h
    block = b"\0" * ((w + 1) * rows_per_block)
    c = zlib.compressobj(9)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()[:-4]
    adler = 1
    for _ in range(n):
        adler = zlib.adler32(block, adler)
    idat = first + again * (n - 1) + tail + struct.pack(">I", adler)
    return png_header_only(w, h) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# -- image headers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".tiff", "TIFF"),
                                      (".webp", "WebP"), (".ppm", "PNM"), (".pgm", "PNM"), (".ras", "Sun raster")])
def test_header_size_of_real_encoded_images(ext, fmt, rng):
    grey = ext == ".pgm"
    img = rng.integers(0, 256, (37, 53) if grey else (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    assert image_size(io.BytesIO(buf.tobytes()), "x" + ext) == (fmt, 53, 37)


def test_jpeg_size_found_after_large_exif_and_icc_segments(rng):
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, (21, 34, 3), dtype=np.uint8))
    data = buf.tobytes()
    app1 = b"\xff\xe1" + struct.pack(">H", 60000) + b"Exif\0\0" + b"\0" * (60000 - 8)
    app2 = b"\xff\xe2" + struct.pack(">H", 3000) + b"\x01" * 2998
    assert image_size(io.BytesIO(data[:2] + app1 + app2 + data[2:]), "x.jpg") == ("JPEG", 34, 21)


def test_gif_and_vp8l_headers():
    gif = b"GIF89a" + struct.pack("<HH", 640, 480) + b"\0" * 10
    assert image_size(io.BytesIO(gif), "a.gif") == ("GIF", 640, 480)
    bits = (300 - 1) | ((200 - 1) << 14)
    webp = b"RIFF" + b"\0" * 4 + b"WEBP" + b"VP8L" + b"\0" * 4 + b"\x2f" + struct.pack("<I", bits)
    assert image_size(io.BytesIO(webp), "a.webp") == ("WebP", 300, 200)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, this is text", "supported: PNG"),
    (b"\x89PNG\r\n\x1a\n\0\0", "corrupt PNG header"),
    (b"\xff\xd8\xff\xda\0\x08", "corrupt JPEG header"),
])
def test_unreadable_headers(data, message):
    with pytest.raises(DataError, match=message):
        image_size(io.BytesIO(data), "f")


# -- the pixel limit -------------------------------------------------------------------------------------
def test_a_20000_square_png_is_refused_before_decoding(tmp_path):
    path = _write(tmp_path / "huge.png", zero_png(20000, 20000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError) as err:
        read_image(path)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    msg = str(err.value)
    assert "\n" not in msg and "20000×20000" in msg and "over the limit of 50000000" in msg
    assert limits.ENV_VAR in msg and "--max-pixels" in msg
    assert grew_mb < 100, "decoding started: peak memory grew by %.0f MB" % grew_mb


def test_a_header_claiming_60000_square_is_refused(tmp_path):
    path = _write(tmp_path / "claims.png", png_header_only(60000, 60000))
    with pytest.raises(DataError, match="60000×60000 = 3600000000 pixels"):
        read_image(path)


def test_the_limit_follows_the_environment_and_the_argument(tmp_path, monkeypatch):
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, np.zeros((30, 40), np.uint8))
    assert read_image(path).shape == (30, 40)
    with pytest.raises(DataError, match="1200 pixels, over the limit of 1000"):
        read_image(path, max_pixels=1000)
    monkeypatch.setenv(limits.ENV_VAR, "1199")
    with pytest.raises(DataError, match="over the limit of 1199"):
        read_image(path)
    assert read_image(path, max_pixels=1200).shape == (30, 40)  # the argument wins
    monkeypatch.setenv(limits.ENV_VAR, "lots")
    with pytest.raises(ConfigError, match=limits.ENV_VAR):
        read_image(path)


def test_images_decode_to_rgb_uint8(tmp_path):
    bgr = np.zeros((5, 6, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    path = str(tmp_path / "b.png")
    cv2.imwrite(path, bgr)
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == (5, 6, 3) and img[0, 0].tolist() == [0, 0, 255]
    deep = str(tmp_path / "deep.png")
    cv2.imwrite(deep, np.full((4, 4), 65535, np.uint16))
    assert read_image(deep).max() == 255


def test_a_corrupt_body_is_a_data_error(tmp_path):
    path = _write(tmp_path / "cut.png", zero_png(400, 400)[:200])
    with pytest.raises(DataError, match="cannot decode"):
        read_image(path)


def test_image_arrays_respect_the_limit(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 40, 30), np.uint8))
    with pytest.raises(DataError, match="each image of .* 30×40 = 1200 pixels"):
        read_image_array(str(tmp_path / "a.npy"), max_pixels=1000)


# -- .npy / .npz headers ---------------------------------------------------------------------------------
def _npy_bytes(shape, dtype="|u1", body: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + body  # write_array_header_1_0 writes the magic string too


def test_npy_with_no_images(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((2, 0, 0), np.uint8))
    with pytest.raises(DataError, match=r"holds no images \(shape \(2, 0, 0\)\)"):
        read_image_array(str(tmp_path / "e.npy"))


def test_npy_claiming_a_huge_shape_is_refused_without_allocating(tmp_path):
    path = _write(tmp_path / "h.npy", _npy_bytes((100000, 100000, 100000), body=b"\0" * 64))
    with pytest.raises(DataError, match=r"claims shape \(100000, 100000, 100000\).*holds only 64 bytes"):
        read_npy(path)


def test_empty_and_garbage_npy(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_npy(_write(tmp_path / "z.npy", b""))
    with pytest.raises(DataError, match="not a readable .npy"):
        read_npy(_write(tmp_path / "g.npy", b"not numpy at all"))


def test_object_arrays_are_refused_in_npy_and_npz(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects"):
        read_npy(str(tmp_path / "o.npy"))
    np.savez(tmp_path / "o.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([1, "a"], dtype=object))
    with pytest.raises(DataError, match=r"o.npz\['y'\] holds Python objects"):
        read_npz(str(tmp_path / "o.npz"))


def test_npz_member_claiming_more_than_it_holds(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", _npy_bytes((50000, 50000, 50000), body=b"\0" * 10))
    with pytest.raises(DataError, match="claims shape"):
        read_npz(str(path))
    with pytest.raises(DataError, match="not an .npz archive"):
        read_npz(_write(tmp_path / "bad.npz", b"PK but not really a zip"))


def test_npz_arrays_round_trip(tmp_path):
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=np.array([3, 1]))
    got = read_npz(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(got["x"], x)
    assert got["y"].tolist() == [3, 1]


# -- preprocessing size and images handed to the API ------------------------------------------------------
def test_preprocessing_size_is_bounded():
    with pytest.raises(PreprocessingError, match="size 100000×100000 is 10000000000 pixels"):
        Preprocessing(size=(100000, 100000))
    with pytest.raises(PreprocessingError, match=r"size\[1\] must be an integer"):
        Preprocessing.from_json({"size": [28, "28"]})
    with pytest.raises(PreprocessingError, match=r"size\[0\] must be an integer in \[1, 8192\]"):
        Preprocessing.from_json({"size": [100000, 100000]})


@pytest.fixture
def memo_cascade(tmp_path):
    runner = prepare(save(random_classifier(3), tmp_path / "m.onnx"))
    with Cascade([Stage("s", runner)], preprocessing=Preprocessing(), memo=MemoCache(16)) as c:
        yield c


@pytest.mark.parametrize("image, message", [
    (np.zeros((28, 28), np.int64), "dtype int64"),
    (np.zeros((28, 28), bool), "dtype bool"),
    (np.zeros((28, 28), object), "dtype object"),
    (None, "is None"),
    (np.zeros((0, 0), np.uint8), r"shape \(0, 0\)"),
    ([[1, 2], [3, 4]], "list of dtype int64"),
    ([[1, 2], [3]], "list that is not an array"),
    (np.zeros((28, 28, 2), np.uint8), r"shape \(28, 28, 2\)"),
])
@pytest.mark.parametrize("memo", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_bad_api_images_get_one_line_input_errors(memo_cascade, image, message, memo, batch):
    if not memo:
        memo_cascade.memo = None
    with pytest.raises(InputValidationError, match=message) as err:
        if batch:
            other = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)  # a different memo key
            memo_cascade.classify_batch([other, image])
        else:
            memo_cascade.classify(image)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("offset, value, what", [(8, 1, "encrypted"), (6, 222, "zip file version")])
def test_npz_with_unreadable_zip_entries(tmp_path, offset, value, what):
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 4, 4), np.uint8))
    data = bytearray(buf.getvalue())
    central = data.find(b"PK\x01\x02")  # the central directory entry of x.npy
    struct.pack_into("<H", data, central + offset, value)
    with pytest.raises(DataError, match="zip feature that cannot be read .*%s" % what):
        read_npz(_write(tmp_path / "odd.npz", bytes(data)))
