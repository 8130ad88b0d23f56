"""Comparing layouts: the same model and workload traced over several strategies or systems, each at a batch
chosen the same way (given, the largest that fits, or the largest whose decode step meets a latency target)."""

import dataclasses
from dataclasses import dataclass

from base.inputs import ConfigError, is_number
from meshes.strategies import get_strategy
from meshes.systems import get_system
from tracer.api import TraceResult, trace
from tracer.roofline import StepTime

TPOT_TRIES = 4  # compiles spent confirming the batch that meets a decode-step target


@dataclass(frozen=True)
class Point:
    """One row of a comparison: the trace, or why there is none."""

    system: str
    strategy: str
    result: TraceResult | None
    batch_note: str
    error: str | None = None
    max_batch: int | None = None  # the largest batch that fits, where it was searched
    compiler: str = "cpu"  # the compiler asked for (the trace says which one produced the figures)


def _replicas(system: str, strategy: str) -> int:
    strat = get_strategy(strategy)
    return strat.ways("batch", strat.mesh_shape(get_system(system)))


def trace_point(model, system: str, strategy: str, batch: int | str, tpot_ms: float | None, **kw) -> Point:
    """Trace at `batch`, or at the largest batch that fits ("max"), or at the largest whose decode step stays
    under `tpot_ms` (within what fits). Every chosen batch is confirmed by compiling it."""
    if tpot_ms is not None and (not is_number(tpot_ms) or tpot_ms <= 0):
        raise ConfigError(f"--tpot-ms must be a finite number of milliseconds > 0, got {tpot_ms!r}")
    if batch != "max" and tpot_ms is None:
        return Point(system, strategy, trace(model, system, strategy, batch=batch, **kw), "as given")
    step = _replicas(system, strategy)
    probe = trace(model, system, strategy, batch=step, **kw)  # finds the largest batch that fits
    cap = probe.max_batch
    if cap == 0:
        return Point(system, strategy, probe, f"nothing fits: {probe.max_batch_note}")
    if tpot_ms is None:
        return Point(system, strategy, _at(model, system, strategy, cap, kw),
                     f"largest that fits ({probe.max_batch_note})", max_batch=cap)
    target = tpot_ms / 1e3
    t_small = probe.phases["decode"].time.step_s
    if t_small > target:
        return Point(system, strategy, probe, f"no batch meets {tpot_ms:g} ms: {step} sequence(s) take "
                                              f"{t_small * 1e3:.3g} ms per decode step", max_batch=cap)
    top = _at(model, system, strategy, cap, kw)
    t_top = top.phases["decode"].time.step_s
    if t_top <= target:
        return Point(system, strategy, top, f"largest that fits ({cap}) meets {tpot_ms:g} ms", max_batch=cap)
    lo, lo_result = step, probe  # meets the target
    hi = cap  # does not
    for _ in range(TPOT_TRIES):  # the decode step grows about linearly with the batch: interpolate, then confirm
        t_lo = lo_result.phases["decode"].time.step_s
        guess = lo + (hi - lo) * (target - t_lo) / (t_top - t_lo) if t_top > t_lo else lo
        guess = max(lo + step, min(hi - step, int(guess) // step * step))
        if guess <= lo or guess >= hi:
            break
        trial = _at(model, system, strategy, guess, kw)
        if trial.phases["decode"].time.step_s <= target:
            lo, lo_result = guess, trial
        else:
            hi, t_top = guess, trial.phases["decode"].time.step_s
        if hi - lo <= step:
            break
    exact = "exact" if hi - lo <= step else f"within [{lo}, {hi})"
    return Point(system, strategy, lo_result, f"largest whose decode step meets {tpot_ms:g} ms ({exact})",
                 max_batch=cap)


def _at(model, system, strategy, batch, kw) -> TraceResult:
    return trace(model, system, strategy, batch=batch, **{**kw, "find_max_batch": False})


def compare(model, systems: list[str], strategies: list[str], batch: int | str = 64, tpot_ms: float | None = None,
            compilers: tuple[str, ...] = ("cpu",), **kw) -> list[Point]:
    """Every (system, strategy, compiler); one that cannot run (a layout that does not divide, a compiler that is
    not installed) keeps its reason."""
    points = []
    for system in systems:
        for strategy in strategies:
            for compiler in compilers:
                try:
                    point = trace_point(model, system, strategy, batch, tpot_ms, compiler=compiler, **kw)
                    points.append(dataclasses.replace(point, compiler=compiler))
                except ConfigError as err:
                    points.append(Point(system, strategy, None, "", str(err), compiler=compiler))
    if all(p.error for p in points):
        raise ConfigError(points[0].error)
    return points


def rows(points: list[Point]) -> list[dict]:
    """The comparison table: one row per point, from its trace."""
    out = []
    for p in points:
        row = {"system": p.system, "strategy": p.strategy,
               "compiler": p.result.compiler if p.result is not None else p.compiler}
        if p.result is None:
            out.append({**row, "error": p.error})
            continue
        r = p.result
        pre, dec = r.phases["prefill"], r.phases["decode"]
        out.append({**row, "mesh": " x ".join(f"{k}={v}" for k, v in r.mesh.items()),
                    "fits": dec.memory.fits, "batch": r.work.batch,
                    "max_batch": p.max_batch if p.max_batch is not None else r.max_batch,
                    "batch_note": p.batch_note,
                    "prefill_ms": _terms(pre.time), "prefill_bound": pre.time.bound,
                    "decode_ms": _terms(dec.time), "decode_bound": dec.time.bound,
                    "decode_comm_share": dec.time.comms_s / dec.time.step_s,
                    "decode_tokens_per_s_per_chip": dec.tokens_per_s_per_chip,
                    "usd_per_mtok_in": pre.usd_per_mtok, "usd_per_mtok_out": dec.usd_per_mtok})
    return out


def _terms(t: StepTime) -> str:
    return f"{t.step_s * 1e3:.4g} ({t.compute_s * 1e3:.3g}/{t.memory_s * 1e3:.3g}/{t.comms_s * 1e3:.3g})"
