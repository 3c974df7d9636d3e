"""nbval settings for the notebooks.

After a cell has finished, nbval reads its output messages one by one and gives up when one takes longer than its
``output_timeout`` (5 s by default, with no command-line option). On a loaded machine the last outputs of a long
training cell (progress bars, the table) can come later than any fixed wait, and the cell then failed though it
ran. The wait is therefore the cell timeout itself (``--nbval-cell-timeout``): how loaded the machine is no longer
decides a test's verdict, and a cell that really hangs is still stopped by that timeout.
"""


def output_wait_seconds(config) -> float:
    """How long nbval may wait for one output message of a finished cell: the cell timeout."""
    return float(config.option.nbval_cell_timeout)


def pytest_runtest_setup(item):
    """Give each nbval cell (nbval's cells have ``output_timeout``) the wait of ``output_wait_seconds``."""
    if hasattr(item, "output_timeout"):
        item.output_timeout = output_wait_seconds(item.config)
