"""The ``stratified`` estimator (Stratified GRPO's SAN blended with the global estimator)
against a hand-worked example."""

from __future__ import annotations

import math

import pytest
import torch

from maple_rl.algorithms.advantages import compute_advantages

EPS = 1e-6


def test_stratified_blend_by_hand():
    # stratum 0 (V): rewards 1, 0, 0, 1 -> mean 0.5, population std 0.5
    # stratum 6 (VAS): rewards 0, 0, 0, 1 -> mean 0.25, std sqrt(0.1875) = 0.4330
    # batch: 3 of 8 right -> mean 0.375, std sqrt(0.375 * 0.625) = 0.4841
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    strata = torch.tensor([0, 0, 0, 0, 6, 6, 6, 6])
    s6, sb = math.sqrt(0.1875), math.sqrt(0.375 * 0.625)
    san = [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), 0.5 / (0.5 + EPS),
           -0.25 / (s6 + EPS), -0.25 / (s6 + EPS), -0.25 / (s6 + EPS), 0.75 / (s6 + EPS)]
    glob = [(x - 0.375) / (sb + EPS) for x in r.tolist()]
    # first response: 0.5 * 1.0 + 0.5 * 0.625 / 0.4841 = 0.5 + 0.6455 = 1.1455
    blended = compute_advantages("stratified", r, groups, strata)
    assert blended[0].item() == pytest.approx(1.1455, abs=1e-4)
    for alpha, want in ((0.5, [0.5 * a + 0.5 * g for a, g in zip(san, glob)]), (1.0, san), (0.0, glob),
                        (0.8, [0.8 * a + 0.2 * g for a, g in zip(san, glob)])):
        got = compute_advantages("stratified", r, groups, strata, alpha=alpha)
        assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-5), (alpha, got)
    # alpha = 1 is mapo's stratum normalisation
    assert torch.allclose(compute_advantages("stratified", r, groups, strata, alpha=1.0),
                          compute_advantages("mapo", r, groups, strata, norm="stratum"))
    # no strata: one stratum, the global estimator whatever alpha is
    assert torch.allclose(compute_advantages("stratified", r, groups, None, alpha=0.3).double(),
                          torch.tensor(glob, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        compute_advantages("stratified", r, groups, strata, alpha=1.5)
