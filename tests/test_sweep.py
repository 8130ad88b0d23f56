"""Sweeps: the grid of points, sweep files, the persistent cache (hits, misses, entries that cannot be trusted),
parallel workers, failures recorded without stopping the sweep, and outputs that load as they are."""

import csv
import json

import pytest

from tracer import sweep
from tracer.cli import main
from tracer.errors import ConfigError

POINT = sweep.SweepPoint("tiny", "h100x8", "tp", batch=8, context=64)


def figures(result: dict) -> dict:
    """A trace object without its compile times (the one thing that differs between two compiles)."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "compile_s"} if isinstance(v, dict) else v)
            for k, v in result.items()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TRACER_CACHE", str(folder))
    return folder


def test_grid_is_every_combination():
    points = sweep.grid(model=["tiny", "llama3-8b"], system=["h100x8", "h200x8"], strategy=["tp", "tp-dp"],
                        batch=[8, 16, 32, 64], context=[1024, 2048, 4096])
    assert len(points) == 2 * 2 * 2 * 4 * 3 and len(set(points)) == len(points)
    with pytest.raises(ConfigError, match="unknown sweep axis colour"):
        sweep.grid(model=["tiny"], colour=["red"])
    with pytest.raises(ConfigError, match="needs at least one context"):
        sweep.grid(model=["tiny"], system=["h100x8"], strategy=["tp"], batch=[8])


def test_sweep_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('models = ["tiny"]\nsystems = ["h100x8"]\nstrategies = ["tp"]\nbatches = [8, 16]\n'
                    'contexts = [64]\ncompilers = ["cpu"]\n')
    assert len(sweep.grid(**sweep.load_sweep(str(path)))) == 2
    path.write_text('models = "tiny"\n')
    with pytest.raises(ConfigError, match="models must be a non-empty list"):
        sweep.load_sweep(str(path))
    path.write_text('modles = ["tiny"]\n')
    with pytest.raises(ConfigError, match="unknown keys modles"):
        sweep.load_sweep(str(path))


def test_cache_hit_miss_and_untrusted_entries(cache):
    (first,) = sweep.run([POINT], max_batch=False, progress=None)
    assert not first["cached"]
    (again,) = sweep.run([POINT], max_batch=False, progress=None)
    assert again["cached"] and again["result"] == first["result"]
    other_point = sweep.SweepPoint("tiny", "h100x8", "tp", batch=16, context=64)
    (other,) = sweep.run([other_point], max_batch=False, progress=None)
    assert not other["cached"]
    (entry,) = [p for p in cache.glob("*.json") if json.loads(p.read_text())["inputs"]["point"]["batch"] == 8]
    entry.write_text(entry.read_text()[:100])  # truncated
    (fixed,) = sweep.run([POINT], max_batch=False, progress=None)
    assert not fixed["cached"] and figures(fixed["result"]) == figures(first["result"])
    stored = json.loads(entry.read_text())
    stored["result"]["decode"]["usd_per_mtok"] = 0.0  # tampered: the checksum no longer matches
    entry.write_text(json.dumps(stored))
    (checked,) = sweep.run([POINT], max_batch=False, progress=None)
    assert not checked["cached"] and checked["result"]["decode"]["usd_per_mtok"] > 0


def test_parallel_sweep_records_failures_and_writes_loadable_files(cache, tmp_path, capsys):
    argv = ["sweep", "--models", "tiny", "--systems", "h100x8", "--strategies", "tp,no-such", "--batches", "8",
            "--contexts", "64,128", "--jobs", "2", "--no-max-batch", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "4 points (0 from the cache, 2 failed)" in out.out and "4/4 points" in out.err
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").read_text().splitlines()))
    assert [r["error"] == "" for r in rows] == [True, True, False, False]
    assert float(rows[0]["usd_per_mtok_out"]) > float(rows[0]["usd_per_mtok_in"]) > 0
    records = [json.loads(line) for line in (tmp_path / "out" / "sweep.jsonl").read_text().splitlines()]
    assert records[0]["result"]["model"] == "tiny" and "unknown strategy" in records[2]["error"]
    assert main(argv) == 0
    assert "4 points (2 from the cache, 2 failed)" in capsys.readouterr().out
