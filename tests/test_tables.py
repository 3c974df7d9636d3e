"""contrastseg.tables without training: the paired t-interval and the paired differences, on hand-made records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from contrastseg.tables import (format_differences, format_summary, paired_differences, spread_text, summarize,
                                t_interval)


def test_t_interval_of_the_two_smoke_differences_is_wide_as_two_seeds_warrant():
    # the two smoke differences of pixel contrast - CE: a percentile bootstrap gives just their range,
    # [-0.0177, -0.0138]; the paired t-interval with t(0.975, 1) = 12.71 is [-0.041, +0.009]
    low, high = t_interval([-0.0138, -0.0177])
    assert (round(low, 3), round(high, 3)) == (-0.041, 0.009)


def test_t_interval_matches_the_textbook_formula_and_scipy():
    from scipy import stats

    values = np.random.default_rng(1).normal(0.02, 0.01, size=5)
    low, high = t_interval(values, 0.9)
    half = stats.t.ppf(0.95, 4) * values.std(ddof=1) / math.sqrt(5)
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half))
    assert (low, high) == pytest.approx(stats.t.interval(0.9, 4, loc=values.mean(), scale=stats.sem(values)))


def test_t_interval_widens_with_spread_and_narrows_with_more_values_and_lower_confidence():
    values = np.array([0.01, 0.03, -0.02, 0.04, 0.0])
    low, high = t_interval(values)
    spread_low, spread_high = t_interval(3 * values)
    assert spread_high - spread_low == pytest.approx(3 * (high - low))
    draws = np.random.default_rng(2).normal(0.0, 1.0, size=400)
    few, many = t_interval(draws[:4]), t_interval(draws)
    assert many[1] - many[0] < 0.2 * (few[1] - few[0])
    wide, narrow = t_interval(values, 0.95), t_interval(values, 0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_t_interval_edge_cases():
    assert all(math.isnan(x) for x in t_interval([0.03]))  # one seed: no interval, by choice
    assert all(math.isnan(x) for x in t_interval([]))
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    for bad in ([float("nan"), 0.1], [[0.1, 0.2]]):
        with pytest.raises(ValueError, match="finite"):
            t_interval(bad)
    with pytest.raises(ValueError, match="confidence"):
        t_interval([0.1, 0.2], confidence=1.0)


def per_seed_records(miou: dict[str, list[float]]) -> pd.DataFrame:
    """``train_rows``-like records: row, seed and miou, one per (row, seed)."""
    return pd.DataFrame.from_records([{"row": row, "seed": seed, "miou": value}
                                      for row, values in miou.items() for seed, value in enumerate(values)])


def test_paired_differences_per_seed_with_intervals():
    per_seed = per_seed_records({"CE": [0.50, 0.52, 0.51], "contrast": [0.53, 0.52, 0.55]})
    table = paired_differences(per_seed, {"contrast - CE": ("contrast", "CE")})
    row = table.loc["contrast - CE"]
    assert row["per_seed"] == [0.03, 0.0, 0.04]
    assert row["mean"] == pytest.approx(0.07 / 3) and row["seeds"] == 3
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval([0.03, 0.0, 0.04]))
    assert row["ci_low"] < 0.0 < 0.04 < row["ci_high"]  # 3 seeds: wider than the range of the values

    one_seed = paired_differences(per_seed[per_seed["seed"] == 0], {"d": ("contrast", "CE")}).loc["d"]
    assert math.isnan(one_seed["std"]) and math.isnan(one_seed["ci_low"]) and math.isnan(one_seed["ci_high"])


def test_one_seed_shows_no_spread_instead_of_a_zero_one():
    one_seed = summarize(per_seed_records({"CE": [0.2731], "contrast": [0.3]}), ("miou",))
    assert math.isnan(one_seed.loc["CE", "miou_std"]) and one_seed.loc["CE", "seeds"] == 1
    assert format_summary(one_seed) == ["CE: 0.273 (n=1)", "contrast: 0.300 (n=1)"]
    two_seeds = summarize(per_seed_records({"CE": [0.27, 0.29]}), ("miou",))
    assert format_summary(two_seeds) == ["CE: 0.280 +- 0.014"]
    equal_seeds = summarize(per_seed_records({"CE": [0.27, 0.27]}), ("miou",))
    assert format_summary(equal_seeds) == ["CE: 0.270 +- 0.000"]  # a measured zero spread stays

    differences = paired_differences(per_seed_records({"CE": [0.25], "contrast": [0.3]}), {"d": ("contrast", "CE")})
    assert format_differences(differences) == ["d: +0.050 (n=1)"]
    two = paired_differences(per_seed_records({"CE": [0.25, 0.3], "contrast": [0.3, 0.33]}), {"d": ("contrast", "CE")})
    assert format_differences(two) == ["d: +0.040 +- 0.014"]
    assert spread_text(27.31, "nan", 1, ".1f", "±") == "27.3 (n=1)"  # a NaN read back from results.json
    assert spread_text(27.31, 1.0, None, ".1f", "±") == "27.3 ± 1.0"
