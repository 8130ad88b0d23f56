"""Sweeps lose nothing (issue 13): bad points and bad sweep files, unwritable or occupied output folders, caches
that cannot be used or hold entries of the wrong shape, and SIGTERM or SIGINT in the middle of a parallel sweep."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracer import sweep
from tracer.cli import main
from tracer.errors import ConfigError

POINT = sweep.SweepPoint("tiny", "h100x8", "tp", batch=8, context=64)
FLAGS = ["--models", "tiny", "--systems", "h100x8", "--strategies", "tp", "--contexts", "64", "--no-max-batch"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TRACER_CACHE", str(folder))
    return folder


@pytest.mark.parametrize("line, axis", [('models = ["tiny", 1]', "models holds 1"),
                                        ('systems = [["h100x8"]]', "systems holds ['h100x8']"),
                                        ("strategies = [7]", "strategies holds 7"),
                                        ('models = [{name = "tiny"}]', "models holds {'name': 'tiny'}"),
                                        ("batches = [true]", "batches holds True"),
                                        ("contexts = [-64]", "contexts holds -64")])
def test_sweep_file_values_are_checked_when_loaded(tmp_path, line, axis):
    base = {"models": '["tiny"]', "systems": '["h100x8"]', "strategies": '["tp"]', "batches": "[8]",
            "contexts": "[64]"}
    key = line.split(" = ")[0]
    text = "\n".join([line] + [f"{k} = {v}" for k, v in base.items() if k != key]) + "\n"
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=axis.replace("[", r"\[").replace("]", r"\]")) as err:
        sweep.load_sweep(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_failing_point_is_one_line_and_the_sweep_goes_on(cache, monkeypatch):
    """Anything a point raises (not only bad input) is recorded in one line; the other points are computed."""
    import tracer.api

    real = tracer.api.trace

    def trace(**kw):
        if kw["batch"] == 16:
            raise RuntimeError("compiler crashed\nwith a second line")
        return real(**kw)

    monkeypatch.setattr(tracer.api, "trace", trace)
    points = [POINT, sweep.SweepPoint("tiny", "h100x8", "tp", batch=16, context=64)]
    good, bad = sweep.run(points, max_batch=False, progress=None)
    assert "result" in good and bad["error"] == "RuntimeError: compiler crashed with a second line"


def _read_only_folder() -> Path | None:
    """A folder nobody may write in, root included (sysfs); None where there is none."""
    try:
        (Path("/sys") / f"tracer-probe-{os.getpid()}").mkdir()
    except OSError:
        return Path("/sys")
    (Path("/sys") / f"tracer-probe-{os.getpid()}").rmdir()
    return None


@pytest.mark.parametrize("where", ["file", "under-file", "read-only"])
def test_unwritable_out_is_refused_before_any_point(cache, tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    if where == "read-only" and _read_only_folder() is None:
        pytest.skip("no read-only folder here (as root, permissions do not stop writes)")
    out = {"file": blocker, "under-file": blocker / "results", "read-only": Path("/sys/tracer-results")}[where]
    started = time.monotonic()
    assert main(["sweep", *FLAGS, "--batches", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 5 and not cache.exists()  # nothing was computed


def test_another_sweeps_results_are_kept_unless_overwrite(cache, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["sweep", *FLAGS, "--batches", "8", "--out", out]) == 0
    assert main(["sweep", *FLAGS, "--batches", "8", "--out", out]) == 0  # the same sweep again: replaced
    capsys.readouterr()
    assert main(["sweep", *FLAGS, "--batches", "16", "--out", out]) == 2
    assert "already holds another sweep's results" in capsys.readouterr().err
    assert json.loads(Path(out, "sweep.jsonl").read_text())["inputs"]["batch"] == 8  # untouched
    assert main(["sweep", *FLAGS, "--batches", "16", "--out", out, "--overwrite"]) == 0
    assert json.loads(Path(out, "sweep.jsonl").read_text())["inputs"]["batch"] == 16


def test_unusable_or_empty_cache_setting(tmp_path, monkeypatch, capsys):
    """TRACER_CACHE naming a file: the sweep runs without the cache and says so once. TRACER_CACHE="": no cache,
    and nothing written into the current folder."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    for unusable in (blocker, *([Path("/sys")] if _read_only_folder() else [])):  # a file; a read-only folder
        monkeypatch.setenv("TRACER_CACHE", str(unusable))
        (record,) = sweep.run([POINT], max_batch=False)
        assert "result" in record and capsys.readouterr().err.count("running without it") == 1
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("TRACER_CACHE", "")
    (record,) = sweep.run([POINT], max_batch=False, progress=None)
    assert "result" in record and not list(here.iterdir())


def test_cache_entries_of_the_wrong_shape_are_recomputed(cache):
    env = sweep.versions()
    key, inputs = sweep._key(POINT, env, False)
    entry = cache / f"{key}.json"
    cache.mkdir()
    entry.mkdir()  # a folder where the entry goes: neither read nor written, the point computed
    (record,) = sweep.run([POINT], max_batch=False, progress=None)
    assert not record["cached"] and "result" in record
    entry.rmdir()
    for result in ({"decode": {}}, {"error": "stored by mistake"}, ["not", "a", "trace"]):
        entry.write_text(json.dumps({"inputs": inputs, "checksum": sweep._checksum(result), "result": result}))
        (record,) = sweep.run([POINT], max_batch=False, progress=None)
        assert not record["cached"] and record["result"]["model"] == "tiny"


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(c) for c in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_sweep_stops_workers_and_keeps_finished_points(tmp_path, sig, code):
    out = tmp_path / "out"
    env = {**os.environ, "TRACER_CACHE": str(tmp_path / "cache")}
    batches = ",".join(str(8 * i) for i in range(1, 17))
    proc = subprocess.Popen([sys.executable, "-m", "tracer.cli", "sweep", *FLAGS, "--batches", batches, "--jobs", "2",
                             "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = out / "sweep.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (jsonl.exists() and jsonl.read_text().strip()):
        time.sleep(0.2)
    workers = {c for c in _children(proc.pid)}
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        f"tracer: sweep stopped by {sig.name}: ")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert 1 <= len(records) < 16 and all(r["result"]["model"] == "tiny" for r in records)
    assert len((out / "sweep.csv").read_text().splitlines()) == len(records) + 1
    time.sleep(0.5)
    assert workers and not any(_alive(pid) for pid in workers)


def test_reports_refuse_malformed_records_in_one_line(cache, tmp_path, capsys):
    (good,) = sweep.run([POINT], max_batch=False, progress=None)
    no_decode = {**good, "result": {k: v for k, v in good["result"].items() if k != "decode"}}
    cases = {"null": ({**good, "result": None}, "holds neither a result nor an error"),
             "neither": ({"inputs": good["inputs"], "cached": False}, "holds neither a result nor an error"),
             "no-decode": (no_decode, "its result is not a whole trace")}
    for name, (record, match) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
        assert main(["report", str(path), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{path} line 2" in err and match in err and len(err.strip().splitlines()) == 1
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["report", str(binary), "--out", str(tmp_path / "b")]) == 2
    assert "is not a text file of sweep records" in capsys.readouterr().err
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps(good) + "\n")
    assert main(["report", "claims", "--from", str(tiny), "--out", str(tmp_path / "c")]) == 2
    assert "is not the claims sweep" in capsys.readouterr().err
