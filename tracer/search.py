"""Batch searches: the largest decode batch that fits in HBM, and the largest whose decode step meets a time target
(within what fits). `trace` finds the first; `compare` and `sweep` choose their batches through `choose_batch`.

Each search measures through the function it is given (compile a decode step, or trace at a batch), so one search
serves every caller and the figures it confirms are the compiled ones. The largest batch that fits comes from the
compiled decode step's memory without another compile where its temporaries cannot change the answer
(fitting_bounds); a trace at the answer, or --confirm, checks it.
"""

from collections.abc import Callable
from dataclasses import dataclass

from tracer.results import TraceResult
from tracer.roofline import Memory

FIT_TRIES = 4  # compiles or traces spent on the largest batch that fits, at most
TARGET_TRIES = 4  # traces spent confirming the batch that meets a decode-step target


def _fit(room: float, fixed: float, per_seq: float, replicas: int) -> int:
    """The largest multiple of `replicas` with fixed + per_seq x batch within `room`."""
    if per_seq <= 0:
        return 0
    return max(int((room - fixed) // per_seq), 0) // replicas * replicas


def fitting_bounds(batch: int, mem: Memory, replicas: int) -> tuple[int, int]:
    """The largest batch that fits, from the decode step compiled at `batch`, under either extreme of its
    temporaries: growing with the batch as its KV cache and logits do, or not growing at all. Where temporaries grow
    no faster than the batch, the answer lies between the two."""
    room = mem.capacity - mem.weights
    grows = (mem.kv_cache + mem.outputs) / batch
    a = _fit(room, 0.0, grows + mem.temp / batch, replicas)
    b = _fit(room, mem.temp, grows, replicas)
    return min(a, b), max(a, b)


def affine_fitting(first: tuple[int, Memory], second: tuple[int, Memory], replicas: int) -> int:
    """The largest batch that fits by the line through two compiled decode steps' memory beyond the weights."""
    (b1, m1), (b2, m2) = first, second
    t1, t2 = m1.total - m1.weights, m2.total - m2.weights
    slope = (t2 - t1) / (b2 - b1)
    return _fit(m1.capacity - m1.weights, t1 - slope * b1, slope, replicas)


def largest_fitting(memory_at: Callable[[int], Memory], batch: int, mem: Memory, replicas: int, context: int,
                    confirm: bool = False) -> tuple[int, str]:
    """(the largest decode batch that fits, how it was found), from the decode step's memory `mem` at `batch`.
    Where its temporaries cannot change the answer (fitting_bounds agree), no more is compiled; else `memory_at` (a
    compile) measures the upper bound, which is the answer if it fits, else a second point for a line. `confirm`
    compiles the answer where it was not. Batches are multiples of `replicas` (the ways the batch is split)."""
    if mem.weights >= mem.capacity:
        return 0, (f"weights alone ({mem.weights / 1e9:.1f} GB per device) exceed HBM ({mem.capacity / 1e9:.0f} GB)"
                   " at any batch")
    lo, hi = fitting_bounds(batch, mem, replicas)
    if hi < replicas:
        return 0, f"not even {replicas} sequence(s) of {context} tokens fit beside the weights"
    compiled = {batch: mem}
    if lo == hi:
        answer, how = lo, (f"from the decode step compiled at batch {batch}: its KV cache and logits grow with the "
                           "batch, and its temporaries change nothing whether they grow or not")
    else:
        compiled[hi] = memory_at(hi)
        if compiled[hi].fits:
            return hi, (f"compiled at this batch, the most the decode step at batch {batch} allows (its temporaries "
                        "held constant): it fits")
        answer = affine_fitting((batch, mem), (hi, compiled[hi]), replicas)
        how = f"from the decode steps compiled at batches {batch} and {hi}, memory a line in the batch"
    for _ in range(FIT_TRIES):
        if answer < replicas:
            return 0, f"not even {replicas} sequence(s) of {context} tokens fit beside the weights"
        if answer in compiled and compiled[answer].fits:
            return answer, f"{how}; compiled at this batch: it fits"
        if not confirm:
            return answer, f"{how}; --confirm compiles it"
        compiled[answer] = memory_at(answer)
        if compiled[answer].fits:
            return answer, f"{how}; confirmed by compiling the decode step at this batch"
        answer = affine_fitting((batch, mem), (answer, compiled[answer]), replicas)
    return answer, f"{how} (not confirmed)"


@dataclass(frozen=True)
class BatchChoice:
    """A trace at the batch a search chose, and how it was chosen."""

    result: TraceResult  # at the chosen batch; where nothing fits or meets the target, at the smallest batch
    note: str
    max_batch: int | None = None  # the largest batch that fits, where it was searched


def choose_batch(trace_at: Callable[..., TraceResult], batch: int | str, tpot_ms: float | None,
                 replicas: int, derive=None) -> BatchChoice:
    """Trace at `batch`, or at the largest batch that fits ("max"), or at the largest whose decode step stays under
    `tpot_ms` (within what fits). trace_at(batch, find_max_batch, probe=False) traces (a probe: the decode step
    alone); every chosen batch is traced itself, both phases. derive: as largest_meeting's."""
    if batch != "max" and tpot_ms is None:
        return BatchChoice(trace_at(batch, True), "as given")
    probe = trace_at(replicas, True, probe=True)  # the decode step alone estimates the largest batch that fits
    cap = probe.max_batch
    if cap == 0:
        return BatchChoice(trace_at(replicas, True), f"nothing fits: {probe.max_batch_note}")
    target = None if tpot_ms is None else tpot_ms / 1e3
    if target is not None and _decode_s(probe) > target:
        return BatchChoice(trace_at(replicas, True), f"no batch meets {tpot_ms:g} ms: {replicas} sequence(s) take "
                                                     f"{_decode_s(probe) * 1e3:.3g} ms per decode step", cap)
    top, how = fitting_trace(trace_at, cap, replicas)
    if top is None:
        return BatchChoice(trace_at(replicas, True), f"nothing fits: {how}")
    cap = top.work.batch
    if target is None:
        return BatchChoice(top, f"largest that fits ({how})", cap)
    if _decode_s(top) <= target:
        return BatchChoice(top, f"largest that fits ({cap}) meets {tpot_ms:g} ms", cap)
    found, exact = largest_meeting(lambda b: trace_at(b, False), probe, top, replicas, target, derive)
    if "prefill" not in found.phases:  # the probe itself: traced whole
        found = trace_at(found.work.batch, False)
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
        cap = fitting_bounds(cap, decode, replicas)[0]
        if cap < replicas:
            return None, f"not even {replicas} sequence(s) fit beside the weights"
    return None, f"no batch confirmed to fit in {FIT_TRIES} traces"


def largest_meeting(trace_at: Callable[[int], TraceResult], low: TraceResult, high: TraceResult, replicas: int,
                    target_s: float, derive=None) -> tuple[TraceResult, str]:
    """The trace at the largest batch between `low` (whose decode step meets `target_s`) and `high` (whose step does
    not), and whether that batch is exact or lies within a range. derive(a, b): the decode step's seconds at any
    batch between two traces, derived from their compiled steps (tracer.derive), or None where they are not one
    program structure; the answer is then read off it and traced once, which checks it. Else the decode step grows
    about linearly with the batch: interpolate, then confirm by tracing."""
    lo, lo_result = low.work.batch, low
    hi, hi_result = high.work.batch, high
    for _ in range(TARGET_TRIES):
        seconds = derive(lo_result, hi_result) if derive is not None else None
        if seconds is not None:
            bracket = (lo, hi)
            guess = _largest_derived(seconds, lo, hi, replicas, target_s)
            if guess == lo:
                return lo_result, f"exact (decode steps derived between batches {lo} and {hi})"
        else:
            t_lo, t_top = _decode_s(lo_result), _decode_s(hi_result)
            guess = lo + (hi - lo) * (target_s - t_lo) / (t_top - t_lo) if t_top > t_lo else lo
            guess = max(lo + replicas, min(hi - replicas, int(guess) // replicas * replicas))
            if guess <= lo or guess >= hi:
                break
        trial = trace_at(guess)
        if _decode_s(trial) <= target_s:
            lo, lo_result = guess, trial
            if seconds is not None and seconds(guess + replicas) > target_s:
                return trial, (f"exact (decode steps derived between batches {bracket[0]} and {bracket[1]}, "
                               "compiled at this batch)")
        else:
            hi, hi_result = guess, trial
        if hi - lo <= replicas:
            break
    return lo_result, "exact" if hi - lo <= replicas else f"within [{lo}, {hi})"


def _largest_derived(seconds: Callable[[int], float], lo: int, hi: int, replicas: int, target_s: float) -> int:
    """The largest multiple of `replicas` in [lo, hi) whose derived decode step meets the target (lo meets it; the
    step grows with the batch): a bisection."""
    good, bad = lo, hi
    while bad - good > replicas:
        mid = (good + bad) // 2 // replicas * replicas
        if mid <= good:
            break
        good, bad = (mid, bad) if seconds(mid) <= target_s else (good, mid)
    return good


def _decode_s(result: TraceResult) -> float:
    return result.phases["decode"].time.step_s
