"""torch → ONNX: parity, dynamic batch, safe weights; early-exit segments equal the torch model."""
from __future__ import annotations

import pickle
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgeconf.bundle import load_bundle  # noqa: E402
from edgeconf.export.early_exit import build_early_exit_bundle, export_multi_exit, multi_exit_logits  # noqa: E402
from edgeconf.export.errors import ParityError, UnsafeWeightsError  # noqa: E402
from edgeconf.export.torch_export import export_torch, load_factory, load_weights  # noqa: E402
from edgeconf.export.thresholds import simulate, stage_outputs  # noqa: E402

pytestmark = pytest.mark.torch


def _train(model, x, y, steps=30):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        out = model(xt)
        outs = out if isinstance(out, list) else [out]
        loss = sum(nn.functional.cross_entropy(o, yt) for o in outs)
        loss.backward()
        opt.step()
    return model.eval()


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))


@pytest.mark.slow
def test_export_parity_and_dynamic_batch(task, tmp_path):
    import onnxruntime as ort

    x, y = task.data(256, 1)
    model = _train(_cnn(), x, y)
    rep = export_torch(model, x[:4], str(tmp_path / "m.onnx"))
    assert rep.max_abs_diff <= 1e-4 and rep.opset == 17 and rep.output_names == ["logits"]
    sess = ort.InferenceSession(rep.path, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "input"
    got = sess.run(["logits"], {"input": x[:7]})[0]  # a batch size the example never had
    with torch.no_grad():
        want = model(torch.from_numpy(x[:7])).numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_parity_failure_is_reported(task, tmp_path):
    class Noisy(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :5] + torch.rand(x.shape[0], 5)

    with pytest.raises(ParityError, match="differs from torch"):
        export_torch(Noisy(), task.data(4, 1)[0], str(tmp_path / "n.onnx"))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_loading_refuses_pickles(tmp_path):
    torch.save({"w": _Evil()}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(), f)
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(UnsafeWeightsError, match="refused.*never unpickles"):
            load_weights(str(tmp_path / name))
    torch.save(_cnn(), tmp_path / "whole_model.pt")  # a pickled module, not a state dict
    with pytest.raises(UnsafeWeightsError, match="refused"):
        load_weights(str(tmp_path / "whole_model.pt"))


def test_factory_with_torch_and_safetensors_weights(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    (tmp_path / "zoo_mod.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def build():
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    """))
    ref = _cnn()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    st.save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    spec = "%s:build" % (tmp_path / "zoo_mod.py")
    for w in ("w.pt", "w.safetensors"):
        model = load_factory(spec, str(tmp_path / w))
        for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
            assert torch.equal(a, b)
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    from edgeconf.errors import ModelLoadError
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_factory(spec, str(tmp_path / "wrong.pt"))


class MultiExit(nn.Module):
    """The multi-exit protocol: segments (features → features) and one exit per segment."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.segments = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        ])
        self.exits = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(c * 36, 5)) for c in (4, 8, 8)])

    def forward(self, x):
        outs = []
        for seg, ex in zip(self.segments, self.exits):
            x = seg(x)
            outs.append(ex(x))
        return outs


@pytest.mark.slow
def test_early_exit_runtime_equals_torch(task, tmp_path):
    x, y = task.data(300, 2)
    model = _train(MultiExit(), x, y, steps=25)
    exp = export_multi_exit(model, x[:4], str(tmp_path / "segs"))
    assert len(exp.paths) == 3 and exp.max_abs_diff <= 1e-4
    (xc, yc), (xt, yt) = task.data(300, 3), task.data(300, 4)
    out = str(tmp_path / "ee")
    rep = build_early_exit_bundle(exp.paths, (xc, yc), (xt, yt), out=out, policy="budget:0.6",
                                  costs=[0.2, 0.3, 0.5], n=300)
    with load_bundle(out, memo=False) as cascade:
        assert [s.input for s in cascade.stages] == ["image", "features", "features"]
        res = cascade.run_batch(xt)
        thresholds = cascade.thresholds
        temps = [s.temperature for s in cascade.stages]
    assert rep.runtime_test["matches_simulation"]
    # the same exit rule on the whole torch model's exits
    logits = multi_exit_logits(model, xt)
    confs, preds, _, _, _ = stage_outputs(logits, yt, "margin", temps)
    pred, stage_of, _ = simulate(confs, preds, thresholds, "last")
    borderline = np.zeros(len(yt), bool)
    for k in range(2):
        borderline |= np.abs(confs[k] - thresholds[k]) < 1e-5
    assert borderline.mean() < 0.02
    assert np.array_equal(res.class_ids[~borderline], pred[~borderline])
    assert np.array_equal(res.stage[~borderline], stage_of[~borderline])
    assert 0 < (res.stage == 0).mean() < 1  # some inputs leave early, some do not


def test_cli_module_function_form(capsys, task, tmp_path):
    from edgeconf.cli import main

    (tmp_path / "cli_mod.py").write_text(textwrap.dedent("""
        from torch import nn
        def build():
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    """))
    torch.save(_cnn().state_dict(), tmp_path / "w.pt")
    torch.save({"w": _Evil()}, tmp_path / "evil.pt")
    spec = "%s:build" % (tmp_path / "cli_mod.py")

    def run(*args):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        return (code,) + capsys.readouterr()

    code, out, err = run("export", spec, "--weights", tmp_path / "w.pt", "--input-shape", "1,6,6",
                         "--out", tmp_path / "m.onnx", "--json")
    assert code == 0, err
    import json
    assert json.loads(out)["torch_export"]["max_abs_diff"] <= 1e-4
    code, out, err = run("export", spec, "--weights", tmp_path / "evil.pt", "--input-shape", "1,6,6",
                         "--out", tmp_path / "e.onnx")
    assert code == 1 and "refused" in err and "this must never run" not in out + err
    code, out, err = run("export", spec, "--out", tmp_path / "e.onnx")
    assert code == 1 and "--input-shape" in err


@pytest.mark.parametrize("case", ["input_shape", "other_weights", "channels_last"])
def test_cli_torch_failures_are_one_line(capsys, case, tmp_path):
    from edgeconf.cli import main

    (tmp_path / "one_mod.py").write_text(textwrap.dedent("""
        from torch import nn
        def build():
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    """))
    if case == "input_shape":  # the Linear takes 6×6 feature maps: 5×5 inputs fail inside the forward
        torch.save(_cnn().state_dict(), tmp_path / "w.pt")
        shape, words = "1,5,5", ["the model failed on an input of shape (1, 1, 5, 5) (RuntimeError: mat1 and mat2 "
                                 "shapes cannot be multiplied", "check the input shape (CLI --input-shape"]
    elif case == "channels_last":  # (H, W, C) given to a channels-first model: the message names the layout
        torch.save(_cnn().state_dict(), tmp_path / "w.pt")
        shape, words = "6,6,1", ["the model failed on an input of shape (1, 6, 6, 1)",
                                 "this input is channels-last (H, W, C)", '"layout": "NCHW"']
    else:  # weights of a wider model: the first size mismatch is named, not only torch's header line
        other = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5))
        torch.save(other.state_dict(), tmp_path / "w.pt")
        shape, words = "1,6,6", ["do not fit", "Error(s) in loading state_dict for Sequential: size mismatch for "
                                 "0.weight: copying a param with shape torch.Size([8, 1, 3, 3])", "more problems"]
    try:
        main(["export", "%s:build" % (tmp_path / "one_mod.py"), "--weights", str(tmp_path / "w.pt"),
              "--input-shape", shape, "--out", str(tmp_path / "m.onnx")])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    assert code == 1 and err.startswith("edgeconf: error:") and err.count("\n") == 1, err
    assert all(w in err for w in words), err
    assert "Traceback" not in err and not (tmp_path / "m.onnx").exists()
