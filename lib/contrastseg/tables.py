"""Table notebooks: train each row of a table over several seeds, summarise, put reported numbers beside ours.

A table is a dict of row name -> config overrides. ``train_rows`` trains (or loads from the run store) every
(row, seed) pair on one preset and returns one record per pair; ``summarize`` gives mean and standard deviation per
row; ``paired_differences`` a row minus its baseline per seed, with a bootstrap interval (``bootstrap_interval``);
``reported_numbers`` returns what the papers' authors or others reported for the same table, with source and
verification status (``reported_numbers.yaml``).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import yaml
from numpy.typing import ArrayLike

from contrastseg import runs
from contrastseg.config import preset as preset_config

METRICS = ("miou", "pixel_accuracy", "boundary_iou", "boundary_f")


def train_rows(rows: dict[str, dict], preset: str, seeds: list[int], *, steps: int = 0,
               progress: bool = True) -> pd.DataFrame:
    """Train every (row, seed) and collect its val metrics; side by side on several GPUs when there are
    (``runs.get_or_train_many``).

    Args:
        rows: row name -> ExperimentConfig overrides (on top of the preset).
        preset: "smoke" or "demo".
        seeds: one run per seed and row.
        steps: override of the preset's steps (0 keeps them).

    Returns:
        One record per (row, seed): row, seed, the ``METRICS`` (NaN where a run predates a metric),
        seconds_per_step, config.
    """
    keys = [(name, seed) for name in rows for seed in seeds]
    configs = [preset_config(preset, **(rows[name] | {"seed": seed} | ({"steps": steps} if steps else {})))
               for name, seed in keys]
    records = []
    for (name, seed), result in zip(keys, runs.get_or_train_many(configs, progress=progress)):
        val = result.metrics["val"]
        records.append({"row": name, "seed": seed, **{m: val.get(m, float("nan")) for m in METRICS},
                        "seconds_per_step": result.metrics["train_seconds"] / result.config.steps,
                        "config": result.config.hash()})
    return pd.DataFrame.from_records(records)


def summarize(per_seed: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1; 0 with one seed) per row, rows in their original order."""
    order = list(dict.fromkeys(per_seed["row"]))
    grouped = per_seed.groupby("row", sort=False)
    table = pd.DataFrame(index=pd.Index(order, name="row"))
    for metric in metrics:
        table[f"{metric}_mean"] = grouped[metric].mean()
        table[f"{metric}_std"] = grouped[metric].std(ddof=1).fillna(0.0)
    table["seeds"] = grouped["seed"].count()
    return table


REPORTED_LABELS = {"A": "the authors, in another document", "S": "a second-hand quote",
                   "R": "a third-party reproduction"}
"""Who reported a number, by its ``label`` in ``reported_numbers.yaml``."""


def reported_numbers(paper: str, table: str) -> pd.DataFrame:
    """Numbers reported elsewhere for ``table`` of ``paper``: row, setting, metric, value, source, label, verified."""
    text = resources.files("contrastseg").joinpath("reported_numbers.yaml").read_text()
    entries = [e for e in yaml.safe_load(text) if e["paper"] == paper and e["table"] == table]
    columns = ["row", "setting", "metric", "value", "source", "label", "verified"]
    return pd.DataFrame.from_records(entries, columns=columns)


def format_summary(summary: pd.DataFrame, metric: str = "miou") -> list[str]:
    """One line per row, ``name: mean +- std`` with 3 decimals, for the nbval-checked summary cell."""
    return [f"{row}: {summary.loc[row, f'{metric}_mean']:.3f} +- {summary.loc[row, f'{metric}_std']:.3f}"
            for row in summary.index]


def bootstrap_interval(differences: ArrayLike, confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` (e.g. per-seed paired differences).

    Resamples the values with replacement ``resamples`` times and returns the (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles of the resampled means. With few values the interval is very rough: n values give
    at most C(2n - 1, n) distinct resampled means (10 for n = 3), the interval never reaches beyond the smallest and
    largest value, and for n = 2 or 3 the 95 % interval is just their range (each all-equal resample has probability
    1/n^n >= 1/27 > 2.5 %). Its coverage then falls well short of ``confidence``; show the values themselves too.

    Args:
        differences: (n,) finite floats.
        confidence: in (0, 1).
        resamples: number of bootstrap resamples.
        seed: seed of the resampling (the same seed and values give the same interval).

    Returns:
        (low, high); (nan, nan) for fewer than 2 values: one value has no spread to resample, and a zero-width
        interval would claim a certainty that one seed cannot give.
    """
    values = np.asarray(differences, dtype=float)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(f"differences must be a 1-D sequence of finite numbers, got {values!r}")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and resamples >= 1, got {confidence} and {resamples}")
    if len(values) < 2:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(values, size=(resamples, len(values))).mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def paired_differences(per_seed: pd.DataFrame, pairs: dict[str, tuple[str, str]], metric: str = "miou",
                       confidence: float = 0.95) -> pd.DataFrame:
    """Per seed, ``metric`` of a row minus that of its baseline row (same seed), then mean and spread over seeds.

    Args:
        per_seed: ``train_rows``' records.
        pairs: name -> (row, baseline row), e.g. {"1/8": ("RC²L, 1/8", "supervised, 1/8")}.
        confidence: of the bootstrap interval of the mean difference (``bootstrap_interval``, very rough for a
            handful of seeds; NaN for one seed).

    Returns:
        One row per pair: mean and std (ddof=1; 0 with one seed) of the difference, ci_low and ci_high, the number
        of seeds, and the per-seed differences as a list (seed order).
    """
    values = per_seed.pivot(index="seed", columns="row", values=metric)
    records = []
    for name, (row, baseline) in pairs.items():
        difference = (values[row] - values[baseline]).dropna()
        ci_low, ci_high = bootstrap_interval(difference.to_numpy(), confidence)
        records.append({"pair": name, "mean": difference.mean(),
                        "std": difference.std(ddof=1) if len(difference) > 1 else 0.0,
                        "ci_low": ci_low, "ci_high": ci_high,
                        "seeds": len(difference), "per_seed": [round(float(v), 4) for v in difference]})
    return pd.DataFrame.from_records(records).set_index("pair")
