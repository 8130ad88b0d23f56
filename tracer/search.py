"""Batch searches: the largest decode batch that fits in HBM, and the largest whose decode step meets a time target
(within what fits). `trace` finds the first; `compare` and `sweep` choose their batches through `choose_batch`.

Each search measures through the function it is given (compile a decode step, or trace at a batch), so one search
serves every caller and the figures it confirms are the compiled ones.
"""

from collections.abc import Callable
from dataclasses import dataclass

from tracer.results import TraceResult
from tracer.roofline import Memory

FIT_TRIES = 4  # compiles spent confirming the largest batch that fits
TARGET_TRIES = 4  # traces spent confirming the batch that meets a decode-step target


def estimate_fitting(batch: int, mem: Memory, replicas: int) -> int:
    """The largest multiple of `replicas` whose decode memory fits, from the step compiled at `batch`: what lies
    beyond the weights (KV cache, logits, activations) scaled with the batch. Exact for the KV cache and the logits;
    where part of the temporaries does not grow with the batch it errs low, never high."""
    per_seq = (mem.total - mem.weights) / batch
    return int((mem.capacity - mem.weights) // per_seq) // replicas * replicas


def largest_fitting(memory_at: Callable[[int], Memory], batch: int, mem: Memory, replicas: int, context: int,
                    confirm: bool = False) -> tuple[int, str]:
    """(the largest decode batch that fits, how it was found), from the decode step's memory `mem` at `batch`
    (estimate_fitting), with no further compile; with `confirm`, `memory_at` (a compile) checks the answer, once
    where it fits. Batches are multiples of `replicas` (the ways the batch is split)."""
    if mem.weights >= mem.capacity:
        return 0, (f"weights alone ({mem.weights / 1e9:.1f} GB per device) exceed HBM ({mem.capacity / 1e9:.0f} GB)"
                   " at any batch")
    guess = estimate_fitting(batch, mem, replicas)
    for _ in range(FIT_TRIES):
        if guess < replicas:
            return 0, f"not even {replicas} sequence(s) of {context} tokens fit beside the weights"
        if guess == batch and mem.fits:
            return batch, "its decode step compiled at this batch fits; the next batch, by its memory per sequence, not"
        if not confirm:
            return guess, (f"estimated from the decode step compiled at batch {batch}, its memory beyond the weights "
                           "scaled with the batch (--confirm compiles it)")
        batch, mem = guess, memory_at(guess)
        if mem.fits:
            return guess, "confirmed by compiling the decode step at this batch"
        guess = estimate_fitting(batch, mem, replicas)
    return guess, "estimated by scaling from the compiled steps (not confirmed)"


@dataclass(frozen=True)
class BatchChoice:
    """A trace at the batch a search chose, and how it was chosen."""

    result: TraceResult  # at the chosen batch; where nothing fits or meets the target, at the smallest batch
    note: str
    max_batch: int | None = None  # the largest batch that fits, where it was searched


def choose_batch(trace_at: Callable[[int, bool], TraceResult], batch: int | str, tpot_ms: float | None,
                 replicas: int) -> BatchChoice:
    """Trace at `batch`, or at the largest batch that fits ("max"), or at the largest whose decode step stays under
    `tpot_ms` (within what fits). trace_at(batch, find_max_batch) traces; every chosen batch is traced itself."""
    if batch != "max" and tpot_ms is None:
        return BatchChoice(trace_at(batch, True), "as given")
    probe = trace_at(replicas, True)  # estimates the largest batch that fits
    cap = probe.max_batch
    if cap == 0:
        return BatchChoice(probe, f"nothing fits: {probe.max_batch_note}")
    target = None if tpot_ms is None else tpot_ms / 1e3
    if target is not None and _decode_s(probe) > target:
        return BatchChoice(probe, f"no batch meets {tpot_ms:g} ms: {replicas} sequence(s) take "
                                  f"{_decode_s(probe) * 1e3:.3g} ms per decode step", cap)
    top, how = fitting_trace(trace_at, cap, replicas)
    if top is None:
        return BatchChoice(probe, f"nothing fits: {how}")
    cap = top.work.batch
    if target is None:
        return BatchChoice(top, f"largest that fits ({how})", cap)
    if _decode_s(top) <= target:
        return BatchChoice(top, f"largest that fits ({cap}) meets {tpot_ms:g} ms", cap)
    found, exact = largest_meeting(lambda b: trace_at(b, False), probe, top, replicas, target)
    return BatchChoice(found, f"largest whose decode step meets {tpot_ms:g} ms ({exact})", cap)


def fitting_trace(trace_at: Callable[[int, bool], TraceResult], cap: int,
                  replicas: int) -> tuple[TraceResult | None, str]:
    """The trace at the estimated largest batch that fits, which confirms it: where its decode step does not fit
    after all, the estimate is made again from it and traced (FIT_TRIES at most). None: nothing fits."""
    for _ in range(FIT_TRIES):
        top = trace_at(cap, False)
        decode = top.phases["decode"].memory
        if decode.fits:
            return top, "estimated from a smaller batch's decode step, confirmed by tracing this batch"
        cap = estimate_fitting(cap, decode, replicas)
        if cap < replicas:
            return None, f"not even {replicas} sequence(s) fit beside the weights"
    return None, f"no batch confirmed to fit in {FIT_TRIES} traces"


def largest_meeting(trace_at: Callable[[int], TraceResult], low: TraceResult, high: TraceResult, replicas: int,
                    target_s: float) -> tuple[TraceResult, str]:
    """The trace at the largest batch between `low` (whose decode step meets `target_s`) and `high` (whose step does
    not), and whether that batch is exact or lies within a range. The decode step grows about linearly with the
    batch: interpolate, then confirm by tracing."""
    lo, lo_result = low.work.batch, low
    hi, t_top = high.work.batch, _decode_s(high)
    for _ in range(TARGET_TRIES):
        t_lo = _decode_s(lo_result)
        guess = lo + (hi - lo) * (target_s - t_lo) / (t_top - t_lo) if t_top > t_lo else lo
        guess = max(lo + replicas, min(hi - replicas, int(guess) // replicas * replicas))
        if guess <= lo or guess >= hi:
            break
        trial = trace_at(guess)
        if _decode_s(trial) <= target_s:
            lo, lo_result = guess, trial
        else:
            hi, t_top = guess, _decode_s(trial)
        if hi - lo <= replicas:
            break
    return lo_result, "exact" if hi - lo <= replicas else f"within [{lo}, {hi})"


def _decode_s(result: TraceResult) -> float:
    return result.phases["decode"].time.step_s
