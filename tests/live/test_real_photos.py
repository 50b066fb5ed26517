"""Real footage: a video made here from photographs that ship inside scikit-image (none is a FashionMNIST
class) runs through the live pipeline without error, and nearly every answer of the shipped bundle is unknown."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))

import photo_video  # noqa: E402
from edgeconf.bundle import load_bundle  # noqa: E402
from edgeconf.live.cli import DEFAULT_BUNDLE  # noqa: E402
from edgeconf.live.pipeline import Pipeline  # noqa: E402
from edgeconf.live.sources import open_source  # noqa: E402

pytestmark = pytest.mark.slow


def test_photo_video_is_unknown(tmp_path):
    photos = photo_video.find_photos()
    if not photos:
        pytest.skip("scikit-image (dev extra) is not installed: its bundled photographs make the video")
    assert len(photos) >= 10  # the wheel's photographs are on disk; nothing is fetched
    path = str(tmp_path / "photos.avi")
    n = photo_video.write_video(path, photos[::3], per_photo=10)
    assert n == 10 * len(photos[::3])
    cascade = load_bundle(DEFAULT_BUNDLE)
    assert cascade.stages[0].ood is not None  # the shipped bundle carries a fitted OOD rule
    source = open_source("file://%s?realtime=0" % path)
    try:
        pipe = Pipeline(cascade, source, regions="full")
        c = pipe.run(max_frames=n)
    finally:
        source.close()
        cascade.close()
    assert c.frames == n and c.errors == 0
    assert c.answers >= n - 2  # one full-frame track, answered on every frame once confirmed
    assert c.unknown_rate is not None and c.unknown_rate >= 0.95
