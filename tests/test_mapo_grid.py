"""`benchmarks/mapo_grid.py`'s report: the 95% t interval against hand-worked values and the
curves PNG (deterministic bytes, one band per arm). Its runs need the pretrained model: the
learning lane and benchmarks/README.md cover them."""

from __future__ import annotations

import pytest

from benchmarks.mapo_grid import half_width, interval, plot


def test_interval_is_the_t_interval_of_the_mean() -> None:
    # values 0.5, 0.6, 0.7: mean 0.6, sd 0.1, n 3 -> t(0.975, 2) = 4.303; 4.303 * 0.1 / sqrt(3) = 0.24843
    assert half_width([0.5, 0.6, 0.7]) == pytest.approx(0.248434, abs=1e-6)
    assert interval([0.5, 0.6, 0.7]) == "0.600 +- 0.248"
    assert half_width([0.4]) == 0.0 and interval([0.4]) == "0.400" and interval([]) == "n/a"


def test_plot_draws_one_png_per_call_with_the_same_bytes(tmp_path) -> None:
    def run(seed: int, end: float) -> dict:
        return {"seed": seed, "curve": [{"step": 0, "compositions": 0.56}, {"step": 20, "compositions": end - 0.05},
                                        {"step": 40, "compositions": end}]}

    runs = {"mupo": [run(0, 0.67), run(1, 0.60)], "mapo": [run(0, 0.59), run(1, 0.58), run(2, 0.60)]}
    plot(runs, tmp_path / "a.png")
    plot(runs, tmp_path / "b.png")
    data = (tmp_path / "a.png").read_bytes()
    assert data[:4] == b"\x89PNG" and data == (tmp_path / "b.png").read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (900, 475)


def test_rows_and_share_of_mupo_gain_worked_by_hand() -> None:
    from benchmarks.mapo_grid import by_rows, to_share_of_gain

    # VA: exact 0.6, mean of both rows 0.5 -> all-modalities 0.4; VAS has one row (0.3 both ways)
    point = {"per_tag": {"VA": 0.5, "VS": 0.5, "AS": 0.5, "VAS": 0.3},
             "exact_per_tag": {"VA": 0.6, "VS": 0.6, "AS": 0.6, "VAS": 0.3}}
    assert by_rows(point) == pytest.approx(((0.6 * 3 + 0.3) / 4, (0.4 * 3 + 0.3) / 4))

    def run(*values: float) -> dict:
        return {"curve": [{"step": 20 * k, "seconds": 100.0 * k, "compositions": v} for k, v in enumerate(values)]}

    first = {"compositions": 0.5}
    mupo = [run(0.5, 0.55, 0.6), run(0.5, 0.55, 0.6)]  # gain 0.1: the target is 0.5 + 0.09 = 0.59
    assert to_share_of_gain(mupo, mupo, first) == "step 40 (200 s)"
    assert to_share_of_gain([run(0.5, 0.59, 0.5)], mupo, first) == "step 20 (100 s)"
    assert to_share_of_gain([run(0.5, 0.58, 0.585)], mupo, first) == "not reached in 40 steps"


def test_noise_report_against_mupo_worked_by_hand(capsys, tmp_path) -> None:
    from benchmarks.mapo_grid import KEPT, report_noise, shared_checkpoints

    for step in (100, 20, 40):  # numeric order, not the names' (step-100 sorts before step-20)
        (tmp_path / KEPT / f"step-{step}").mkdir(parents=True)
    assert list(shared_checkpoints(tmp_path, tmp_path / "start")) == ["start", "step-20", "step-40", "step-100"]
    # MUPO trace 4, |mean|^2 2 (ratio 2); MAPO trace 3, |mean|^2 2 (ratio 1.5): -25% both ways;
    # strata trace 6, |mean|^2 4 (ratio 1.5): trace +50%, noise/signal -25%; blended lacks "step-20"
    report_noise({"mupo": {"start": [4.0, 2.0], "step-20": [4.0, 2.0]},
                  "mapo": {"start": [3.0, 2.0], "step-20": [3.0, 2.0]},
                  "strata": {"start": [6.0, 4.0], "step-20": [6.0, 4.0]},
                  "blended": {"start": [4.0, 1.0]}}, minibatches=16)
    lines = capsys.readouterr().out.splitlines()
    assert "16 batches" in lines[1] and lines[2] == "  at start" and "step-20" in lines[7]
    assert lines[4].split()[:4] == ["mapo", "3", "2", "1.50"]
    assert lines[4].endswith("trace -25.00%, noise/signal -25.00%")
    assert lines[5].endswith("trace +50.00%, noise/signal -25.00%")
    assert lines[6].endswith("trace +0.00%, noise/signal +100.00%")
    assert len(lines) == 11 and not any("blended" in line for line in lines[7:])
