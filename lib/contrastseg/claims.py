"""The claims ledger: each paper's central claims, measured as paired differences over seeds, each with a verdict.

A claim compares a row with its baseline row (config overrides on one preset) on one test metric, paired by seed:
per seed, the row's value minus the baseline's with the same seed; then the mean difference and its 95 % paired
t-interval (``tables.t_interval``). The verdict rule (``verdict``): **supported** when the whole interval lies above
0, **contradicted** when it lies below 0, **inconclusive** otherwise, and with fewer than 2 seeds. A verdict holds
at the preset it was measured at, and no further.

Tuned on val, reported on test. The contrastive weight of pixel contrast and of Contextrast is chosen among
``TUNING_WEIGHTS`` by the mean val mIoU of tuning runs whose seeds the ledger does not use (``choose_weight``), and
"the best single region loss" of RC²L by the val mIoU of the ledger's own runs; every difference of the ledger is
then read on the test split (``eval_split="test"``, as many images as val), so a choice made on val does not
inflate it.

Records. Each (row, seed) is measured once into a flat record (``measure``): the run's config hash, its val and test
metrics, the EMA teacher's test metrics for a semi-supervised run, the 5-NN accuracy of its backbone's pixel
features on test images, its learning curve when it has one, what its method did (``tables.run_activity``), its
training time and commit. ``measure_rows`` appends the records to a JSON-lines file as they come and takes back
those the file holds for the same run key, so a batch that stopped resumes where it stopped, and the file, small
and without checkpoints, can be kept in git where the run store cannot.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from contrastseg import runs, tables
from contrastseg.config import ExperimentConfig
from contrastseg.config import preset as preset_config
from contrastseg.export import deployment_costs
from contrastseg.methods import METHODS, method_named
from contrastseg.paths import REPOSITORY

TUNING_WEIGHTS = (0.01, 0.03, 0.1, 0.3, 1.0)
"""Contrastive weights tried on val: the reference's configs use 0.1, the authors' journal extension states 1."""
VERDICTS = ("supported", "contradicted", "inconclusive")
RECORD_FORMAT = 1  # bump when a record's fields change meaning; records of another format are measured again
KNN_POINTS_PER_CLASS = 100  # test pixels per class for the 5-NN accuracy, from the first KNN_IMAGES test images
KNN_IMAGES = 16
REGION_LOSSES = METHODS["rc2l"].config.REGION_LOSSES  # RC²L's four region losses, in the paper's order


def share_name(fraction: float) -> str:
    """A label share as the papers write it: 0.125 -> "1/8"; 1 -> "full"."""
    return f"1/{round(1 / fraction)}" if fraction < 1 else "full"


def ledger_rows(pixel_weight: float, contextrast_weight: float, fractions: tuple[float, ...] = (0.125, 0.5),
                eval_every: int = 0) -> dict[str, dict]:
    """Row name -> config overrides of every row the claims compare.

    Args:
        pixel_weight, contextrast_weight: contrastive weights of the pixel-contrast and Contextrast rows (chosen on
            val, ``choose_weight``).
        fractions: label shares of RC²L and its supervised baseline; the ablation rows (no region loss, one region
            loss) run at the first.
        eval_every: learning-curve interval of every row (0: none).
    """
    curve = {"eval_every": eval_every} if eval_every else {}
    pixel = {"method": "pixel_contrast", "contrast_weight": pixel_weight} | curve
    contextrast = {"method": "contextrast", "contrast_weight": contextrast_weight} | curve
    rows = {
        "CE": {"method": "ce"} | curve,
        "pixel contrast, in-batch": pixel,
        "pixel contrast, + pixel and segment memory": pixel | {"memory": "both"},
        "pixel contrast, random anchors": pixel | {"anchor_sampling": "random"},
        "Contextrast, CCL": contextrast | {"bane": "off"},
        "Contextrast, last level only": contextrast | {"bane": "off", "contrast_levels": 1},
        "Contextrast, CCL + BANE": contextrast,
    }
    for fraction in fractions:
        rows[f"supervised, {share_name(fraction)}"] = {"method": "mask_classification",
                                                       "label_fraction": fraction} | curve
        rows[f"RC²L, {share_name(fraction)}"] = {"method": "rc2l", "label_fraction": fraction} | curve
    first = share_name(fractions[0])
    semi = rows[f"RC²L, {first}"]
    rows[f"RC²L without region losses, {first}"] = semi | {"region_losses": ""}
    for name in REGION_LOSSES:
        rows[f"RC²L, {name.upper()} only, {first}"] = semi | {"region_losses": name}
    return rows


TUNED_METHODS = {"pixel contrast": {"method": "pixel_contrast"}, "Contextrast": {"method": "contextrast"}}
"""The methods whose contrastive weight is tuned, as their full form (pixel contrast in-batch, CCL + BANE)."""


def tuning_rows(weights: tuple[float, ...] = TUNING_WEIGHTS, eval_every: int = 0) -> dict[str, dict]:
    """Row name -> overrides of the weight search: each of ``TUNED_METHODS`` at each weight."""
    curve = {"eval_every": eval_every} if eval_every else {}
    return {f"{method}, weight {weight:g}": overrides | {"contrast_weight": weight} | curve
            for method, overrides in TUNED_METHODS.items() for weight in weights}


def chosen_weights(tuning: pd.DataFrame, weights: tuple[float, ...] = TUNING_WEIGHTS) -> dict[str, float]:
    """Per tuned method, the weight ``choose_weight`` picks from the weight search's records."""
    return {method: choose_weight(tuning, {weight: f"{method}, weight {weight:g}" for weight in weights})[0]
            for method in TUNED_METHODS}


@dataclass(frozen=True)
class Claim:
    """One central claim: ``row`` beats ``baseline`` on ``metric`` of the test split.

    Attributes:
        paper: "pixel_contrast", "contextrast", "rc2l", or "control" (not a paper's claim: a check that separates
            two effects).
        text: the claim in one sentence.
        row, baseline: row names of ``ledger_rows``; ``"<BEST_SINGLE>, <share>"`` names the single-region-loss row
            with the best val mIoU at that share (``best_single_region_loss``).
        metric: a record column of the test split: "miou", "boundary_iou", "knn_accuracy"; "teacher_miou" reads the
            EMA teacher of ``row``.
        reported: (paper, table, row, baseline row) of ``reported_numbers.yaml`` that evidence the claim, or None.
    """

    paper: str
    text: str
    row: str
    baseline: str
    metric: str = "miou"
    reported: tuple[str, str, str, str] | None = None

    @property
    def name(self) -> str:
        return f"{self.row} - {self.baseline}" + ("" if self.metric == "miou" else f" ({self.metric})")


BEST_SINGLE = "best single region loss"


def ledger_claims(fractions: tuple[float, ...] = (0.125, 0.5)) -> list[Claim]:
    """The claims, in the ledger's order, for RC²L's label ``fractions`` (the ablations at the first)."""
    claims = [
        Claim("pixel_contrast", "Pixel contrast in the batch improves on cross-entropy.",
              "pixel contrast, in-batch", "CE", reported=("pixel_contrast", "objectives", "+ in-batch contrast", "CE")),
        Claim("pixel_contrast", "A pixel and a segment memory improve on in-batch contrast alone.",
              "pixel contrast, + pixel and segment memory", "pixel contrast, in-batch",
              reported=("pixel_contrast", "objectives", "+ both memories", "+ in-batch contrast")),
        Claim("pixel_contrast", "Hard anchor sampling improves on random anchors.",
              "pixel contrast, in-batch", "pixel contrast, random anchors"),
        Claim("pixel_contrast", "Contrast makes pixel features more separable than cross-entropy (5-NN accuracy of "
              "backbone features).", "pixel contrast, in-batch", "CE", metric="knn_accuracy"),
        Claim("contextrast", "Contextual contrastive learning (4 levels, anchor mixing) improves on cross-entropy.",
              "Contextrast, CCL", "CE"),
        Claim("contextrast", "The full method (CCL + BANE) improves on cross-entropy.", "Contextrast, CCL + BANE", "CE",
              reported=("contextrast", "components", "CCL + BANE", "CE")),
        Claim("contextrast", "CCL improves on pixel-to-anchor contrast on the last level only.",
              "Contextrast, CCL", "Contextrast, last level only"),
        Claim("contextrast", "Boundary-aware negatives (BANE) improve CCL.", "Contextrast, CCL + BANE",
              "Contextrast, CCL"),
        Claim("contextrast", "BANE improves boundary IoU.", "Contextrast, CCL + BANE", "Contextrast, CCL",
              metric="boundary_iou", reported=("contextrast", "boundaries", "CCL + BANE", "CE")),
    ]
    for fraction in fractions:
        share = share_name(fraction)
        claims.append(Claim("rc2l", f"RC²L improves on supervised-only training at {share} labels (student).",
                            f"RC²L, {share}", f"supervised, {share}"))
        claims.append(Claim("rc2l", f"The same, read on RC²L's EMA teacher at {share} labels.",
                            f"RC²L, {share}", f"supervised, {share}", metric="teacher_miou"))
    first = share_name(fractions[0])
    claims += [
        Claim("rc2l", f"The region losses, not the student's extra forward passes on unlabeled images, make the gain "
              f"({first}).", f"RC²L, {first}", f"RC²L without region losses, {first}"),
        Claim("rc2l", f"All four region losses together improve on the best single one ({first}; the best single "
              f"one chosen on val).", f"RC²L, {first}", f"{BEST_SINGLE}, {first}"),
        Claim("control", f"Running the student on unlabeled images without any region loss changes nothing "
              f"({first}).", f"RC²L without region losses, {first}", f"supervised, {first}"),
    ]
    return claims


# --- measuring ------------------------------------------------------------------------------------------------------

def record_key(cfg: ExperimentConfig) -> str:
    """What a record is of: the run's hash and the record format (the test protocol is fixed by the config)."""
    return f"{cfg.hash()}-r{RECORD_FORMAT}"


def measure(result: runs.RunResult, progress: bool = False) -> dict:
    """The ledger's record of one finished run (see the module docstring); NaN where a quantity does not apply."""
    cfg = result.config
    val = result.metrics["val"]
    test = result.evaluate(progress=progress, eval_split="test")
    semi = method_named(cfg.method).semi_supervised
    teacher = result.evaluate(progress=progress, teacher=True, eval_split="test") if semi else {}
    activity = tables.run_activity(result)
    nan = float("nan")
    return {
        "key": record_key(cfg), "config": cfg.hash(), "method": cfg.method, "seed": cfg.seed,
        "val_miou": val["miou"], "val_boundary_iou": val["boundary_iou"],
        "miou": test["miou"], "pixel_accuracy": test["pixel_accuracy"], "boundary_iou": test["boundary_iou"],
        "per_class_iou": [round(float(v), 4) for v in test["per_class_iou"]],
        "per_class_boundary_iou": [round(float(v), 4) for v in test.get("per_class_boundary_iou", [])],
        "teacher_miou": teacher.get("miou", nan), "teacher_boundary_iou": teacher.get("boundary_iou", nan),
        "knn_accuracy": backbone_knn_accuracy(result) if cfg.head != "mask_classification" else nan,
        "learning_curve": [{k: round(float(v), 4) for k, v in point.items()} for point in result.learning_curve()]
        if cfg.eval_every else [],
        "method_active": activity["active_share"],
        "activity": tables.activity_line(activity, cfg.method),
        "train_seconds": result.metrics.get("train_seconds", nan), "commit": result.trained_commit,
    }


def backbone_knn_accuracy(result: runs.RunResult) -> float:
    """Leave-one-out 5-NN accuracy of the backbone's last-level pixel features on the first test images
    (``KNN_POINTS_PER_CLASS`` per class): the same features for every method, projection head or not."""
    from contrastseg import explore, viz

    sample = explore.cached_pixel_sample(result, split="test", images=KNN_IMAGES, per_class=KNN_POINTS_PER_CLASS,
                                         output="backbone")
    return viz.knn_accuracy(sample.embeddings, sample.labels, k=5)


def records_path(path: str | Path) -> Path:
    """A records file's path; a relative one is read from the repository's root, wherever the caller runs (a
    notebook runs in its own folder)."""
    return Path(path) if Path(path).is_absolute() else REPOSITORY / path


def read_records(path: str | Path | None) -> dict[str, dict]:
    """The records of a JSON-lines file by key (the last one of a key wins); {} without a file."""
    if not path or not records_path(path).is_file():
        return {}
    path = records_path(path)
    records = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not a JSON record ({error}); remove the line to measure "
                                 f"that run again") from error
            records[record["key"]] = record
    return records


def measure_rows(rows: dict[str, dict], preset: str, seeds: list[int], *, records_file: str | Path | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """Train (or take from the run store or ``records_file``) and measure every (row, seed), seed after seed, so a
    batch stopped early has every row at its first seeds.

    Args:
        rows: row name -> config overrides on ``preset``.
        records_file: JSON lines of earlier records (relative: to the repository's root); each new record is
            appended as soon as it is measured. A record is taken back only for the same run key (``record_key``:
            the config's hash, which holds ``RESULTS_FORMAT``, and ``RECORD_FORMAT``).

    Returns:
        One record per (row, seed) with its "row" name, in seed then row order.
    """
    known = read_records(records_file)
    measured, pairs = [], [(seed, name) for seed in seeds for name in rows]
    for number, (seed, name) in enumerate(pairs, 1):
        cfg = preset_config(preset, **(rows[name] | {"seed": seed}))
        record = known.get(record_key(cfg))
        if record is None:
            record = measure(runs.get_or_train(cfg, progress=progress), progress=progress)
            if records_file:
                with open(records_path(records_file), "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record, allow_nan=True) + "\n")
            known[record["key"]] = record
            print(f"[{number}/{len(pairs)}] {name}, seed {seed}: val mIoU {record['val_miou']:.3f}, test mIoU "
                  f"{record['miou']:.3f}, {record['train_seconds']:.0f} s", flush=True)
        measured.append({"row": name} | record)
    return pd.DataFrame.from_records(measured)


def choose_weight(tuning: pd.DataFrame, rows_by_weight: dict[float, str]) -> tuple[float, pd.Series]:
    """The weight whose row has the highest mean val mIoU over the tuning seeds (ties: the smaller weight).

    Returns:
        (weight, mean val mIoU per weight).
    """
    means = pd.Series({weight: tuning.loc[tuning["row"] == row, "val_miou"].mean()
                       for weight, row in rows_by_weight.items()}, name="val_miou")
    best = means.max()
    return float(min(weight for weight, value in means.items() if value == best)), means


def resolve_row(per_seed: pd.DataFrame, name: str) -> str:
    """A claim's row name as a row of ``per_seed``: ``"<BEST_SINGLE>, <share>"`` becomes the chosen row."""
    if name.startswith(f"{BEST_SINGLE}, "):
        return best_single_region_loss(per_seed, name.removeprefix(f"{BEST_SINGLE}, "))
    return name


def best_single_region_loss(per_seed: pd.DataFrame, share: str) -> str:
    """The row of the single region loss with the highest mean val mIoU (at ``share``)."""
    singles = [f"RC²L, {name.upper()} only, {share}" for name in REGION_LOSSES]
    means = per_seed[per_seed["row"].isin(singles)].groupby("row")["val_miou"].mean()
    return str(means.idxmax())


# --- verdicts -------------------------------------------------------------------------------------------------------

def verdict(ci_low: float, ci_high: float) -> str:
    """The ledger's rule: "supported" when the interval lies above 0, "contradicted" when below, else
    "inconclusive" (also without an interval: fewer than 2 seeds)."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "inconclusive"
    if ci_low > 0:
        return "supported"
    if ci_high < 0:
        return "contradicted"
    return "inconclusive"


def ledger_table(per_seed: pd.DataFrame, claims: list[Claim], preset: str, confidence: float = 0.95) -> pd.DataFrame:
    """One row per claim: paper, claim, compared rows, metric, the paper's evidence, our mean paired difference,
    its t-interval, the seeds, the verdict, and the per-seed differences."""
    by_metric: dict[str, pd.DataFrame] = {}  # metric -> (seed x row) values, pivoted once

    def values_of(metric: str, row: str) -> pd.Series:
        if metric not in by_metric:
            by_metric[metric] = per_seed.pivot(index="seed", columns="row", values=metric)
        return by_metric[metric][row]

    records = []
    for claim in claims:
        row, baseline = (resolve_row(per_seed, name) for name in (claim.row, claim.baseline))
        metric = claim.metric
        baseline_metric = "miou" if metric == "teacher_miou" else metric  # a teacher against a supervised student
        difference = (values_of(metric, row) - values_of(baseline_metric, baseline)).dropna()
        low, high = tables.t_interval(difference.to_numpy(), confidence)  # (nan, nan) below 2 seeds
        records.append({"paper": claim.paper, "claim": claim.text, "row": row, "baseline": baseline,
                        "metric": metric, "paper_evidence": reported_evidence(claim),
                        "difference": float(difference.mean()) if len(difference) else math.nan,
                        "ci_low": low, "ci_high": high, "seeds": len(difference),
                        "verdict": verdict(low, high), "preset": preset,
                        "per_seed": [round(float(v), 4) for v in difference]})
    return pd.DataFrame.from_records(records)


def reported_evidence(claim: Claim) -> str:
    """The paper's evidence for ``claim`` from ``reported_numbers.yaml``: per setting where both of its reported rows
    were read, their difference; else the row's own number. "none found" when there is nothing."""
    if claim.reported is None:
        return "none found"
    paper, table, row, baseline = claim.reported
    numbers = tables.reported_numbers(paper, table)
    mine, theirs = numbers[numbers["row"] == row], numbers[numbers["row"] == baseline]
    parts = []
    for entry in mine.to_dict("records"):
        match = [other for other in theirs.to_dict("records") if same_setting(entry["setting"], other["setting"])]
        status = "verified" if entry["verified"] else "unverified"
        where = f"{entry['setting']}; {entry['source']}; {status}"
        if match:
            parts.append(f"{row} - {baseline}: {entry['value'] - match[0]['value']:+.2f} {entry['metric']} ({where})")
        else:
            parts.append(f"{row}: {entry['value']:.2f} {entry['metric']}, no {baseline} beside it ({where})")
    return "; ".join(parts) if parts else "none found"


def same_setting(first: str, second: str) -> bool:
    """Two reported settings are the same experiment when their data set and model (the first two comma-separated
    parts, remarks in parentheses left out) agree, e.g. "Cityscapes val, HRNet-W48, 40k it" and "Cityscapes val,
    HRNet-W48, no memory"."""
    def core(setting: str) -> list[str]:
        return [re.sub(r"\s*\(.*?\)", "", part).strip() for part in setting.split(";")[0].split(",")[:2]]
    return core(first) == core(second)


def why_rows(weights: tuple[float, ...] = TUNING_WEIGHTS, steps: int = 300, long_steps: int = 900,
             curve_points: int = 12) -> dict[str, dict]:
    """Row name -> overrides of the runs that ask why the methods lost at smoke: CE, and pixel contrast (in-batch)
    and Contextrast (CCL + BANE) at each weight, all with a learning curve of ``curve_points`` points; both methods
    at weight 0.1 with a warm-up (weight 0 for the first third of the steps); and CE and both methods trained
    ``long_steps`` (0: no long runs)."""
    curve = {"steps": steps, "eval_every": max(steps // curve_points, 1)}
    rows = {"CE": {"method": "ce"} | curve}
    for method, overrides in TUNED_METHODS.items():
        rows |= {f"{method}, weight {weight:g}": overrides | {"contrast_weight": weight} | curve for weight in weights}
        rows[f"{method}, weight 0.1, warm-up"] = overrides | {"contrast_weight": 0.1,
                                                               "contrast_warmup": steps // 3} | curve
    if long_steps:
        long_curve = {"steps": long_steps, "eval_every": max(long_steps // curve_points, 1)}
        rows[f"CE, {long_steps} steps"] = {"method": "ce"} | long_curve
        for method, overrides in TUNED_METHODS.items():
            rows[f"{method}, weight 0.1, {long_steps} steps"] = overrides | {"contrast_weight": 0.1} | long_curve
    return rows


# --- inference cost -------------------------------------------------------------------------------------------------

def inference_cost(cfg: ExperimentConfig) -> dict:
    """Parameters and FLOPs of the deployed model of ``cfg``: the parameters the prediction depends on (those that
    get a gradient from the class scores of an eval-mode forward pass; projection heads, auxiliary heads and an
    objective's own modules do not), all the model's parameters, and the forward FLOPs of one ``image_size`` image
    (``torch.utils.flop_counter``); from ``export.deployment_costs``.
    """
    costs = deployment_costs(cfg)
    return {"parameters": costs["prediction_parameters"], "all_parameters": costs["model_parameters"],
            "flops": costs["deployed_flops"]}


def inference_costs(rows: dict[str, dict], preset: str) -> pd.DataFrame:
    """``inference_cost`` of each row's model on ``preset`` (one row per config)."""
    return pd.DataFrame.from_records([{"row": name} | inference_cost(preset_config(preset, **overrides))
                                      for name, overrides in rows.items()]).set_index("row")


def forest_plot(table: pd.DataFrame, ax=None):
    """The ledger's figure: each claim's mean paired difference with its interval, one line per claim, coloured by
    verdict, on a zero line; returns the figure."""
    import matplotlib.pyplot as plt

    colours = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:grey"}
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.36 * len(table) + 1.0))
    positions = np.arange(len(table))[::-1]
    for y, record in zip(positions, table.to_dict("records")):
        colour = colours[record["verdict"]]
        ax.plot([record["ci_low"], record["ci_high"]], [y, y], color=colour, lw=2)
        ax.plot(record["difference"], y, "o", color=colour)
        ax.plot(record["per_seed"], [y] * len(record["per_seed"]), "|", color="black", ms=6, alpha=0.6)
    ax.axvline(0, color="black", lw=0.8)
    labels = [f"{r['row']} - {r['baseline']}" + ("" if r["metric"] == "miou" else f" [{r['metric']}]")
              for r in table.to_dict("records")]
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_xlabel("test difference to the baseline (mean, 95 % paired t-interval; ticks: seeds)")
    handles = [plt.Line2D([], [], color=c, lw=2, label=v) for v, c in colours.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.figure.tight_layout()
    return ax.figure


def preset_steps(preset: str) -> int:
    """Training steps of ``preset``'s CE baseline."""
    return preset_config(preset).steps


def write_report(path: str | Path, ledger: pd.DataFrame, costs: pd.DataFrame, cost_verdict: str,
                 weights: dict[str, float], per_seed: pd.DataFrame, preset: str, seeds: list[int],
                 figure: str | Path | None = None, command: str = "") -> Path:
    """The ledger as a Markdown file: machine, versions, command and training time first, then the verdict table,
    the forest plot (copied beside the file as ``<stem>_forest.png``) and the inference costs."""
    import platform
    import shutil

    from contrastseg.provenance import git_commit

    path = Path(path)
    lines = [f"# Claims ledger at the {preset} preset", "",
             f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
             f"torch {torch.__version__}, Python {platform.python_version()}; commit {git_commit()}",
             f"- command: `{command or 'papermill notebooks/claims.ipynb (parameters: see benchmarks/claims_laptop.yaml)'}`",
             f"- seeds {list(seeds)}; contrastive weights chosen on val: "
             + ", ".join(f"{method} {weight:g}" for method, weight in weights.items()),
             f"- training time of the ledger's {per_seed['config'].nunique()} runs: "
             f"{per_seed.drop_duplicates('config')['train_seconds'].sum() / 3600:.2f} h (sum of the runs' own "
             f"training times, evaluations not included)",
             "- verdict rule: supported when the 95 % paired t-interval of the mean test difference lies above 0, "
             "contradicted when below 0, inconclusive otherwise", "",
             "| paper | claim | row - baseline | metric | ours: difference [95 % CI] | seeds | verdict | paper's evidence |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ledger.to_dict("records"):
        lines.append(f"| {r['paper']} | {r['claim']} | {r['row']} - {r['baseline']} | {r['metric']} | "
                     f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['seeds']} | "
                     f"**{r['verdict']}** | {r['paper_evidence']} |")
    lines.append(f"| all | No method changes the inference cost. | deployed models | parameters, FLOPs | "
                 f"see below | - | **{cost_verdict}** | - |")
    if figure and Path(figure).is_file():
        target = path.with_name(f"{path.stem}_forest.png")
        shutil.copyfile(figure, target)
        lines += ["", f"![forest plot]({target.name})"]
    lines += ["", "Inference cost of the deployed models (parameters the prediction depends on, forward FLOPs of "
              "one image at the preset's size):", "", "| model | parameters | all parameters | FLOPs |",
              "|---|---|---|---|"]
    lines += [f"| {name} | {row['parameters']:,} | {row['all_parameters']:,} | {row['flops']:.3g} |"
              for name, row in costs.iterrows()]
    path.write_text("\n".join(lines) + "\n")
    return path
