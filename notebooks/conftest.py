"""nbval settings for the notebooks.

nbval waits a fixed 5 s for each of a cell's output messages after the cell has finished; a long training cell on a
loaded 2-core CI machine can flush its last outputs (progress-bar widgets, the table) later than that, and nbval then
fails the cell though it ran. The wait is raised here; a cell that really hangs is still stopped by nbval's own cell
timeout (``--nbval-cell-timeout``).
"""

OUTPUT_WAIT_S = 120


def pytest_runtest_setup(item):
    """Let each nbval cell wait up to ``OUTPUT_WAIT_S`` for its outputs (nbval's cells have ``output_timeout``)."""
    if hasattr(item, "output_timeout"):
        item.output_timeout = OUTPUT_WAIT_S
