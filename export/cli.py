"""Command-line verbs of the exporter: ``export``, ``retune``, ``pair`` and ``cascade``.

Mounted lazily by ``edgeconf/cli.py``. Each verb parses its options and calls the Python API of
:mod:`edgeconf.export.api` / :mod:`edgeconf.export.build`, then prints. Data is any format
:func:`edgeconf.datasets.open_dataset` reads (docs/data.md).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import click
import numpy as np

from edgeconf.commands import checked_by, finite_range
from edgeconf.errors import ConfigError
from edgeconf.export.data import DATA_HELP, read_labels
from edgeconf.export.preprocessing import PREPROCESSING_HELP, parse_preprocessing

SCORE_CHOICES = click.Choice(["maxp", "margin", "entropy"])
OUTPUT_KIND = click.Choice(["auto", "logits", "probs"])
OUTPUT_KIND_HELP = ("What the model outputs: logits, probs (already softmax probabilities: the head takes their "
                    "logarithm) or auto (probs when a Softmax ends the graph or the outputs sum to 1 on the data).")
POLICY_HELP = ("Threshold policy: max-accuracy (most accurate threshold, cheapest among ties), match:ACC (cheapest "
               "threshold with accuracy >= ACC; ACC as a fraction 0.93 or a percentage 93 / 93%), budget:COST (most "
               "accurate threshold whose expected cost per input is <= COST, in ms when costs are measured).")
MAX_PIXELS_HELP = "Refuse images over this many pixels (header checked before decoding) [default: 50000000]."


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _policy(value: str) -> None:
    from edgeconf.export.thresholds import parse_policy

    parse_policy(value)


_check_policy = checked_by(_policy)


def _temperature(value: float) -> None:
    from edgeconf.export.head import check_head_values

    check_head_values(temperature=value)


#: a temperature is stored in a float32 initializer: one beyond float32's range is refused (exit 2), not stored as inf
_check_temperature = checked_by(_temperature)


def _stdout_console():
    """Tables on stdout, 80 columns wide when it is not a terminal (piped output looks like a default terminal's);
    lines of text are never wrapped."""
    from rich.console import Console

    con = Console(soft_wrap=True)
    return con if con.is_terminal else Console(width=80, soft_wrap=True)


def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err = _stderr_console()
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)


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
        click.option("--int8-budget", type=finite_range(0.0, 100.0), default=0.5, show_default=True,
                     help="Accuracy points INT8 may lose on held-out calibration data; the layers that add the most "
                          "quantization noise are kept in float until it holds."),
        click.option("--int8-ece-budget", type=finite_range(0.0, 100.0), default=0.5, show_default=True,
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


def _input_shape(value: Optional[str]) -> Optional[List[int]]:
    if not value:
        return None
    try:
        return [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise ConfigError("--input-shape must be integers like 1,28,28, got %r" % value) from None


# -- export -----------------------------------------------------------------------------------------
@click.command("export")
@click.argument("model")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--score", type=SCORE_CHOICES, default="margin", show_default=True,
              help="Confidence score: maxp, margin (top-1 minus top-2) or entropy (1 - H / log C).")
@click.option("--threshold", type=finite_range(0.0, 1.0), default=0.5, show_default=True,
              help="Exit threshold: exit = confidence >= threshold. Change later with 'edgeconf retune'.")
@click.option("--temperature", type=finite_range(min=0.0, min_open=True), default=None, callback=_check_temperature,
              help="Fixed softmax temperature (default 1, or fitted with --calibrate).")
@click.option("--calibrate", "calibrate", default=None,
              help="Held-out data: fits the temperature (minimum NLL) and reports the model's accuracy when labelled; "
                   "also gives the input shape of a PyTorch model. " + DATA_HELP + ".")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="Class names: a text file with one name per line, or a JSON list (default: the data's class names).")
@click.option("--output", "output_name", default=None,
              help="Name of the logits output, when the model has several 2-D float outputs.")
@click.option("--output-kind", type=OUTPUT_KIND, default="auto", show_default=True, help=OUTPUT_KIND_HELP)
@click.option("--weights", default=None, type=click.Path(dir_okay=False),
              help="For MODEL=module:function: a state dict (torch.save(model.state_dict()) or .safetensors). "
                   "Pickles of arbitrary objects are refused.")
@click.option("--input-shape", default=None,
              help="For MODEL=module:function: one input's shape without the batch, e.g. 3,40,40 (default: from "
                   "--preprocessing, or from the --calibrate images, trying channels first, then last).")
@click.option("--preprocessing", "preprocessing", default=None, help=PREPROCESSING_HELP,
              callback=checked_by(parse_preprocessing))
@click.option("--opset", type=click.IntRange(11, 30), default=17, show_default=True,
              help="ONNX opset for MODEL=module:function.")
@click.option("--int8", is_flag=True, help="Also write a static INT8 (QDQ) copy, OUT with .int8.onnx; needs --calib.")
@click.option("--calib", "int8_calib", default=None,
              help="INT8 calibration data (" + DATA_HELP + "); falls back to --calibrate data.")
@int8_options
@click.option("--test", "test_data", default=None,
              help="Data the calibration did not see (same formats): the float-vs-INT8 report (accuracy, ECE, "
                   "agreement) is measured on it.")
@click.option("--max-pixels", type=click.IntRange(1, None), default=None, help=MAX_PIXELS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def export_cmd(model: str, out: str, score: str, threshold: float, temperature: Optional[float],
               calibrate: Optional[str], labels_file: Optional[str], output_name: Optional[str], output_kind: str,
               weights: Optional[str], input_shape: Optional[str], preprocessing: Optional[str], opset: int,
               int8: bool, int8_calib: Optional[str], int8_method: str, int8_budget: float, int8_ece_budget: float,
               calib_samples: int, test_data: Optional[str], max_pixels: Optional[int], as_json: bool) -> None:
    """Export MODEL to a confidence-aware ONNX file OUT.

    MODEL is an .onnx file, or 'module:function' (or 'file.py:function') returning a torch.nn.Module,
    with --weights. The output graph keeps its outputs and adds probs (softmax of logits / T),
    confidence and exit; T and the threshold are stored in the graph and as edgeconf.* metadata, with
    the preprocessing and the class names. The preprocessing is --preprocessing, else the model's
    metadata, else inferred from its input shape (said in the report; never written as null unless
    --preprocessing none). With labelled --calibrate data the report gives the model's accuracy on it and
    warns when it is near chance (wrong preprocessing is the usual cause; class names in another order
    than the model's outputs, as --labels or the model's metadata give them, another).
    """
    from rich.markup import escape

    from edgeconf.export.api import export_model

    if int8 and not (int8_calib or calibrate):
        raise ConfigError("--int8 needs calibration data: add --calib DATA (representative inputs)")
    if int8_calib and not int8:
        raise ConfigError("--calib is INT8 calibration data; add --int8, or use --calibrate DATA to fit the temperature")
    if test_data and not int8:
        raise ConfigError("--test is the data of the float-vs-INT8 report; add --int8 (and --calib DATA)")
    if temperature is not None and calibrate:
        raise ConfigError("--temperature and --calibrate conflict: give a fixed temperature or fit one, not both")
    is_onnx = model.lower().endswith(".onnx") or os.path.isfile(model)
    if not is_onnx and ":" not in model:
        raise ConfigError("MODEL %r is neither an .onnx file nor 'module:function'" % model)
    if is_onnx and (weights or input_shape):
        raise ConfigError("--weights and --input-shape apply to MODEL=module:function, not to an .onnx file")
    if not is_onnx and not (input_shape or calibrate or preprocessing):
        raise ConfigError("MODEL=module:function needs its input shape: --input-shape C,H,W, a --preprocessing, or "
                          "--calibrate data to take it from")
    labels = read_labels(labels_file) if labels_file else None

    def export(path: str) -> Any:
        return export_model(model, path, data=calibrate, preprocessing=preprocessing, labels=labels, score=score,
                            threshold=threshold, temperature=temperature, output=output_name, output_kind=output_kind,
                            input_shape=_input_shape(input_shape), weights=weights, opset=opset, max_pixels=max_pixels)

    if not int8:
        res = export(out)
        report = res.to_json()
    else:  # both files are made in a hidden folder and replace OUT and OUT.int8.onnx together, or neither does
        import json as _json
        import tempfile

        from edgeconf.atomic import FileSet
        from edgeconf.export.data import as_data
        from edgeconf.export.quantize import quantize_int8

        d = as_data(int8_calib or calibrate, "INT8 calibration data", max_pixels)
        t = as_data(test_data, "test data", max_pixels, need_labels=True) if test_data else None
        final = (out, os.path.splitext(out)[0] + ".int8.onnx")
        with tempfile.TemporaryDirectory(prefix=".edgeconf-export-", dir=os.path.dirname(os.path.abspath(out))) as tmp:
            made = tuple(os.path.join(tmp, os.path.basename(p)) for p in final)
            res = export(made[0])
            with _stderr_console().status("quantizing to INT8") as status:
                q = quantize_int8(made[0], made[1], (d.x, d.y) if d.y is not None else d.x,
                                  test=(t.x, t.y) if t is not None else None, preprocessing=res.preprocessing,
                                  progress=lambda msg: status.update("INT8: " + msg),
                                  **_int8_kwargs(int8_method, int8_budget, int8_ece_budget, calib_samples))
            with FileSet() as files:
                for src, dst in zip(made, final):
                    with open(src, "rb") as f:
                        files.write(dst, f.read())
                files.commit()
            text = _json.dumps({"float": res.to_json(), "int8": q.to_json()})
            for src, dst in zip(made, final):  # the report names the files where they now are
                text = text.replace(_json.dumps(src)[1:-1], _json.dumps(dst)[1:-1])
            both = _json.loads(text)
        report = both["float"]
        report["int8"] = both["int8"]
    if as_json:
        _echo_json(report)
        return
    con = _stdout_console()
    err = _stderr_console()
    con.print("wrote [bold]%s[/] (score %s, threshold %s, temperature %.4g, output %r as %s)"
              % (out, score, threshold, res.temperature, res.logits, res.output_kind))
    con.print("preprocessing (%s): %s" % (res.preprocessing_source,
                                          res.preprocessing.describe() if res.preprocessing else "none"))
    if res.torch_export:
        con.print("torch → ONNX parity: max abs diff %.3g" % res.torch_export["max_abs_diff"])
    if res.accuracy is not None:
        con.print("accuracy on the %d calibration samples: %.2f %%" % (res.samples, 100 * res.accuracy))
    if res.calibration:
        c = res.calibration
        con.print("temperature fitted on %d samples: ECE %.4f → %.4f, NLL %.4f → %.4f"
                  % (c.samples, c.ece_before, c.ece_after, c.nll_before, c.nll_after))
    for note in res.notes:
        con.print("note: %s" % note)
    for warning in res.warnings:  # one line each, however long
        err.print("[yellow]warning:[/] %s" % escape(warning), soft_wrap=True)
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
@click.argument("target", type=click.Path(exists=True))
@click.option("--stage", default=None,
              help="For a bundle: the stage to change, 1-based (1 = the first stage) or its name.")
@click.option("--threshold", type=finite_range(0.0, 1.0), default=None, help="New exit threshold.")
@click.option("--temperature", type=finite_range(min=0.0, min_open=True), default=None, callback=_check_temperature,
              help="New temperature.")
@click.option("--out", default=None, type=click.Path(),
              help="Write a changed copy here (a new folder for a bundle, a file for a model) instead of in place.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored values as JSON.")
def retune_cmd(target: str, stage: Optional[str], threshold: Optional[float], temperature: Optional[float],
               out: Optional[str], as_json: bool) -> None:
    """Change a stored threshold and/or temperature without re-exporting.

    TARGET is a bundle folder (with --stage K) or an exported .onnx. For a bundle, the stage's ONNX
    initializers (edgeconf_threshold / edgeconf_temperature) and edgeconf.* metadata, the manifest and its
    sha256 change together, so the bundle loads afterwards. A model a bundle lists, retuned in place,
    updates its bundle the same way. Values are stored and printed as given.
    """
    from edgeconf.export.api import retune

    if threshold is None and temperature is None:
        raise ConfigError("nothing to change: give --threshold and/or --temperature")
    res = retune(target, threshold=threshold, temperature=temperature, stage=stage, out=out)
    if as_json:
        _echo_json(res.to_json())
        return
    where = "%s stage %s (%s)" % (res.bundle, res.stage, os.path.basename(res.model)) if res.bundle else res.model
    click.echo("%s: threshold %s, temperature %s" % (where, _num(res.threshold, threshold is not None),
                                                    _num(res.temperature, temperature is not None)))
    for note in res.notes:
        click.echo("note: %s" % note)


def _num(v: float, given: bool) -> str:
    """A value as given (0.6, never 0.6000000238418579); one that was not changed, to 6 digits."""
    return repr(float(v)) if given else "%.6g" % v


# -- pair -------------------------------------------------------------------------------------------
@click.command("pair")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Labelled data: " + DATA_HELP + ".")
@click.option("--policy", default="max-accuracy", show_default=True, help=POLICY_HELP, callback=_check_policy)
@click.option("--score", type=SCORE_CHOICES, default="margin", show_default=True, help="Confidence score.")
@click.option("--combine", type=click.Choice(["last", "best", "mean"]), default="last", show_default=True,
              help="last: the second model's answer replaces the first's; best: keep the higher-scored answer; mean: "
                   "average the two models' calibrated probabilities.")
@click.option("--calib-fraction", type=finite_range(0.05, 0.95), default=0.5, show_default=True,
              help="Share of --data (random, seed 0) used to fit temperatures and thresholds and to rank; the rest "
                   "reports.")
@click.option("--costs", default=None, help="Comma-separated cost per model (default: measured ms per image).")
@click.option("--preprocessing", default=None, help="Preprocessing for every model (default: each model's metadata, "
              "else inferred from its input). " + PREPROCESSING_HELP.split(". Default")[0] + ".")
@click.option("--output", "output_name", default=None, help="Logits output name, when models have several.")
@click.option("--output-kind", type=OUTPUT_KIND, default="auto", show_default=True, help=OUTPUT_KIND_HELP)
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True, help="Pairs to show.")
@click.option("--repeats", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="Timed single-image runs per model when measuring costs.")
@click.option("--max-pixels", type=click.IntRange(1, None), default=None, help=MAX_PIXELS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the matrix and the ranked pairs as JSON.")
def pair_cmd(models: Sequence[str], data: str, policy: str, score: str, combine: str, calib_fraction: float,
             costs: Optional[str], preprocessing: Optional[str], output_name: Optional[str], output_kind: str, top: int,
             repeats: int, max_pixels: Optional[int], as_json: bool) -> None:
    """Rank pairs of MODELS (.onnx classifiers) for a two-stage cascade.

    Shows each model's accuracy, the complementarity matrix (share of test samples where exactly one
    model is right; the paper's variant, which subtracts |err_i - err_j| / N, is in --json) and each
    ordered pair with the threshold chosen by --policy on the calibration part of --data. Pairs are
    ranked on the calibration part: by accuracy, the cheapest pair among ties (max-accuracy and
    budget), or by cost (match); the test columns report the other part. The first row is the
    recommended pair. A pair 'edgeconf cascade' would refuse (the models prepare images differently or
    name their classes differently) is ranked last, marked ✗ with the reason, and never recommended;
    nor is a pair that does not meet --policy (met: no, shown at its max-accuracy threshold): when no
    pair meets it, none is recommended and the last line says how near the nearest comes.
    """
    from edgeconf.export.api import pair_models

    given = _parse_costs(costs, len(models))
    with _progress() as prog:
        task = prog.add_task("running models on the data", total=len(models))
        res = pair_models(list(models), data, policy=policy, score=score, combine=combine,
                          calib_fraction=calib_fraction, costs=given, preprocessing=preprocessing, output=output_name,
                          repeats=repeats, output_kind=output_kind, max_pixels=max_pixels,
                          progress=lambda k: prog.advance(task, k))
    if as_json:
        _echo_json(res.to_json())
        return
    print_pairing(res, top)


def print_pairing(res: Any, top: int = 10) -> None:
    """The pairing tables, each within 80 columns, and the recommendation."""
    from rich import box
    from rich.table import Table

    con = _stdout_console()
    unit = res.cost_unit
    t = Table(title="models (cal. %d / test %d samples)" % (res.calibration_samples, res.test_samples),
              box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("model", "cal. acc", "test acc", unit, "T"):
        t.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
    for n in res.names:
        m = res.models[n]
        t.add_row(n, "%.4f" % m["calib_accuracy"], "%.4f" % m["test_accuracy"], "%.4g" % m["cost"],
                  "%.3f" % m["temperature"])
    con.print(t)
    m = Table(title="complementarity (test): exactly one model right", box=box.SIMPLE_HEAD, title_justify="left")
    m.add_column("", overflow="fold")
    for i, n in enumerate(res.names):
        m.add_column(n if len(n) <= 8 else "#%d" % (i + 1), justify="right")
    for i, n in enumerate(res.names):
        m.add_row(n if len(n) <= 8 else "#%d %s" % (i + 1, n),
                  *["—" if i == j else "%.3f" % res.complementarity.exactly_one[i, j] for j in range(len(res.names))])
    con.print(m)
    p = Table(title="pairs under %s, ranked on calibration" % res.policy, box=box.SIMPLE_HEAD, title_justify="left")
    cols = ["#", "pair", "λ", "cal. acc", "test acc", unit, "escal.", "compl."]
    if not res.policy.startswith("max"):
        cols.append("met")
    for col in cols:
        p.add_column(col, justify="left" if col == "pair" else "right", overflow="fold")
    for i, r in enumerate(res.pairs[:top]):
        row = [str(i + 1) if r.buildable else "✗", "%s → %s" % (r.first, r.second), "%.4f" % r.threshold,
               "%.4f" % r.calib_accuracy,
               "%.4f" % r.accuracy, "%.4g" % r.cost, "%.3f" % r.escalation, "%.3f" % r.complementarity]
        if not res.policy.startswith("max"):
            row.append("yes" if r.feasible else "no")
        p.add_row(*row)
    con.print(p)
    for r in res.pairs[:top]:
        if not r.buildable:
            con.print("✗ %s → %s cannot be built as a cascade: %s" % (r.first, r.second, r.why), markup=False)
    best = res.recommended
    shortfall = res.policy_shortfall
    if best is None and shortfall is not None:
        fix = "raise the budget" if res.policy.startswith("budget") else "lower the target"
        con.print("recommended: none: %s; %s, or rank with --policy max-accuracy" % (shortfall, fix), markup=False)
    elif best is None:
        con.print("recommended: none: no pair of these models can be built as a cascade (each ✗ line says why); "
                  "re-export the models with one preprocessing and the same class names")
    else:
        con.print("recommended: [bold]%s → %s[/] (λ = %.4f)" % (best.first, best.second, best.threshold))
    for note in res.notes:
        con.print("note: %s" % note)


# -- cascade ----------------------------------------------------------------------------------------
@click.command("cascade")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--data", required=True,
              help="Labelled data: " + DATA_HELP + ". Split into calibration and test parts unless --test is given.")
@click.option("--test", "test_data", default=None, help="Separate labelled test data; then all of --data calibrates.")
@click.option("--policy", default="max-accuracy", show_default=True, help=POLICY_HELP, callback=_check_policy)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--score", type=SCORE_CHOICES, default="margin", show_default=True, help="Confidence score.")
@click.option("--combine", type=click.Choice(["auto", "last", "best", "mean"]), default="auto", show_default=True,
              help="last: a later stage's answer replaces the earlier; best: keep the higher-scored answer; mean: "
                   "average the calibrated probabilities of every stage that ran; auto: search thresholds for each "
                   "rule on the calibration data and keep the one the policy prefers (ties: last).")
@click.option("--fuse", "fuse", is_flag=True,
              help="Also write the cascade as one ONNX graph into the bundle (as 'edgeconf fuse OUT' does).")
@click.option("--calib-fraction", type=finite_range(0.05, 0.95), default=0.5, show_default=True,
              help="Share of --data (random, seed 0) used for calibration when --test is not given.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
              help="Class names: one per line, or a JSON list (default: the models' metadata, else the data's "
                   "class names).")
@click.option("--preprocessing", default=None,
              help="The bundle's preprocessing (default: the first model's metadata, else inferred). Every stage must "
                   "prepare images the same way: a model recorded with another preprocessing is refused; one that "
                   "differs only in layout gets a Transpose in front. " + PREPROCESSING_HELP.split(". Default")[0] + ".")
@click.option("--costs", default=None, help="Comma-separated cost per model (default: measured ms per image).")
@click.option("--output", "output_name", default=None, help="Logits output name, when models have several.")
@click.option("--output-kind", type=OUTPUT_KIND, default="auto", show_default=True, help=OUTPUT_KIND_HELP)
@click.option("--name", default="cascade", show_default=True, help="Bundle name.")
@click.option("--repeats", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="Timed single-image runs per model when measuring costs.")
@click.option("--int8", is_flag=True,
              help="Quantize every stage to INT8 (QDQ) on the calibration data first; temperatures, thresholds and "
                   "costs are then chosen on the INT8 stages' outputs.")
@int8_options
@click.option("--max-pixels", type=click.IntRange(1, None), default=None, help=MAX_PIXELS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
def cascade_cmd(models: Sequence[str], data: str, test_data: Optional[str], policy: str, out: str, score: str,
                combine: str, fuse: bool, calib_fraction: float, labels_file: Optional[str], preprocessing: Optional[str],
                costs: Optional[str], output_name: Optional[str], output_kind: str, name: str, repeats: int,
                int8: bool, int8_method: str, int8_budget: float, int8_ece_budget: float, calib_samples: int,
                max_pixels: Optional[int], as_json: bool) -> None:
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
    labels = read_labels(labels_file) if labels_file else None
    given = _parse_costs(costs, len(models))
    with _stderr_console().status("building the cascade (calibration, cost measurement, thresholds)"):
        report = build_cascade(list(models), data, test_data, out=out, policy=policy, score=score, combine=combine,
                               labels=labels, preprocessing=preprocessing, costs=given, output=output_name, name=name,
                               cost_repeats=repeats, calib_fraction=None if test_data else calib_fraction,
                               output_kind=output_kind, max_pixels=max_pixels,
                               int8=dict(_int8_kwargs(int8_method, int8_budget, int8_ece_budget, calib_samples),
                                         cpu_rounds=0) if int8 else None)
    fused = None
    if fuse:
        from edgeconf.export.fuse import fuse_bundle

        with _stderr_console().status("writing the fused graph and checking it against the staged cascade"):
            fused = fuse_bundle(out)
    if as_json:
        data_out = report.to_json()
        data_out["fused"] = fused.to_json() if fused is not None else None
        _echo_json(data_out)
        return
    print_build(report, policy, "ms" if given is None else "cost")
    if fused is not None:
        trt = ("TensorRT %s+" % fused.tensorrt_min if fused.tensorrt_reason is None
               else "TensorRT: %s, the staged bundle is used there" % fused.tensorrt_reason)
        _stdout_console().print("fused graph: %s (%s; %d probe images answered as the staged cascade)"
                                % (fused.path, trt, fused.checked_inputs))


def print_build(report: Any, policy: str, unit: str) -> None:
    """The stages and the operating point, each table within 80 columns."""
    from rich import box
    from rich.table import Table

    con = _stdout_console()
    t = Table(title="stages", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("stage", "source", "T", "ECE before → after", unit, "test acc"):
        t.add_column(col, justify="left" if col in ("stage", "source") else "right", overflow="fold")
    for s in report.stages:
        c = s.cost.get("ms", s.cost.get("value"))
        t.add_row(s.name, os.path.basename(s.source), "%.3f" % s.temperature,
                  "%.4f → %.4f" % (s.calibration.ece_before, s.calibration.ece_after), "%.4g" % c,
                  "%.4f" % s.test_accuracy if s.test_accuracy is not None else "—")
    con.print(t)
    op, te = report.operating_point, report.test
    o = Table(title="operating point (%s)" % policy, box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("split", "thresholds", "accuracy", unit, "escalation"):
        o.add_column(col, justify="left" if col in ("split", "thresholds") else "right", overflow="fold")
    o.add_row("calibration", ", ".join("%.4f" % v for v in op.thresholds), "%.4f" % op.accuracy, "%.4g" % op.cost,
              "%.3f" % op.escalation)
    if te is not None:
        o.add_row("test", ", ".join("%.4f" % v for v in te.thresholds), "%.4f" % te.accuracy, "%.4g" % te.cost,
                  "%.3f" % te.escalation)
    if report.runtime_test is not None:
        rt = report.runtime_test
        o.add_row("test (bundle run)", "", "%.4f" % rt["accuracy"], "", "%.3f" % rt["escalation"])
    con.print(o)
    cands = getattr(report, "combine_candidates", None)
    if cands:
        c = Table(title="combine rule (chosen: %s)" % report.combine, box=box.SIMPLE_HEAD, title_justify="left")
        for col in ("rule", "calib acc", unit, "thresholds"):
            c.add_column(col, justify="left" if col in ("rule", "thresholds") else "right", overflow="fold")
        for rule, p in cands.items():
            if p is None:
                c.add_row(rule, "—", "—", "policy not met")
            else:
                c.add_row(rule, "%.4f" % p.accuracy, "%.4g" % p.cost, ", ".join("%.4f" % v for v in p.thresholds))
        con.print(c)
    for q in report.int8 or []:
        con.print("%s: INT8 with %s calibration, %d of %d layers in float%s" % (
            q["stage"], q["method"], len(q["float_layers"]), q["quantized_layers"],
            "" if q["int8_accuracy"] is None else "; test accuracy %.4f (float %.4f), ECE %.4f (float %.4f)" % (
                q["int8_accuracy"], q["float_accuracy"], q["int8_ece"], q["float_ece"])))
    for note in report.notes:
        con.print("note: %s" % note)
    con.print("wrote bundle [bold]%s[/]" % report.bundle)


__all__ = ["export_cmd", "retune_cmd", "pair_cmd", "cascade_cmd"]
