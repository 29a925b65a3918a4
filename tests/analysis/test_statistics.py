import numpy as np
import pytest

from thermoflow.analysis import blocking_stderr


def test_blocking_recovers_ar1_error_bar():
    """AR(1) with rho = 0.9: exact s.e. = sigma_x / sqrt(n) * sqrt((1 + rho)/(1 - rho)), 4.4x the naive one."""
    rng = np.random.default_rng(0)
    rho, n = 0.9, 2**15
    x = np.empty(n)
    x[0] = rng.normal() / np.sqrt(1 - rho**2)
    noise = rng.normal(size=n)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + noise[i]
    exact = (1.0 / np.sqrt(1 - rho**2)) / np.sqrt(n) * np.sqrt((1 + rho) / (1 - rho))
    res = blocking_stderr(x)
    assert abs(res.stderr / exact - 1) < 0.2
    assert res.naive_stderr < 0.4 * res.stderr


def test_blocking_of_independent_data_equals_naive():
    x = np.random.default_rng(1).normal(size=4096)
    res = blocking_stderr(x)
    assert abs(res.stderr / (x.std(ddof=1) / np.sqrt(x.size)) - 1) < 0.15


def test_blocking_rejects_bad_input():
    with pytest.raises(ValueError):
        blocking_stderr([1.0])
    with pytest.raises(ValueError):
        blocking_stderr([1.0, np.nan, 2.0])
