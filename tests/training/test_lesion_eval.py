"""One-click lesion evaluation helpers: Dice and the region-growing baseline."""

from __future__ import annotations

import numpy as np

from ctsam.training.lesion_eval import dice, region_grow, summarise


def test_dice_counts_the_part_of_a_lesion_outside_the_patch():
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1.0
    assert dice(a, a, truth_total=2 * int(a.sum())) == 2 * 32 / (32 + 64)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_region_grow_finds_a_contrasted_sphere_and_stops_at_its_edge():
    rng = np.random.default_rng(0)
    z, y, x = np.indices((40, 40, 40))
    ball = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 36
    hu = np.where(ball, 10.0, 60.0) + rng.normal(0, 5, ball.shape)
    grown = region_grow(hu, (20, 20, 20))
    assert dice(grown, ball) > 0.6 and grown.sum() <= ball.sum() and (grown & ball).sum() == grown.sum()
    low = np.where(ball, 55.0, 60.0) + rng.normal(0, 12, ball.shape)  # contrast below the noise: it leaks
    assert dice(region_grow(low, (20, 20, 20)), ball) < dice(grown, ball)


def test_summarise_compares_model_and_baseline():
    rows = [{"dice": 0.8, "baseline_dice": 0.5}, {"dice": 0.4, "baseline_dice": 0.6}]
    s = summarise(rows)
    assert s["lesions"] == 2 and abs(s["dice_mean"] - 0.6) < 1e-9 and s["model_better_fraction"] == 0.5
