"""`tracer report SWEEP_RESULTS`: the Pareto front, the Markdown report with its plots, and bad input."""

import pytest

from tracer import sweep
from tracer.cli import main
from tracer.reports.sweep_report import load_records, pareto
from tracer.sweep_records import write


def test_pareto_front_keeps_the_points_nothing_beats_on_both_counts():
    # (tokens/s per user, USD per Mtok out): more interactivity and lower cost are better
    pts = [(10, 1.0), (20, 2.0), (15, 3.0), (30, 5.0), (5, 0.5), (30, 6.0), (20, 2.5)]
    assert pareto(pts) == [4, 0, 1, 3]


def test_report_from_a_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    points = sweep.grid(model=["tiny"], system=["h100x8"], strategy=["tp", "tp-dp", "bogus"],
                         batch=[8, "max"], context=[64])
    write(sweep.run(points, max_batch=False, progress=None), str(tmp_path / "results"))
    assert main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "6 points: 4 traced, 2 failed" in text and "unknown strategy 'bogus'" in text
    for plot in ("tiny-cost-vs-context.png", "tiny-pareto.png", "tiny-decode-terms.png", "tiny-strategies.png"):
        assert (tmp_path / "report" / plot).read_bytes()[:4] == b"\x89PNG" and f"]({plot})" in text
    assert "prices h100x8 $2.95/chip-h" in text and "Pareto front on h100x8" in text
    assert "Strategies side by side on tiny" in text and "| max " in text and "KV share" in text
    largest = [r["result"] for r in load_records(str(tmp_path / "results"))
               if "result" in r and r["inputs"]["batch"] == "max"]
    assert largest and all(r["batch"] == r["max_batch"] > 8 for r in largest)  # traced at the largest that fits


def test_report_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no sweep results" in capsys.readouterr().err
    bad = tmp_path / "sweep.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(Exception, match="line 1 is not a sweep record"):
        load_records(str(bad))
