"""Comparing layouts: the same model and workload traced over several strategies or systems, each at a batch
chosen the same way (given, the largest that fits, or the largest whose decode step meets a latency target)."""

from dataclasses import dataclass

from base.inputs import ConfigError
from tracer.api import TraceResult, trace_choosing_batch
from tracer.roofline import StepTime


@dataclass(frozen=True)
class ComparedLayout:
    """One row of a comparison: a (system, strategy, compiler) traced at the batch chosen for it, or why it could
    not be."""

    system: str
    strategy: str
    result: TraceResult | None
    batch_note: str
    error: str | None = None
    max_batch: int | None = None  # the largest batch that fits, where it was searched
    compiler: str = "cpu"  # the compiler asked for (the trace says which one produced the figures)


def compare(model, systems: list[str], strategies: list[str], batch: int | str = 64, tpot_ms: float | None = None,
            compilers: tuple[str, ...] = ("cpu",), **kw) -> list[ComparedLayout]:
    """Every (system, strategy, compiler), each at a batch chosen the same way (tracer.search.choose_batch); one
    that cannot run (a layout that does not divide, a compiler that is not installed) keeps its reason."""
    out = []
    for system in systems:
        for strategy in strategies:
            for compiler in compilers:
                try:
                    found = trace_choosing_batch(model, system, strategy, batch, tpot_ms, compiler=compiler, **kw)
                    out.append(ComparedLayout(system, strategy, found.result, found.note, max_batch=found.max_batch,
                                              compiler=compiler))
                except ConfigError as err:
                    out.append(ComparedLayout(system, strategy, None, "", str(err), compiler=compiler))
    if all(p.error for p in out):
        raise ConfigError(out[0].error)
    return out


def rows(points: list[ComparedLayout]) -> list[dict]:
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
