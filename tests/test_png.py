"""make_png: valid, sized, deterministic and fast PNGs for the simulated image models."""

from __future__ import annotations

import time

from proxy.sim.png import make_png
from tests.fake_upstream import assert_valid_png


def test_make_png_is_a_valid_png_of_about_the_asked_size() -> None:
    """make_png yields a structurally valid PNG whose size is within 1% of the request."""
    for size in (1_500_000, 200_000, 3_000):
        png = make_png("seed", size)
        assert_valid_png(png)
        assert abs(len(png) - size) <= size * 0.01


def test_make_png_is_deterministic_per_seed() -> None:
    """Same seed gives the same bytes; another seed gives different bytes."""
    assert make_png("a", 50_000) == make_png("a", 50_000)
    assert make_png("a", 50_000) != make_png("b", 50_000)


def test_make_png_is_fast() -> None:
    """A 1.5 MB PNG is generated in under 20 ms."""
    timings = []
    for seed in ("x", "y", "z"):
        start = time.perf_counter()
        make_png(seed, 1_500_000)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.020
