"""Keep solver banners out of the output.

HiGHS (through ``highspy``) prints a licence banner to the process's stdout from C++ when the
first ``Highs`` object of a process is built, whatever ``verbose`` cvxpy passes. Building
that first object once with stdout pointed at ``/dev/null`` keeps the banner out of
``gridroll``'s tables and of anything piped from it.
"""

from __future__ import annotations

import functools
import os
import sys


@functools.cache
def quiet_highs() -> None:
    """Build the process's first ``Highs`` object with file descriptor 1 silenced (once)."""
    try:
        import highspy
    except ImportError:                      # HiGHS not installed: nothing prints a banner
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
