"""``edgeconf ood``: fit an out-of-distribution score for a bundle stage, so inputs that are no class are answered
``unknown`` (method and data in :mod:`edgeconf.export.ood`)."""
from __future__ import annotations

import json
from typing import Optional

import click

from edgeconf.commands import finite_range
from edgeconf.export.data import DATA_HELP, load_npz


@click.command("ood")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False),
              help="Labelled in-distribution inputs: %s." % DATA_HELP)
@click.option("--negatives", default=None, type=click.Path(dir_okay=False),
              help="Inputs that are no class (background, merged objects, slivers): an .npz with an array x.")
@click.option("--positives", default=None, type=click.Path(dir_okay=False),
              help="More in-distribution inputs without labels (e.g. crops of real objects): an .npz with x.")
@click.option("--stage", type=click.IntRange(min=1), default=1, show_default=True, help="Stage to fit (1 = first).")
@click.option("--method", type=click.Choice(["auto", "mahalanobis", "learned"]), default="auto", show_default=True,
              help="auto: learned with --negatives, mahalanobis without.")
@click.option("--keep", type=finite_range(0.5, 1.0, max_open=True), default=0.995, show_default=True,
              help="Share of held-out in-distribution inputs that must stay below the threshold.")
@click.option("--escalate-keep", type=finite_range(0.5, 1.0, max_open=True), default=None,
              help="Also fit a doubt band: held-out inputs above this quantile (below --keep) may not be answered by "
                   "this stage and go on to the next, whose own OOD rule judges them.")
@click.option("--holdout", type=finite_range(0.05, 0.8), default=0.3, show_default=True,
              help="Share of each data set kept out of the fit to choose the threshold on.")
@click.option("--feature", default=None, help="Graph tensor the score reads (default: the logits layer's input).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for ONNX Runtime and torch.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def ood_cmd(bundle: str, data: str, negatives: Optional[str], positives: Optional[str], stage: int, method: str,
            keep: float, escalate_keep: Optional[float], holdout: float, feature: Optional[str], seed: int,
            threads: Optional[int], as_json: bool) -> None:
    """Fit an OOD score for a stage of BUNDLE and write it into the bundle.

    The stage's ONNX graph gains the outputs ood (higher = further out of distribution) and unknown; the fitted
    arrays go to BUNDLE/ood/<stage>.npz (plain arrays) and the threshold to edgeconf.json. From then on the
    cascade answers "unknown" (class -1) for inputs past the threshold, and no later stage runs on them.
    """
    from edgeconf.export.ood import fit_stage_ood

    x, y = load_npz(data)
    neg = load_npz(negatives, need_labels=False)[0] if negatives else None
    pos = load_npz(positives, need_labels=False)[0] if positives else None
    report = fit_stage_ood(bundle, x, y, negatives=neg, stage=stage - 1, method=method, keep=keep, holdout=holdout,
                           feature=feature, seed=seed, threads=threads, extra_positives=pos, escalate_keep=escalate_keep)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    r = report
    neg_txt = "" if r.held_out_negatives_unknown is None else \
        ", %.2f %% of held-out negatives unknown" % (100 * r.held_out_negatives_unknown)
    band = "" if r.fit.escalate is None else " (doubt band from %.6g: goes on to the next stage)" % r.fit.escalate
    click.echo("%s: %s OOD score on %s, threshold %.6g%s; %.2f %% of held-out in-distribution inputs known%s"
               % (r.stage, r.fit.method, r.fit.feature, r.fit.threshold, band, 100 * r.held_out_known, neg_txt))
