"""`tracer sweep --executor ray`: the points as tasks on a local Ray cluster of two workers give the records the
process pool gives (figures equal, compile times apart), are cached by the driver, and a point that fails is
recorded in one line while the sweep goes on."""

import pytest

from tracer import sweep
from tracer.errors import ConfigError

ray = pytest.importorskip("ray")  # the '.[ray]' extra: installed in CI

POINTS = [sweep.SweepPoint("tiny", "h100x8", "tp", batch=8, context=64),
          sweep.SweepPoint("tiny", "h100x8", "tp-dp", batch=8, context=64),
          sweep.SweepPoint("no-such-model", "h100x8", "tp", batch=8, context=64)]  # an error


def figures(result: dict) -> dict:
    """A trace object without its compile times (the one thing that differs between two compiles)."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "compile_s"} if isinstance(v, dict) else v)
            for k, v in result.items()}


def test_ray_sweep_matches_the_process_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    on_ray = sweep.run(POINTS, jobs=2, progress=None, executor="ray")
    assert [r["cached"] for r in on_ray] == [False, False, False]
    assert "error" not in on_ray[0] and "error" not in on_ray[1]
    assert on_ray[2]["error"].startswith("unknown model 'no-such-model'")
    monkeypatch.setenv("TRACER_CACHE", "")  # the pool computes its own, for comparison
    local = sweep.run(POINTS[:2], jobs=2, progress=None)
    assert [figures(r["result"]) for r in on_ray[:2]] == [figures(r["result"]) for r in local]
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    again = sweep.run(POINTS[:2], jobs=2, progress=None, executor="ray")  # the driver cached them
    assert [r["cached"] for r in again] == [True, True]


def test_executor_errors():
    with pytest.raises(ConfigError, match="not one of local, ray"):
        sweep.run(POINTS[:1], executor="dask", progress=None)
    with pytest.raises(ConfigError, match="add --executor ray"):
        sweep.run(POINTS[:1], address="ray://nowhere:10001", progress=None)


def test_a_signal_inside_rays_wait_is_the_sweeps_interrupt():
    """Ray's wait runs the sweep's SIGINT handler in its own C code and wraps what it raises in a SystemError: the
    executor hands on the Interrupted (one line, exit 130, finished points kept), not the wrapper."""
    from tracer.errors import Interrupted
    from tracer.ray_executor import _signalled

    stop = Interrupted("sweep stopped by SIGINT: 3 of 9 points finished and kept", 2)
    try:
        raise SystemError("returned a result with an exception set") from stop
    except SystemError as err:
        assert _signalled(err) is stop
    other = SystemError("something else")
    assert _signalled(other) is other
