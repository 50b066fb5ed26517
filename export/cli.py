"""Command-line verbs of the exporter: ``export``, ``retune``, ``pair`` and ``cascade``.

Mounted lazily by ``edgeconf/cli.py``. Data files are ``.npz`` archives with arrays ``x`` and ``y``
(see :data:`edgeconf.export.data.DATA_HELP`).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click
import numpy as np

from edgeconf.errors import ConfigError
from edgeconf.export.data import (DATA_HELP, _session, input_spec, load_npz, measure_cost, model_ready, read_labels,
                                  run_outputs, split)
from edgeconf.preprocess import Preprocessing

SCORE_CHOICES = click.Choice(["maxp", "margin", "entropy"])
POLICY_HELP = ("Threshold policy: max-accuracy (most accurate threshold, cheapest among ties), match:ACC (cheapest "
               "threshold with accuracy >= ACC; ACC as a fraction 0.93 or a percentage 93 / 93%), budget:COST (most "
               "accurate threshold whose expected cost per input is <= COST, in ms when costs are measured).")


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _stdout_console():
    from rich.console import Console

    return Console()


def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=_stderr_console(), transient=True)


def _parse_preprocessing(value: Optional[str]) -> Optional[Preprocessing]:
    if not value:
        return None
    text = value
    if os.path.isfile(value):
        with open(value, "r", encoding="utf-8") as f:
            text = f.read()
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError("--preprocessing must be a JSON object or a .json file holding one, got %r" % value) from None
    return Preprocessing.from_json(data)


def _preprocessing_for(path: str, given: Optional[Preprocessing]) -> Optional[Preprocessing]:
    """Given, else the model's edgeconf metadata, else a guess from an image-like input shape."""
    from edgeconf.export.build import infer_preprocessing
    from edgeconf.export.head import read_head_metadata

    if given is not None:
        return given
    meta = read_head_metadata(path)
    if isinstance(meta.get("preprocessing"), dict):
        return Preprocessing.from_json(meta["preprocessing"])
    return infer_preprocessing(input_spec(_session(path)).shape)


def _parse_costs(value: Optional[str], n: int) -> Optional[List[float]]:
    if not value:
        return None
    try:
        costs = [float(v) for v in value.split(",")]
    except ValueError:
        raise ConfigError("--costs must be comma-separated numbers, one per model, got %r" % value) from None
    if len(costs) != n:
        raise ConfigError("--costs has %d values but %d models were given" % (len(costs), n))
    return costs


INT8_METHODS = click.Choice(["auto", "minmax", "entropy", "percentile"])


def int8_options(f: Any) -> Any:
    """The INT8 tuning options shared by ``export --int8`` and ``cascade --int8``."""
    opts = [
        click.option("--int8-method", type=INT8_METHODS, default="auto", show_default=True,
                     help="Activation calibration; auto picks the most accurate of minmax, entropy and percentile on "
                          "a held-out part of the calibration data (needs labels)."),
        click.option("--int8-budget", type=click.FloatRange(0.0, 100.0), default=0.5, show_default=True,
                     help="Accuracy points INT8 may lose on held-out calibration data; the layers that add the most "
                          "quantization noise are kept in float until it holds."),
        click.option("--int8-ece-budget", type=click.FloatRange(0.0, 100.0), default=0.5, show_default=True,
                     help="ECE points INT8 may add (each model at its own re-fitted temperature)."),
        click.option("--calib-samples", type=click.IntRange(1, 10_000_000), default=2000, show_default=True,
                     help="Calibration samples (stratified by class) that set the activation ranges; the rest of the "
                          "calibration data (up to 5000) is held out for the choices above."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _int8_kwargs(method: str, budget: float, ece_budget: float, samples: int) -> Dict[str, Any]:
    return {"method": method, "budget": budget, "ece_budget": ece_budget, "fit_samples": samples}


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))


def _is_onnx(model: str) -> bool:
    return model.lower().endswith(".onnx") or os.path.isfile(model)


# -- export -----------------------------------------------------------------------------------------
@click.command("export")
@click.argument("model")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--score", type=SCORE_CHOICES, default="margin", show_default=True,
              help="Confidence score: maxp, margin (top-1 minus top-2) or entropy (1 - H / log C).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Exit threshold: exit = confidence >= threshold. Change later with 'edgeconf retune'.")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Fixed softmax temperature (default 1, or fitted with --calibrate).")
@click.option("--calibrate", "calibrate", type=click.Path(dir_okay=False), default=None,
              help="Fit the temperature on this held-out data (minimum NLL): " + DATA_HELP + ".")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="Class names: a text file with one name per line, or a JSON list.")
@click.option("--output", "output_name", default=None,
              help="Name of the logits output, when the model has several 2-D float outputs.")
@click.option("--weights", default=None, type=click.Path(dir_okay=False),
              help="For MODEL=module:function: a state dict (torch.save(model.state_dict()) or .safetensors). "
                   "Pickles of arbitrary objects are refused.")
@click.option("--input-shape", default=None,
              help="For MODEL=module:function: one input's shape without the batch, e.g. 1,28,28 (default: from "
                   "--calibrate data).")
@click.option("--preprocessing", "preprocessing", default=None,
              help="Preprocessing to record (JSON object or .json file), e.g. "
                   "'{\"size\": [28, 28], \"channels\": 1, \"scale\": 0.00392156862745098}'.")
@click.option("--opset", type=click.IntRange(11, 30), default=17, show_default=True,
              help="ONNX opset for MODEL=module:function.")
@click.option("--int8", is_flag=True, help="Also write a static INT8 (QDQ) copy, OUT with .int8.onnx; needs --calib.")
@click.option("--calib", "int8_calib", type=click.Path(dir_okay=False), default=None,
              help="INT8 calibration data (" + DATA_HELP + "); falls back to --calibrate data.")
@int8_options
@click.option("--test", "test_data", type=click.Path(dir_okay=False), default=None,
              help="Data the calibration did not see (same format): the float-vs-INT8 report (accuracy, ECE, "
                   "agreement) is measured on it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def export_cmd(model: str, out: str, score: str, threshold: float, temperature: Optional[float],
               calibrate: Optional[str], labels_file: Optional[str], output_name: Optional[str], weights: Optional[str],
               input_shape: Optional[str], preprocessing: Optional[str], opset: int, int8: bool,
               int8_calib: Optional[str], int8_method: str, int8_budget: float, int8_ece_budget: float,
               calib_samples: int, test_data: Optional[str], as_json: bool) -> None:
    """Export MODEL to a confidence-aware ONNX file OUT.

    MODEL is an .onnx file, or 'module:function' (or 'file.py:function') returning a torch.nn.Module,
    with --weights. The output graph keeps its outputs and adds probs (softmax of logits / T),
    confidence and exit; T and the threshold are stored in the graph and as edgeconf.* metadata.
    Data files: .npz with x (model-ready float32, or raw uint8 images converted with the
    preprocessing) and y (integer labels).
    """
    import onnx

    from edgeconf.export.calibration import fit_temperature
    from edgeconf.export.head import add_confidence_head, find_logits_output, load_model

    if int8 and not (int8_calib or calibrate):
        raise ConfigError("--int8 needs calibration data: add --calib DATA.npz (representative inputs)")
    if int8_calib and not int8:
        raise ConfigError("--calib is INT8 calibration data; add --int8, or use --calibrate DATA to fit the temperature")
    if test_data and not int8:
        raise ConfigError("--test is the data of the float-vs-INT8 report; add --int8 (and --calib DATA)")
    if temperature is not None and calibrate:
        raise ConfigError("--temperature and --calibrate conflict: give a fixed temperature or fit one, not both")
    pre = _parse_preprocessing(preprocessing)
    labels = read_labels(labels_file) if labels_file else None
    report: Dict[str, Any] = {"out": out}
    with tempfile.TemporaryDirectory(prefix="edgeconf-export-") as tmp:
        if _is_onnx(model):
            if weights or input_shape:
                raise ConfigError("--weights and --input-shape apply to MODEL=module:function, not to an .onnx file")
            source = model
        elif ":" in model:
            from edgeconf.export.torch_export import export_factory

            if input_shape:
                try:
                    shape = [int(v) for v in input_shape.replace("x", ",").split(",") if v.strip()]
                except ValueError:
                    raise ConfigError("--input-shape must be integers like 1,28,28, got %r" % input_shape) from None
            elif calibrate:
                x, _ = load_npz(calibrate)
                shape = list(pre.input_shape) if (x.dtype == np.uint8 and pre is not None) else list(x.shape[1:])
            else:
                raise ConfigError("MODEL=module:function needs --input-shape C,H,W (or --calibrate data to take it from)")
            source = os.path.join(tmp, "torch.onnx")
            rep = export_factory(model, weights, shape, source, opset=opset)
            report["torch_export"] = rep.to_json()
            report["torch_export"]["path"] = None
        else:
            raise ConfigError("MODEL %r is neither an .onnx file nor 'module:function'" % model)
        proto, _ = load_model(source)
        logits, _ = find_logits_output(proto, output_name)
        pre_used = _preprocessing_for(source, pre)
        if calibrate:
            x, y = load_npz(calibrate)
            z = run_outputs(source, x, [logits], preprocessing=pre_used)[logits]
            cal = fit_temperature(z, y)
            temperature = cal.temperature
            report["calibration"] = cal.to_json()
        headed = add_confidence_head(proto, score=score, threshold=threshold,
                                     temperature=1.0 if temperature is None else temperature, labels=labels,
                                     preprocessing=pre, output=output_name)
        os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
        onnx.save(headed, out)
    report.update({"score": score, "threshold": threshold, "temperature": 1.0 if temperature is None else temperature,
                   "logits": logits})
    if int8:
        from edgeconf.export.quantize import quantize_int8

        data = int8_calib or calibrate
        x, y = load_npz(data, need_labels=False)  # type: ignore[arg-type]
        test = load_npz(test_data) if test_data else None
        int8_out = os.path.splitext(out)[0] + ".int8.onnx"
        with _stderr_console().status("quantizing to INT8") as status:
            q = quantize_int8(out, int8_out, (x, y) if y is not None else x, test=test, preprocessing=pre_used,
                              progress=lambda msg: status.update("INT8: " + msg),
                              **_int8_kwargs(int8_method, int8_budget, int8_ece_budget, calib_samples))
        report["int8"] = q.to_json()
    if as_json:
        _echo_json(report)
        return
    con = _stdout_console()
    con.print("wrote [bold]%s[/] (score %s, threshold %.4g, temperature %.4g, logits %r)"
              % (out, score, threshold, report["temperature"], logits))
    if "torch_export" in report:
        con.print("torch → ONNX parity: max abs diff %.3g" % report["torch_export"]["max_abs_diff"])
    if "calibration" in report:
        c = report["calibration"]
        con.print("calibration on %d samples: ECE %.4f → %.4f, NLL %.4f → %.4f"
                  % (c["samples"], c["ece_before"], c["ece_after"], c["nll_before"], c["nll_after"]))
    if "int8" in report:
        q = report["int8"]
        _print_int8(con, q)


def _print_int8(con: Any, q: Dict[str, Any]) -> None:
    """The INT8 report for people: how it was made, then float vs INT8 on held-out and test data."""
    from rich.table import Table

    kept = ", ".join(q["float_layers"]) or "none"
    con.print("wrote [bold]%s[/] (INT8 QDQ, %s calibration on %d samples, %d of %d layers in float: %s; head and "
              "logits in float)" % (q["path"], q["method"], q["calibration_samples"], len(q["float_layers"]),
                                    q["quantized_layers"], kept))
    t = Table(title="float vs INT8")
    for col in ("data", "samples", "float acc.", "INT8 acc.", "float ECE", "INT8 ECE", "T float → INT8"):
        t.add_column(col)
    sel = q.get("selection") or {}
    if sel:
        t.add_row("held-out calibration", str(sel["samples"]), "%.4f" % sel["float"]["accuracy"],
                  "%.4f" % sel["int8"]["accuracy"], "%.4f" % sel["float"]["ece"], "%.4f" % sel["int8"]["ece"],
                  "%.3f → %.3f" % (sel["float"]["temperature"], sel["int8"]["temperature"]))
    if q["evaluated_on"] == "test":
        t.add_row("test", str(q["samples"]), "%.4f" % q["float_accuracy"], "%.4f" % q["int8_accuracy"],
                  "%.4f" % q["float_ece"], "%.4f" % q["int8_ece"], "")
    if t.row_count:
        con.print(t)
    if q.get("agreement") is not None:
        con.print("agreement on test: %.4f" % q["agreement"])
    if q.get("cpu"):
        c = q["cpu"]
        con.print("CPU time per image: float %.1f µs, INT8 %.1f µs (INT8 ÷ float %.2f; %s)"
                  % (c["float_us"], c["int8_us"], c["ratio"], c["protocol"]))
    for note in q.get("notes", []):
        con.print("note: %s" % note)


# -- retune -----------------------------------------------------------------------------------------
@click.command("retune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="New exit threshold.")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=None, help="New temperature.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write here instead of changing MODEL in place.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored values as JSON.")
def retune_cmd(model: str, threshold: Optional[float], temperature: Optional[float], out: Optional[str],
               as_json: bool) -> None:
    """Change the threshold and/or temperature stored in an exported MODEL (no re-export).

    Updates the graph initializers edgeconf_threshold / edgeconf_temperature and the edgeconf.*
    metadata, then re-validates the graph with onnx.checker and ONNX Runtime.
    """
    from edgeconf.export.head import head_values, retune

    if threshold is None and temperature is None:
        raise ConfigError("nothing to change: give --threshold and/or --temperature")
    dest = retune(model, threshold=threshold, temperature=temperature, out=out)
    t, thr = head_values(dest)
    if as_json:
        _echo_json({"model": dest, "threshold": thr, "temperature": t})
    else:
        click.echo("%s: threshold %.6g, temperature %.6g" % (dest, thr, t))


# -- shared by pair and cascade ---------------------------------------------------------------------
def _names(paths: Sequence[str]) -> List[str]:
    names: List[str] = []
    for p in paths:
        base = os.path.splitext(os.path.basename(p))[0]
        name, i = base, 2
        while name in names:
            name, i = "%s_%d" % (base, i), i + 1
        names.append(name)
    return names


def _model_logits(paths: Sequence[str], x: np.ndarray, pre: Optional[Preprocessing], output: Optional[str],
                  what: str) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Each model's logits on x, and each model's model-ready x (for cost measurement)."""
    from edgeconf.export.head import find_logits_output, load_model

    logits, ready = [], []
    with _progress() as prog:
        task = prog.add_task("running models on %s" % what, total=len(paths))
        for p in paths:
            name, _ = find_logits_output(load_model(p)[0], output)
            xr = model_ready(x, input_spec(_session(p)), _preprocessing_for(p, pre), "%s for %s" % (what, p))
            logits.append(run_outputs(p, xr, [name], input_name=input_spec(_session(p)).name)[name])
            ready.append(xr)
            prog.advance(task)
    return logits, ready


def _measure(paths: Sequence[str], ready: Sequence[np.ndarray], repeats: int) -> List[Dict[str, Any]]:
    out = []
    with _progress() as prog:
        task = prog.add_task("measuring per-image cost (1 thread, batch 1)", total=len(paths))
        for p, xr in zip(paths, ready):
            out.append(measure_cost(p, xr[:64], repeats=repeats))
            prog.advance(task)
    return out


# -- pair -------------------------------------------------------------------------------------------
@click.command("pair")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Labelled data: " + DATA_HELP + ".")
@click.option("--policy", default="max-accuracy", show_default=True, help=POLICY_HELP)
@click.option("--score", type=SCORE_CHOICES, default="margin", show_default=True, help="Confidence score.")
@click.option("--combine", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="last: the second model's answer replaces the first's; best: keep the higher-scored answer.")
@click.option("--calib-fraction", type=click.FloatRange(0.05, 0.95), default=0.5, show_default=True,
              help="Share of --data (random, seed 0) used to fit temperatures and thresholds; the rest reports.")
@click.option("--costs", default=None, help="Comma-separated cost per model (default: measured ms per image).")
@click.option("--preprocessing", default=None, help="Preprocessing for uint8 x (JSON object or .json file).")
@click.option("--output", "output_name", default=None, help="Logits output name, when models have several.")
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True, help="Pairs to show.")
@click.option("--repeats", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="Timed single-image runs per model when measuring costs.")
@click.option("--json", "as_json", is_flag=True, help="Print the matrix and the ranked pairs as JSON.")
def pair_cmd(models: Sequence[str], data: str, policy: str, score: str, combine: str, calib_fraction: float,
             costs: Optional[str], preprocessing: Optional[str], output_name: Optional[str], top: int, repeats: int,
             as_json: bool) -> None:
    """Rank pairs of MODELS (.onnx classifiers) for a two-stage cascade.

    Shows the complementarity matrix (share of samples where exactly one model is right, and the
    paper's variant that subtracts |err_i - err_j| / N) and, for each ordered pair, the threshold
    chosen by --policy on the calibration part of --data and the accuracy, cost and escalation on
    the other part. The first row is the recommended pair.
    """
    from edgeconf.export.calibration import fit_temperature
    from edgeconf.export.pairing import complementarity_matrix, rank_pairs
    from edgeconf.export.thresholds import parse_policy

    if len(models) < 2:
        raise ConfigError("pair needs at least 2 models, got %d" % len(models))
    parse_policy(policy)
    x, y = load_npz(data)
    (xc, yc), (xt, yt) = split(x, y, calib_fraction)  # type: ignore[arg-type]
    pre = _parse_preprocessing(preprocessing)
    names = _names(models)
    cal_logits, ready = _model_logits(models, xc, pre, output_name, "calibration data")
    test_logits, _ = _model_logits(models, xt, pre, output_name, "test data")
    given = _parse_costs(costs, len(models))
    cost_info = _measure(models, ready, repeats) if given is None else [{"value": c, "how": "given"} for c in given]
    cost_values = {n: float(c.get("ms", c.get("value", 0.0))) for n, c in zip(names, cost_info)}
    temps = {n: fit_temperature(z, yc).temperature for n, z in zip(names, cal_logits)}
    comp = complementarity_matrix({n: z.argmax(1) for n, z in zip(names, test_logits)}, yt)
    pairs = rank_pairs(dict(zip(names, cal_logits)), yc, cost_values, policy, score, temps, combine,
                       test=(dict(zip(names, test_logits)), yt))
    singles = {n: {"test_accuracy": float((z.argmax(1) == yt).mean()), "cost": cost_values[n], "temperature": temps[n]}
               for n, z in zip(names, test_logits)}
    if as_json:
        _echo_json({"models": singles, "costs": dict(zip(names, cost_info)), "complementarity": comp.to_json(),
                    "pairs": [p.to_json() for p in pairs], "recommended": pairs[0].to_json(),
                    "calibration_samples": int(yc.size), "test_samples": int(yt.size), "policy": policy})
        return
    from rich.table import Table

    con = _stdout_console()
    unit = "ms" if given is None else "cost"
    t = Table(title="models (test part: %d samples)" % yt.size)
    for col in ("model", "accuracy", unit, "T"):
        t.add_column(col)
    for n in names:
        t.add_row(n, "%.4f" % singles[n]["test_accuracy"], "%.4g" % cost_values[n], "%.3f" % temps[n])
    con.print(t)
    m = Table(title="complementarity: exactly one right / paper variant (test part)")
    m.add_column("")
    for n in names:
        m.add_column(n)
    for i, n in enumerate(names):
        m.add_row(n, *["—" if i == j else "%.3f / %.3f" % (comp.exactly_one[i, j], comp.paper[i, j])
                       for j in range(len(names))])
    con.print(m)
    p = Table(title="pairs under %s (threshold from %d calibration samples, metrics on %d test samples)"
              % (policy, yc.size, yt.size))
    for col in ("#", "first → second", "λ", "accuracy", unit, "escalation", "compl.", "paper", "policy met"):
        p.add_column(col)
    for i, r in enumerate(pairs[:top]):
        p.add_row(str(i + 1), "%s → %s" % (r.first, r.second), "%.4f" % r.threshold, "%.4f" % r.accuracy,
                  "%.4g" % r.cost, "%.3f" % r.escalation, "%.3f" % r.complementarity, "%.3f" % r.paper_complementarity,
                  "yes" if r.feasible else "no")
    con.print(p)
    best = pairs[0]
    con.print("recommended: [bold]%s → %s[/] (λ = %.4f)" % (best.first, best.second, best.threshold))


# -- cascade ----------------------------------------------------------------------------------------
@click.command("cascade")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Labelled data: " + DATA_HELP + ". Split into calibration and test parts unless --test is given.")
@click.option("--test", "test_data", default=None, type=click.Path(dir_okay=False),
              help="Separate test data (same format); then all of --data calibrates.")
@click.option("--policy", default="max-accuracy", show_default=True, help=POLICY_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--score", type=SCORE_CHOICES, default="margin", show_default=True, help="Confidence score.")
@click.option("--combine", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="last: a later stage's answer replaces the earlier; best: keep the higher-scored answer.")
@click.option("--calib-fraction", type=click.FloatRange(0.05, 0.95), default=0.5, show_default=True,
              help="Share of --data (random, seed 0) used for calibration when --test is not given.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="Class names: one per line, or a JSON list (default: from the models' metadata).")
@click.option("--preprocessing", default=None, help="Preprocessing (JSON object or .json file); default: metadata.")
@click.option("--costs", default=None, help="Comma-separated cost per model (default: measured ms per image).")
@click.option("--output", "output_name", default=None, help="Logits output name, when models have several.")
@click.option("--name", default="cascade", show_default=True, help="Bundle name.")
@click.option("--repeats", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="Timed single-image runs per model when measuring costs.")
@click.option("--int8", is_flag=True,
              help="Quantize every stage to INT8 (QDQ) on the calibration data first; temperatures, thresholds and "
                   "costs are then chosen on the INT8 stages' outputs.")
@int8_options
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
def cascade_cmd(models: Sequence[str], data: str, test_data: Optional[str], policy: str, out: str, score: str,
                combine: str, calib_fraction: float, labels_file: Optional[str], preprocessing: Optional[str],
                costs: Optional[str], output_name: Optional[str], name: str, repeats: int, int8: bool,
                int8_method: str, int8_budget: float, int8_ece_budget: float, calib_samples: int,
                as_json: bool) -> None:
    """Build a cascade bundle OUT from MODELS (.onnx, cheapest first): MODEL_A MODEL_B [MODEL_C ...].

    Fits each model's temperature and the exit thresholds (--policy) on the calibration data, adds
    confidence heads, writes the bundle, and reports the chosen operating point on the test data
    (by simulation and by running the written bundle). With --int8 the bundle holds INT8 (QDQ)
    stages, and every choice above is made on the INT8 stages' own outputs.
    """
    from edgeconf.export.build import build_cascade
    from edgeconf.export.thresholds import parse_policy

    if len(models) < 2:
        raise ConfigError("cascade needs at least 2 models, got %d" % len(models))
    parse_policy(policy)
    x, y = load_npz(data)
    if test_data:
        calib, test = (x, y), load_npz(test_data)
    else:
        calib, test = split(x, y, calib_fraction)  # type: ignore[arg-type]
    labels = read_labels(labels_file) if labels_file else None
    given = _parse_costs(costs, len(models))
    with _stderr_console().status("building the cascade (calibration, cost measurement, thresholds)"):
        report = build_cascade(list(models), calib, test, out=out, policy=policy, score=score, combine=combine,
                               labels=labels, preprocessing=_parse_preprocessing(preprocessing), costs=given,
                               output=output_name, name=name, cost_repeats=repeats,
                               int8=dict(_int8_kwargs(int8_method, int8_budget, int8_ece_budget, calib_samples),
                                         cpu_rounds=0) if int8 else None)
    if as_json:
        _echo_json(report.to_json())
        return
    from rich.table import Table

    con = _stdout_console()
    unit = "ms" if given is None else "cost"
    t = Table(title="stages")
    for col in ("stage", "source", "T", "ECE before → after", unit, "test accuracy"):
        t.add_column(col)
    for s in report.stages:
        c = s.cost.get("ms", s.cost.get("value"))
        t.add_row(s.name, os.path.basename(s.source), "%.3f" % s.temperature,
                  "%.4f → %.4f" % (s.calibration.ece_before, s.calibration.ece_after), "%.4g" % c,
                  "%.4f" % s.test_accuracy if s.test_accuracy is not None else "—")
    con.print(t)
    op, te = report.operating_point, report.test
    o = Table(title="operating point (%s)" % policy)
    for col in ("split", "thresholds", "accuracy", unit, "escalation"):
        o.add_column(col)
    o.add_row("calibration", ", ".join("%.4f" % v for v in op.thresholds), "%.4f" % op.accuracy, "%.4g" % op.cost,
              "%.3f" % op.escalation)
    if te is not None:
        o.add_row("test", ", ".join("%.4f" % v for v in te.thresholds), "%.4f" % te.accuracy, "%.4g" % te.cost,
                  "%.3f" % te.escalation)
    if report.runtime_test is not None:
        rt = report.runtime_test
        o.add_row("test (bundle run)", "", "%.4f" % rt["accuracy"], "", "%.3f" % rt["escalation"])
    con.print(o)
    for q in report.int8 or []:
        con.print("%s: INT8 with %s calibration, %d of %d layers in float%s" % (
            q["stage"], q["method"], len(q["float_layers"]), q["quantized_layers"],
            "" if q["int8_accuracy"] is None else "; test accuracy %.4f (float %.4f), ECE %.4f (float %.4f)" % (
                q["int8_accuracy"], q["float_accuracy"], q["int8_ece"], q["float_ece"])))
    for note in report.notes:
        con.print("note: %s" % note)
    con.print("wrote bundle [bold]%s[/]" % out)


__all__ = ["export_cmd", "retune_cmd", "pair_cmd", "cascade_cmd"]
