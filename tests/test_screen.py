"""`tracer sweep --screen MARGIN`: the textbook estimate of every point, and only the points near each workload's
Pareto front compiled; the front the compiled programs draw is kept."""

import csv
import math

import pytest

from tracer import screen, sweep
from tracer.cli import main
from tracer.errors import ConfigError
from tracer.screen import Estimate
from tracer.sweep_records import StoredResult

GRID = dict(model=["llama3-8b"], system=["h100x8"], strategy=["tp", "fsdp"], batch=[8, 64], context=[1024])


def test_miss_by_hand():
    """A front point twice as fast and at a third of the cost: escaping it takes 2x on speed (the cheaper count),
    so the miss is 1.0; a point no other beats on both misses nothing."""
    fast = Estimate(None, 200.0, 1.0, True)
    slow = Estimate(None, 100.0, 3.0, True)
    assert screen.miss(slow, [fast]) == pytest.approx(1.0)
    assert screen.miss(fast, [fast, slow]) == 0.0
    cheap = Estimate(None, 50.0, 0.5, True)  # slower but cheaper: on the front too
    assert screen.miss(cheap, [fast, cheap]) == 0.0


def test_screening_keeps_the_compiled_front(tmp_path, monkeypatch):
    """Compile the whole grid, draw its front of tokens/s per user against USD per Mtok out: screening at 10% keeps
    every point on it, and drops FSDP's decode (every step all-gathers every weight)."""
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    points = sweep.grid(**GRID)
    traced = [StoredResult.read(r["result"]) for r in sweep.run(points, max_batch=False, progress=None)]
    measured = [(p, 1 / r.decode.step_s, r.decode.usd_per_mtok) for p, r in zip(points, traced, strict=True)]
    front = [p for p, speed, cost in measured
             if not any(s >= speed and c <= cost and (s, c) != (speed, cost) for _, s, c in measured)]
    kept, dropped = screen.screen(points, 0.1)
    assert front and set(front) <= set(kept)
    assert {e.point.strategy for e, _ in dropped} == {"fsdp"} and all(miss > 0.1 for _, miss in dropped)


def test_sweep_screen_writes_what_it_dropped(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    argv = ["sweep", "--models", "llama3-8b", "--systems", "h100x8", "--strategies", "tp,fsdp", "--batches", "8",
            "--contexts", "1024", "--no-max-batch", "--screen", "0.1", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert "1 points" in capsys.readouterr().out
    (row,) = list(csv.DictReader((tmp_path / "out" / "screened.csv").read_text().splitlines()))
    assert row["strategy"] == "fsdp" and float(row["miss"]) > 0.1 and math.isfinite(float(row["miss"]))
    assert main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Points screened out before compiling" in report and "| fsdp " in report
    capsys.readouterr()
    assert main([*argv[:-4], "--screen", "-1", "--out", str(tmp_path / "out2")]) == 2
    assert "--screen takes a margin >= 0" in capsys.readouterr().err


def test_margin_is_checked():
    with pytest.raises(ConfigError, match="margin >= 0"):
        screen.screen([], float("nan"))


def test_textbook_communication_by_hand():
    """Llama 3 8B decode, tp over 8 H100s, batch 8: 32 layers x 2 all-reduces (after attention and after the MLP),
    each 2 x 7/8 x 8 tokens x 4096 x 2 bytes = 114,688 wire bytes at 450 GB/s plus 2 x 7 hops at 1 us:
    64 x (114688 / 450e9 + 14e-6) = 0.912 ms."""
    from meshes.strategies import get_strategy
    from meshes.systems import get_system
    from models.files import get_model
    from tracer.roofline import analytic_comms_s, splits
    from tracer.step import Workload

    system, strategy = get_system("h100x8"), get_strategy("tp")
    split = splits(strategy, strategy.mesh_shape(system))
    got = analytic_comms_s(get_model("llama3-8b"), Workload(8, 1024, 1024), split, system)
    assert got == pytest.approx(64 * (114688 / 450e9 + 14e-6), rel=1e-9)
