"""Statistics with error bars and post-processing of runs: pair distributions, structures, MD dynamics."""

from thermoflow.analysis.dynamics import (
    DiffusionResult,
    VibrationalDOS,
    diffusion_coefficient,
    mean_square_displacement,
    minimum_image,
    reordered_msd,
    velocity_autocorrelation,
    vibrational_dos,
)
from thermoflow.analysis.statistics import BlockingResult, blocking_stderr
from thermoflow.analysis.structure import (
    QuenchResult,
    RadialDistribution,
    coordination_shells,
    quench,
    radial_distribution,
    space_group,
    wyckoff_x_16c,
)

__all__ = [
    "BlockingResult",
    "DiffusionResult",
    "QuenchResult",
    "RadialDistribution",
    "VibrationalDOS",
    "blocking_stderr",
    "coordination_shells",
    "diffusion_coefficient",
    "mean_square_displacement",
    "minimum_image",
    "quench",
    "radial_distribution",
    "reordered_msd",
    "space_group",
    "velocity_autocorrelation",
    "vibrational_dos",
    "wyckoff_x_16c",
]
