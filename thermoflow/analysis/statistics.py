"""Error bars for correlated series: blocking (reblocking) analysis.

The series is repeatedly averaged in adjacent pairs; the standard error of the mean of the
blocked series grows until blocks are longer than the correlation time and then plateaus. The
block size is chosen by the criterion of Lee et al.: the smallest level with
(2^k)^3 > 2 n (sigma_k / sigma_0)^4.

References: H. Flyvbjerg and H. G. Petersen, J. Chem. Phys. 91, 461 (1989),
doi:10.1063/1.457480; R. M. Lee, G. J. Conduit, N. Nemec, P. Lopez Rios, N. D. Drummond,
Phys. Rev. E 83, 066706 (2011), doi:10.1103/PhysRevE.83.066706.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BlockingResult:
    """Mean of a series and its standard error from blocking.

    Attributes:
        mean: sample mean.
        stderr: standard error at the chosen block size.
        naive_stderr: std / sqrt(n), correct only for uncorrelated data.
        block_size: chosen block length (samples per block).
        n_samples: series length.
    """

    mean: float
    stderr: float
    naive_stderr: float
    block_size: int
    n_samples: int


def blocking_stderr(series: np.ndarray, min_blocks: int = 4) -> BlockingResult:
    """Mean and blocking standard error of a 1-D series.

    Args:
        series: (n,) values, n >= 2.
        min_blocks: never use fewer blocks than this.

    Raises:
        ValueError: if fewer than 2 finite values are given.
    """
    x = np.asarray(series, dtype=np.float64).ravel()
    if x.size < 2 or not np.isfinite(x).all():
        raise ValueError("blocking needs at least 2 values, all finite")
    n = x.size
    mean = float(x.mean())
    levels = [float(np.std(x, ddof=1) / np.sqrt(n))]
    y = x[: n - n % 2]
    y = 0.5 * (y[0::2] + y[1::2])
    while y.size >= max(min_blocks, 2):
        levels.append(float(np.std(y, ddof=1) / np.sqrt(y.size)))
        y = y[: y.size - y.size % 2]
        y = 0.5 * (y[0::2] + y[1::2])
    sigma0 = levels[0]
    chosen = len(levels) - 1
    for k, s in enumerate(levels):
        if sigma0 == 0.0 or (2**k) ** 3 > 2 * n * (s / sigma0) ** 4:
            chosen = k
            break
    return BlockingResult(mean, levels[chosen], sigma0, 2**chosen, n)
