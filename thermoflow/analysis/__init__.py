"""Statistics with error bars and post-processing of runs."""

from thermoflow.analysis.statistics import BlockingResult, blocking_stderr

__all__ = ["BlockingResult", "blocking_stderr"]
