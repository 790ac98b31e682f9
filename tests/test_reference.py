"""reference.erf (Cody's rational approximations, vectorised) against math.erf, and reference.gelu
against the textbook formula evaluated with math.erf one value at a time."""
from __future__ import annotations

import math

import numpy as np
import pytest

from minie5 import reference

EPS = np.finfo(np.float64).eps


def dense_grid() -> np.ndarray:
    """Both signs of: a fine linear grid over [0, 8] (where erf leaves 1), a log grid from the smallest
    normal float up to 30, and the edges of Cody's three ranges (0.46875, 4, 26.543) with their neighbours."""
    edges = [0.46875, 4.0, 26.543, 6.0, 1.0]
    around = [np.nextafter(e, d) for e in edges for d in (0.0, np.inf)]
    grid = np.concatenate([np.linspace(0.0, 8.0, 160_001), np.geomspace(np.finfo(np.float64).tiny, 30.0, 40_000),
                           edges, around])
    return np.concatenate([grid, -grid])


def test_erf_matches_math_erf_to_float64_rounding():
    x = dense_grid()
    expected = np.array([math.erf(v) for v in x])
    got = reference.erf(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    relative = np.abs(got - expected)[expected != 0] / np.abs(expected[expected != 0])
    print(f"reference.erf vs math.erf on {x.size} values: max relative error {relative.max() / EPS:.2f} eps, "
          f"{np.mean(got == expected):.1%} bit-identical")
    # worst just above 0.46875, where erf = 1 - erfc(x) loses a bit or two to cancellation
    assert relative.max() <= 3 * EPS
    assert np.array_equal(got[x == 0], x[x == 0])


def test_erf_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324, -5e-324])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # none on the way (underflow is fine)
        got = reference.erf(x)
    np.testing.assert_array_equal(got[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(got[1]) and not np.signbit(got[0])
    assert np.isnan(got[4])
    np.testing.assert_array_equal(got[5:7], [1.0, -1.0])
    np.testing.assert_array_equal(got[7:], [math.erf(5e-324), math.erf(-5e-324)])


@pytest.mark.parametrize("shape", [(), (7,), (3, 4, 5)])
def test_erf_keeps_shape_and_takes_float32(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
    got = reference.erf(x)
    assert got.shape == shape and got.dtype == np.float64
    expected = np.vectorize(math.erf, otypes=[np.float64])(x)
    np.testing.assert_allclose(got, expected, rtol=3 * EPS, atol=0)


def test_gelu_equals_the_math_erf_formula():
    """gelu in float32 as before the vectorised erf: float32 rounding of x/2 (1 + erf(x / sqrt 2))."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(200_000) * 3, np.linspace(-12, 12, 24_001)]).astype(np.float32)
    scaled = x / np.float32(math.sqrt(2.0))  # [n] float32, as gelu divides
    erf = np.array([math.erf(v) for v in scaled.astype(np.float64)])
    exact = (0.5 * x.astype(np.float64) * (1.0 + erf)).astype(np.float32)
    got = reference.gelu(x)
    assert got.dtype == np.float32
    ulps = np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact))
    print(f"reference.gelu vs the math.erf formula: {np.mean(got == exact):.4%} bit-identical, max {ulps.max():.0f} ulp")
    assert ulps.max() <= 1
