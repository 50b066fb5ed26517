"""The demo:// synthetic scene: reproducible, correct ground truth, moving/occluding objects that a FashionMNIST
classifier still recognises after crop + resize to 28×28 grey, and the shipped sample it is made from."""
from __future__ import annotations

import os
import runpy

import cv2
import numpy as np
import pytest

from edgeconf.live.demo_scene import LABELS, SAMPLE_PATH, DemoScene, load_sample
from edgeconf.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def scene():
    return DemoScene(seed=1, objects=6, size=(640, 480), fps=30, frames=900)


def test_frames_are_a_pure_function_of_seed_and_index(scene):
    image, truth = scene.render(250)
    other = DemoScene(seed=1, objects=6, size=(640, 480), fps=30, frames=900)
    for i in (600, 3, 250):  # any order, any history
        img2, truth2 = other.render(i)
    assert np.array_equal(image, img2) and truth == truth2
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    different, _ = DemoScene(seed=2, objects=6, frames=900).render(250)
    assert not np.array_equal(image, different)
    assert scene.truth(250) == truth


def _on_edge(box, width=640, height=480) -> bool:
    x1, y1, x2, y2 = box
    return x1 <= 0 or y1 <= 0 or x2 >= width or y2 >= height


def test_truth_boxes_classes_and_ids(scene):
    lo, hi = scene.object_size
    inside = 0
    for i in range(0, 900, 7):
        truth = scene.truth(i)
        assert len({t.id for t in truth}) == len(truth) <= 6
        for t in truth:
            x1, y1, x2, y2 = t.box
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480  # clipped to the frame
            assert 0 <= t.class_id < 10 and 0.0 <= t.visible_fraction <= 1.0  # 0: hidden behind another
            if not _on_edge(t.box):
                inside += 1
                assert x2 - x1 == y2 - y1 and lo <= x2 - x1 <= hi  # a whole square
    assert inside > 100


def test_visible_fraction_matches_the_drawing_order(scene):
    """Recompute visibility by painting boxes in drawing order (truth order: later ones on top)."""
    occluded = 0
    for i in range(0, 900, 5):
        truth = scene.truth(i)
        owner = np.full((480, 640), -1, np.int32)
        for n, t in enumerate(truth):
            x1, y1, x2, y2 = (int(v) for v in t.box)
            owner[y1:y2, x1:x2] = n
        for n, t in enumerate(truth):
            x1, y1, x2, y2 = (int(v) for v in t.box)
            seen = float((owner[y1:y2, x1:x2] == n).mean())
            if _on_edge(t.box):  # part of the square is outside the frame: it counts as hidden
                assert t.visible_fraction <= seen + 1e-6
            else:
                assert t.visible_fraction == pytest.approx(seen, abs=1e-6)
                occluded += t.visible_fraction < 0.9
    assert occluded > 0  # objects do cross


def test_the_pixels_show_what_the_truth_says(scene):
    """Inside a fully visible box the patch is dark at the border and bright in the middle; the item is there."""
    shown = []
    for i in (120, 300, 480):
        image, truth = scene.render(i)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        shown += [(grey, t) for t in truth if t.visible_fraction == 1.0]
    assert len(shown) >= 3
    for grey, t in shown:
        x1, y1, x2, y2 = (int(v) for v in t.box)
        patch = grey[y1:y2, x1:x2]
        inner = patch[4:-4, 4:-4]  # inside the feathered, possibly blurred, edge
        ring = np.concatenate([inner[:3].ravel(), inner[-3:].ravel(), inner[:, :3].ravel(), inner[:, -3:].ravel()])
        assert patch.max() > 60 and np.median(ring) < 45  # FashionMNIST-like: bright item, dark surround
    image, truth = scene.render(120)
    background = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    for t in truth:
        x1, y1, x2, y2 = (int(v) for v in t.box)
        background[max(0, y1 - 10):y2 + 10, max(0, x1 - 10):x2 + 10] = np.nan
    assert 60 < np.nanmean(background) < 220 and np.nanstd(background) > 5  # textured, mid-bright


def _tracks(scene, frames):
    tracks = {}
    for i in range(frames):
        for t in scene.truth(i):
            tracks.setdefault(t.id, []).append((i, t))
    return tracks


def test_objects_enter_and_leave_at_the_borders_at_varying_speed(scene):
    tracks = _tracks(scene, 900)
    assert len(tracks) > 12  # objects leave and new ones (new ids) come
    steps, entered, left = [], 0, 0
    for seen in tracks.values():
        (i0, first), (i1, last) = seen[0], seen[-1]
        assert [i for i, _ in seen] == list(range(i0, i1 + 1))  # on screen without a break
        if i0 > 0:
            assert _on_edge(first.box) and first.visible_fraction < 0.5  # came in over a border
            entered += 1
        if i1 < 899:
            assert _on_edge(last.box) and last.visible_fraction < 0.5  # went out over one
            left += 1
        for (_, a), (_, b) in zip(seen, seen[1:]):
            if not _on_edge(a.box) and not _on_edge(b.box):
                steps.append(np.hypot(b.box[0] + b.box[2] - a.box[0] - a.box[2], b.box[1] + b.box[3] - a.box[1] - a.box[3]) / 2)
    assert entered > 6 and left > 6
    steps = np.array(steps)
    assert steps.max() <= 15  # smooth motion at 30 fps
    assert (steps < 0.5).mean() > 0.01 and np.percentile(steps, 90) > 3.0  # stop and go


def test_objects_change_scale_and_some_travel_in_touching_pairs():
    scene = DemoScene(seed=3, objects=10, frames=900)
    tracks = _tracks(scene, 900)
    spans = []
    for seen in tracks.values():
        sides = [t.box[2] - t.box[0] for _, t in seen if not _on_edge(t.box)]
        if len(sides) > 30:
            spans.append(max(sides) / min(sides))
    assert np.median(spans) > 1.15  # coming closer, going away
    touching = 0
    for i in range(0, 900, 3):
        truth = [t for t in scene.truth(i) if not _on_edge(t.box)]
        for a in truth:
            for b in truth:
                if a.id < b.id:
                    gap_x = max(a.box[0], b.box[0]) - min(a.box[2], b.box[2])
                    gap_y = max(a.box[1], b.box[1]) - min(a.box[3], b.box[3])
                    touching += max(gap_x, gap_y) <= 2 and min(a.visible_fraction, b.visible_fraction) > 0.8
    assert touching > 10


def test_clutter_changes_pixels_never_truth():
    calm = DemoScene(seed=6, objects=4, clutter=0, frames=300)
    busy = DemoScene(seed=6, objects=4, clutter=6, frames=300)
    changed = []
    for i in range(0, 300, 30):
        a, ta = calm.render(i)
        b, tb = busy.render(i)
        assert ta == tb
        changed.append(float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 30).mean()))
    assert np.mean(changed) > 0.01  # leaves, sheets, mats, shadows cover part of the floor
    with pytest.raises(ConfigError, match="clutter"):
        DemoScene(clutter=-1)


def test_light_drifts_across_the_frame():
    scene = DemoScene(seed=4, objects=0, clutter=0, size=(160, 120), fps=30, frames=1200, noise=0)
    ratios = []
    for i in range(0, 1200, 60):
        grey = scene.render(i)[0].astype(np.float32).mean(axis=2)
        ratios.append(grey[:, :80].mean() / grey[:, 80:].mean())
    assert max(ratios) - min(ratios) > 0.1  # the gradient turns: left and right brighten in turn


def test_rendering_changes_lighting_and_noise():
    scene = DemoScene(seed=4, objects=0, clutter=0, size=(160, 120), fps=30, frames=400)
    means = [scene.render(i)[0].mean() for i in range(0, 400, 20)]
    assert max(means) - min(means) > 10  # lighting changes
    a, b = scene.render(10)[0].astype(int), scene.render(11)[0].astype(int)
    assert 0 < np.abs(a - b).mean() < 15  # noise differs frame to frame
    quiet = DemoScene(seed=4, objects=0, clutter=0, size=(160, 120), fps=30, noise=0, lighting=0)
    assert np.array_equal(quiet.render(10)[0], quiet.render(11)[0])


def _ridge_classifier():
    from edgeconf.datasets import load_fashion_mnist

    try:
        images, labels = load_fashion_mnist("train")
    except DataError as exc:
        pytest.skip("FashionMNIST not installed: %s" % exc)
    x = np.hstack([images[:10000].reshape(10000, -1) / 255.0, np.ones((10000, 1))])
    w = np.linalg.solve(x.T @ x + 3.0 * np.eye(x.shape[1]), x.T @ np.eye(10)[labels[:10000]])

    def probs(batch: np.ndarray) -> np.ndarray:
        xb = np.hstack([batch.reshape(len(batch), -1) / 255.0, np.ones((len(batch), 1))])
        s = xb @ w * 8.0
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return probs


def test_crops_stay_recognisable_and_confidence_rises_and_falls():
    probs = _ridge_classifier()
    images, labels = load_sample()
    sample_acc = float((probs(images).argmax(1) == labels).mean())
    crops, cls, vis, ids = [], [], [], []
    for seed in (1, 2, 3):  # many lives, so the items drawn average out to the sample
        scene = DemoScene(seed=seed, objects=8, frames=900)
        for i in range(0, 900, 6):
            image, truth = scene.render(i)
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            for t in truth:
                x1, y1, x2, y2 = (int(round(v)) for v in t.box)
                crops.append(cv2.resize(grey[y1:y2, x1:x2], (28, 28), interpolation=cv2.INTER_AREA))
                cls.append(t.class_id)
                vis.append(t.visible_fraction)
                ids.append(seed * 10000 + t.id)
    p = probs(np.array(crops))
    right = p.argmax(1) == np.array(cls)
    vis, ids = np.array(vis), np.array(ids)
    visible_acc = float(right[vis > 0.99].mean())
    assert visible_acc > sample_acc - 0.12, (visible_acc, sample_acc)
    assert right[vis < 0.6].mean() < visible_acc  # occlusion and borders hurt, as they should
    conf = p.max(1)
    spreads = [conf[ids == k].max() - conf[ids == k].min() for k in np.unique(ids) if (ids == k).sum() > 20]
    assert np.median(spreads) > 0.2  # confidence rises and falls along a track


def test_shipped_sample():
    images, labels = load_sample()
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [30] * 10
    assert len(LABELS) == 10
    with np.load(SAMPLE_PATH, allow_pickle=False) as data:
        assert list(data["label_names"]) == list(LABELS)


def test_sample_script_reproduces_the_shipped_sample(tmp_path):
    root = "/usr/share/datasets/fashion-mnist"
    if not os.path.exists(os.path.join(root, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("FashionMNIST (Debian dataset-fashion-mnist) not installed")
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "make_fashion_sample.py")
    out = tmp_path / "s.npz"
    import sys

    argv = sys.argv
    sys.argv = [script, "--root", root, "--out", str(out)]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
    with np.load(str(out)) as new, np.load(SAMPLE_PATH) as shipped:
        for key in ("images", "labels", "test_index", "label_names"):
            assert np.array_equal(new[key], shipped[key]), key


def test_bad_sample_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    with pytest.raises(DataError, match="make_fashion_sample"):
        load_sample(str(bad))
    np.savez(str(tmp_path / "shape.npz"), images=np.zeros((3, 10, 10), np.uint8), labels=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="N×28×28"):
        load_sample(str(tmp_path / "shape.npz"))


def test_bad_settings():
    with pytest.raises(ConfigError, match="too small"):
        DemoScene(size=(80, 60))
    with pytest.raises(ConfigError, match="objects"):
        DemoScene(objects=-1)
    with pytest.raises(ConfigError, match="fps"):
        DemoScene(fps=0)
    scene = DemoScene(frames=10)
    assert len(scene) == 10
    with pytest.raises(ConfigError, match="past the end"):
        scene.render(10)
    with pytest.raises(ConfigError):
        scene.render(-1)
    with pytest.raises(TypeError):
        len(DemoScene())
