"""Comparing layouts: the same model and workload traced over several strategies or systems, each at a batch
chosen the same way (given, the largest that fits, or the largest whose decode step meets a latency target)."""

from dataclasses import dataclass

from base.inputs import ConfigError
from tracer.api import TraceResult, trace_choosing_batch


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
