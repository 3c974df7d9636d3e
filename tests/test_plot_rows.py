"""The table notebooks' figure (``viz.plot_rows``): one panel per metric, a bar per row at the mean over seeds with
the standard deviation as its error bar, each seed a dot, the same picture on every run, and numpy's global stream
left as it was."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from contrastseg import viz

PER_SEED = pd.DataFrame({"row": ["CE", "CE", "CE", "ours", "ours", "ours"], "seed": [0, 1, 2, 0, 1, 2],
                         "miou": [0.40, 0.44, 0.42, 0.50, 0.46, 0.48], "boundary_f": [0.1, 0.2, 0.3, 0.2, 0.3, 0.4]})


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    plt.close(fig)
    return buffer.getvalue()


def test_one_panel_per_metric_with_bars_at_the_means_and_the_seeds_as_dots():
    fig = viz.plot_rows(PER_SEED, {"miou": "val mIoU", "boundary_f": "val boundary F"})
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["val mIoU", "val boundary F"]
    for ax, metric in zip(axes, ["miou", "boundary_f"]):
        heights = [bar.get_height() for bar in ax.patches]
        np.testing.assert_allclose(heights, PER_SEED.groupby("row", sort=False)[metric].mean().to_numpy())
        dots = np.concatenate([collection.get_offsets()[:, 1] for collection in ax.collections])
        np.testing.assert_allclose(np.sort(dots), np.sort(PER_SEED[metric].to_numpy()))
        error_bar_lengths = [np.ptp(line.get_ydata()) for line in ax.lines if len(line.get_ydata()) == 2]
        np.testing.assert_allclose(error_bar_lengths, 2 * PER_SEED.groupby("row", sort=False)[metric].std().to_numpy())
    assert [tick.get_text() for tick in axes[0].get_xticklabels()] == ["CE", "ours"]
    plt.close(fig)


def test_the_same_table_gives_the_same_picture_and_the_global_stream_is_untouched():
    np.random.seed(123)
    expected_next = np.random.get_state()[1].copy()
    first = png_bytes(viz.plot_rows(PER_SEED))
    assert (np.random.get_state()[1] == expected_next).all()
    np.random.random(17)  # another state of the global stream before the second figure
    assert png_bytes(viz.plot_rows(PER_SEED)) == first
    assert len(viz.plot_rows(PER_SEED).axes) == 1
