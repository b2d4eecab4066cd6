"""Active learning on top of :mod:`hourglass`: acquirers, the cycle loop, statistics, reports."""
