"""contrastseg.tables without training: the bootstrap interval and the paired differences, on hand-made records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from contrastseg.tables import (bootstrap_interval, format_differences, format_summary, paired_differences,
                                spread_text, summarize)


def test_bootstrap_interval_holds_the_mean_within_the_range_of_the_values():
    values = np.random.default_rng(1).normal(0.02, 0.01, size=8)
    low, high = bootstrap_interval(values)
    assert values.min() <= low < values.mean() < high <= values.max()


def test_bootstrap_interval_widens_with_spread_and_narrows_with_more_values():
    values = np.array([0.01, 0.03, -0.02, 0.04, 0.0])
    low, high = bootstrap_interval(values)
    spread_low, spread_high = bootstrap_interval(3 * values)  # same seed: the same resamples, scaled
    assert spread_high - spread_low == pytest.approx(3 * (high - low))

    draws = np.random.default_rng(2).normal(0.0, 1.0, size=400)
    few, many = bootstrap_interval(draws[:4]), bootstrap_interval(draws)
    assert many[1] - many[0] < 0.5 * (few[1] - few[0])


def test_bootstrap_interval_is_deterministic_for_a_seed_and_narrower_at_lower_confidence():
    values = [0.012, -0.004, 0.021]
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    wide, narrow = bootstrap_interval(values, 0.95), bootstrap_interval(values, 0.5)
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]


def test_bootstrap_interval_edge_cases():
    assert all(math.isnan(x) for x in bootstrap_interval([0.03]))  # one seed: no interval, by choice
    assert all(math.isnan(x) for x in bootstrap_interval([]))
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    for bad in ([float("nan"), 0.1], [[0.1, 0.2]]):
        with pytest.raises(ValueError, match="finite"):
            bootstrap_interval(bad)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([0.1, 0.2], confidence=1.0)


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
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(bootstrap_interval([0.03, 0.0, 0.04]))
    # 3 seeds: each all-equal resample is 1/27 > 2.5 % of them, so the 95 % interval is the range of the values
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.0, 0.04))

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
