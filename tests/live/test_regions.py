"""Region proposers: full frame, ground truth, motion (OpenCV background subtraction) and YOLO-style detection
ONNX models built here with onnx.helper (their outputs are known tensors, so decoding can be checked exactly)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeconf.errors import ConfigError, ModelLoadError
from edgeconf.live.regions import (ACCEPTED_LAYOUTS, Detection, DetectorRegions, FullFrame, MotionRegions, TruthRegions,
                              letterbox, make_regions, parse_spec)
from edgeconf.live.sources import Frame, TruthObject

OPSET = 17


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---- full and truth --------------------------------------------------------------------------------------


def test_full_frame():
    dets = make_regions("full").propose(np.zeros((48, 64, 3), np.uint8))
    assert dets == [Detection((0.0, 0.0, 64.0, 48.0), 1.0, None)]
    with pytest.raises(ConfigError):
        FullFrame().propose(np.zeros((0,), np.uint8))


def test_truth_regions_use_the_frames_ground_truth():
    truth = [TruthObject(1, (10.0, 10.0, 40.0, 40.0), 3, 1.0), TruthObject(2, (30.0, 5.0, 90.0, 50.0), 5, 0.6),
             TruthObject(3, (0.0, 0.0, 20.0, 20.0), 7, 0.1)]
    image = np.zeros((48, 64, 3), np.uint8)
    frame = Frame(image, 0, 0.0, truth)
    regions = make_regions("truth")
    assert regions.needs_frame
    dets = regions.propose_frame(frame)
    assert [d.box for d in dets] == [(10.0, 10.0, 40.0, 40.0), (30.0, 5.0, 64.0, 48.0)]  # clipped; 3 hidden
    assert [d.score for d in dets] == [1.0, 0.6]
    assert len(make_regions("truth:min_visible=0").propose(image, frame)) == 3
    with pytest.raises(ConfigError, match="demo://"):
        regions.propose(image)
    with pytest.raises(ConfigError, match="demo://"):
        regions.propose_frame(Frame(image, 0, 0.0, None))


def test_truth_regions_on_demo_frames():
    from edgeconf.live.sources import open_source

    with open_source("demo://?seed=2&frames=3", realtime=False) as src:
        frame = src.read(timeout=5)
    dets = TruthRegions(min_visible=0.0).propose_frame(frame)
    assert [d.box for d in dets] == [t.box for t in frame.truth]


# ---- motion ----------------------------------------------------------------------------------------------


def _moving_square_frames(n: int, size=(160, 120)):
    rng = np.random.default_rng(0)
    w, h = size
    background = rng.integers(90, 170, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    for i in range(n):
        img = background.copy()
        x, y = 3 * (i - 12), 40  # enters after the background model has seen 12 empty frames
        if x >= 0:
            img[y:y + 30, x:x + 30] = 10
            img[y + 8:y + 22, x + 8:x + 22] = 230
        noise = rng.integers(0, 6, img.shape, dtype=np.uint8)
        yield np.clip(img.astype(int) + noise - 3, 0, 255).astype(np.uint8), (float(x), float(y), float(x + 30), float(y + 30))


def test_motion_finds_a_moving_object_and_nothing_in_a_still_scene():
    regions = make_regions("motion:min_area=200")
    assert isinstance(regions, MotionRegions)
    hits = []
    for i, (img, box) in enumerate(_moving_square_frames(40)):
        dets = regions.propose(img)
        if i < 12:
            assert dets == []  # learning, then an empty scene
        elif i >= 16:
            assert len(dets) == 1, dets
            hits.append(iou(dets[0].box, box))
            assert 0.5 < dets[0].score <= 1.0
    assert min(hits) > 0.7
    still = MotionRegions()
    img = next(_moving_square_frames(1))[0]
    assert all(still.propose(img) == [] for _ in range(20))


def test_motion_min_area_knn_reset_and_options():
    frames = list(_moving_square_frames(30))
    big = make_regions("motion:knn,min_area=5000")
    assert big.method == "knn"
    assert all(big.propose(img) == [] for img, _ in frames)  # a 30×30 object is below 5000 px
    knn = make_regions("motion", method="knn", min_area=100)
    found = [knn.propose(img) for img, _ in frames]
    assert any(found[16:])
    knn.reset()
    assert knn.propose(frames[0][0]) == []
    with pytest.raises(ConfigError, match="method must be one of mog2, knn"):
        make_regions("motion:method=optical")
    with pytest.raises(ConfigError, match="unknown option.*min_aera"):
        make_regions("motion:min_aera=5")
    with pytest.raises(ConfigError, match="key=value"):
        make_regions("motion:fast")
    with pytest.raises(ConfigError, match="scale"):
        MotionRegions(scale=2)


def _two_squares(i: int):
    """Frame i: two striped 40×40 squares come in from the left and right borders of a still textured floor
    (after the background model's warm-up), slide towards each other until they touch (frame 60), then travel
    down side by side, touching; returns the frame and their true boxes."""
    rng = np.random.default_rng(7)
    img = rng.integers(90, 140, (200, 240, 3)).astype(np.uint8)
    y = 40 + 1.5 * max(0, i - 60)
    boxes = []
    for k, (x0, v) in enumerate(((-70.0, 2.5), (270.0, -2.5))):
        x = int(round(x0 + v * min(i, 60)))
        patch = np.full((40, 40, 3), 30 + 180 * k, np.uint8)
        patch[::6] = 240 - 180 * k  # stripes, so the inside of a square differs from the floor too
        yi = int(round(y))
        xa, xb = max(x, 0), min(x + 40, 240)
        if xb > xa:
            img[yi:yi + 40, xa:xb] = patch[:, xa - x:xb - x]
            boxes.append((float(xa), float(yi), float(xb), float(yi + 40)))
    return img, boxes


def test_motion_guided_by_the_tracker_splits_a_blob_that_covers_two_objects():
    from edgeconf.live.tracking import Tracker

    results = {}
    for guided in (True, False):
        regions = MotionRegions(min_area=100, guided=guided, history=500)
        tracker = Tracker()
        per_frame = []
        for i in range(90):
            img, truth = _two_squares(i)
            regions.observe_tracks(tracker.predicted_boxes())
            dets = regions.propose(img)
            tracker.update(dets)
            per_frame.append((dets, truth))
        results[guided] = per_frame
    late = range(70, 90)  # the squares have touched for 10 frames and travel on side by side
    blind = [len(results[False][i][0]) for i in late]
    assert max(blind) == 1  # on its own, background subtraction sees one blob
    for i in late:
        dets, truth = results[True][i]
        assert len(dets) == 2, (i, dets)  # the tracker's two predictions split it
        for t in truth:
            assert max(iou(t, d.box) for d in dets) > 0.6


def test_motion_on_the_demo_scene_finds_isolated_objects():
    """Objects that are not touching another one are found with a tight box most of the time."""
    from edgeconf.live.demo_scene import DemoScene

    scene = DemoScene(seed=1, objects=6, size=(640, 480), fps=30, frames=240)
    regions = MotionRegions()
    found = total = 0
    ious = []
    for i in range(240):
        image, truth = scene.render(i)
        dets = regions.propose(image)
        if i < 30:
            continue
        for t in truth:
            alone = all(iou(t.box, (o.box[0] - 8, o.box[1] - 8, o.box[2] + 8, o.box[3] + 8)) == 0
                        for o in truth if o is not t)
            if not alone or t.visible_fraction < 1.0:
                continue
            total += 1
            best = max([iou(t.box, d.box) for d in dets], default=0.0)
            found += best >= 0.5
            if best >= 0.5:
                ious.append(best)
    assert total > 200
    assert found / total > 0.65, found / total
    assert np.mean(ious) > 0.8


# ---- YOLO-style detectors --------------------------------------------------------------------------------


def detector_model(table: np.ndarray, hw=(64, 64), dynamic: bool = False, names=None, channels: int = 3) -> onnx.ModelProto:
    """A 'detector' whose output is ``table`` (plus 0 × the input mean, so the output depends on the input)."""
    table = np.asarray(table, np.float32)
    in_shape = ["N", channels, "H", "W"] if dynamic else [1, channels, hw[0], hw[1]]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "fake_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(table.shape))],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": names})
    onnx.checker.check_model(model)
    return model


def _save(model, tmp_path, name="det.onnx") -> str:
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


# rows of (cx, cy, w, h, class, score) in the 64×64 input
BOXES = [
    (20.0, 30.0, 10.0, 8.0, 1, 0.9),   # kept
    (21.0, 30.0, 10.0, 8.0, 1, 0.8),   # same class, overlaps the first: suppressed by NMS
    (20.0, 30.0, 10.0, 8.0, 2, 0.7),   # same place, other class: kept (class-aware NMS)
    (50.0, 40.0, 6.0, 6.0, 0, 0.1),    # below the confidence threshold
    (44.0, 28.0, 12.0, 12.0, 0, 0.6),  # kept
]
CLASSES = 3
ANCHORS = 40


def yolov8_table(boxes=BOXES) -> np.ndarray:
    t = np.zeros((1, 4 + CLASSES, ANCHORS), np.float32)
    for a, (cx, cy, w, h, c, s) in enumerate(boxes):
        t[0, :4, a] = (cx, cy, w, h)
        t[0, 4 + c, a] = s
    return t


def yolov5_table(boxes=BOXES) -> np.ndarray:
    t = np.zeros((1, ANCHORS, 5 + CLASSES), np.float32)
    for a, (cx, cy, w, h, c, s) in enumerate(boxes):
        t[0, a, :4] = (cx, cy, w, h)
        t[0, a, 4] = 0.5 + s / 2  # objectness × class score = s
        t[0, a, 5 + c] = s / (0.5 + s / 2)
    return t


def _expected(image_w: int, image_h: int, hw=(64, 64)):
    """The kept boxes mapped back through the letterbox to image pixels, best first."""
    ratio = min(hw[1] / image_w, hw[0] / image_h)
    pad_x = (hw[1] - round(image_w * ratio)) // 2
    pad_y = (hw[0] - round(image_h * ratio)) // 2
    out = []
    for cx, cy, w, h, c, s in (BOXES[0], BOXES[2], BOXES[4]):
        box = ((cx - w / 2 - pad_x) / ratio, (cy - h / 2 - pad_y) / ratio, (cx + w / 2 - pad_x) / ratio,
               (cy + h / 2 - pad_y) / ratio)
        out.append((box, s, c))
    return out


def _check(dets, expected):
    assert len(dets) == len(expected), dets
    for d, (box, score, cls) in zip(dets, expected):
        assert d.class_id == cls
        assert d.score == pytest.approx(score, abs=1e-5)
        assert d.box == pytest.approx(box, abs=1e-3)


def test_yolov8_layout_letterbox_decode_and_class_aware_nms(tmp_path):
    regions = make_regions("detector:" + _save(detector_model(yolov8_table()), tmp_path) + ",conf=0.25")
    assert isinstance(regions, DetectorRegions)
    assert (regions.layout, regions.num_classes, regions.input_size) == ("yolov8", CLASSES, (64, 64))
    image = np.zeros((64, 128, 3), np.uint8)  # wide: letterboxed with bars above and below
    _check(regions.propose(image), _expected(128, 64))
    square = np.zeros((128, 128, 3), np.uint8)
    _check(regions.propose(square), _expected(128, 128))
    regions.close()


def test_yolov5_layout_with_objectness(tmp_path):
    regions = DetectorRegions(_save(detector_model(yolov5_table()), tmp_path))
    assert (regions.layout, regions.num_classes) == ("yolov5", CLASSES)
    _check(regions.propose(np.zeros((48, 96, 3), np.uint8)), _expected(96, 48))


def test_yolov5_channels_first_needs_a_hint_or_metadata(tmp_path):
    table = yolov5_table().transpose(0, 2, 1).copy()  # (1, 5+C, A)
    path = _save(detector_model(table), tmp_path)
    guessed = DetectorRegions(path)  # channels-first without a hint reads as YOLOv8 with C+1 classes
    assert (guessed.layout, guessed.num_classes) == ("yolov8", CLASSES + 1)
    for regions in (DetectorRegions(path, layout="yolov5"), DetectorRegions(path, classes=CLASSES),
                    DetectorRegions(_save(detector_model(table, names=json.dumps({0: "a", 1: "b", 2: "c"})), tmp_path, "m.onnx")),
                    DetectorRegions(_save(detector_model(table, names="{0: 'a', 1: 'b', 2: 'c'}"), tmp_path, "u.onnx"))):
        assert (regions.layout, regions.num_classes) == ("yolov5", CLASSES)
        _check(regions.propose(np.zeros((64, 64, 3), np.uint8)), _expected(64, 64))


def test_yolov8_channels_last_with_hint(tmp_path):
    table = yolov8_table().transpose(0, 2, 1).copy()  # (1, A, 4+C)
    regions = DetectorRegions(_save(detector_model(table), tmp_path), layout="yolov8")
    _check(regions.propose(np.zeros((64, 64, 3), np.uint8)), _expected(64, 64))


def test_normalised_boxes_dynamic_input_and_thresholds(tmp_path):
    scaled = [(cx / 64, cy / 64, w / 64, h / 64, c, s) for cx, cy, w, h, c, s in BOXES]
    path = _save(detector_model(yolov8_table(scaled), dynamic=True), tmp_path)
    regions = DetectorRegions(path, imgsz=(64, 64))
    assert regions.input_size == (64, 64)
    _check(regions.propose(np.zeros((64, 64, 3), np.uint8)), _expected(64, 64))
    default = DetectorRegions(path)
    assert default.input_size == (640, 640)
    strict = DetectorRegions(path, imgsz=(64, 64), conf=0.75)
    assert [d.class_id for d in strict.propose(np.zeros((64, 64, 3), np.uint8))] == [1]
    agnostic = DetectorRegions(path, imgsz=(64, 64), class_agnostic=True)
    assert [d.class_id for d in agnostic.propose(np.zeros((64, 64, 3), np.uint8))] == [1, 0]
    grey = agnostic.propose(np.zeros((64, 64), np.uint8))
    assert len(grey) == 2


@pytest.mark.parametrize("shape", [(1, 7), (1, 4, 4), (1, 2, 3, 40), (1, 3, 3)])
def test_unexpected_output_layout_is_a_clear_error(tmp_path, shape):
    path = _save(detector_model(np.zeros(shape, np.float32)), tmp_path)
    with pytest.raises(ModelLoadError) as info:
        DetectorRegions(path)
    message = str(info.value)
    assert str(tuple(shape)) in message and ACCEPTED_LAYOUTS in message


def test_detector_input_and_file_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        make_regions("detector:" + str(tmp_path / "missing.onnx"))
    grey_input = _save(detector_model(yolov8_table(), channels=1), tmp_path)
    with pytest.raises(ModelLoadError, match=r"\(N, 3, H, W\)"):
        DetectorRegions(grey_input)
    fixed = _save(detector_model(yolov8_table()), tmp_path, "fixed.onnx")
    with pytest.raises(ConfigError, match="fixed input"):
        DetectorRegions(fixed, imgsz=(320, 320))
    with pytest.raises(ConfigError, match="layout"):
        DetectorRegions(fixed, layout="ssd")
    with pytest.raises(ModelLoadError, match="no output"):
        DetectorRegions(fixed, output="boxes")
    with pytest.raises(ConfigError, match="unknown option"):
        make_regions("detector:%s,confidence=0.3" % fixed)
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_text("nope")
    with pytest.raises(ModelLoadError):
        DetectorRegions(str(not_onnx))


# ---- specs and helpers -----------------------------------------------------------------------------------


def test_spec_parsing_and_unknown_kinds():
    assert parse_spec("motion:method=knn,min_area=300,scale=0.25") == ("motion", None,
                                                                        {"method": "knn", "min_area": 300, "scale": 0.25})
    assert parse_spec("detector:/m/yolo.onnx,conf=0.4,class_agnostic=true") == (
        "detector", "/m/yolo.onnx", {"conf": 0.4, "class_agnostic": True})
    assert parse_spec(" FULL ") == ("full", None, {})
    assert parse_spec("detector") == ("detector", None, {})  # the shipped detector
    assert parse_spec("detector:conf=0.5,iou=0.3") == ("detector", None, {"conf": 0.5, "iou": 0.3})
    with pytest.raises(ConfigError, match=r"unknown regions.*detector.*motion, full, truth \(oracle\)"):
        make_regions("boxes")
    with pytest.raises(ConfigError, match="empty"):
        make_regions("")


def test_letterbox_geometry():
    image = np.full((50, 100, 3), 7, np.uint8)
    boxed, ratio, (px, py) = letterbox(image, (64, 64))
    assert boxed.shape == (64, 64, 3) and ratio == pytest.approx(0.64)
    assert (px, py) == (0.0, 16.0)
    assert (boxed[:16] == 114).all() and (boxed[16:48] == 7).all() and (boxed[48:] == 114).all()
