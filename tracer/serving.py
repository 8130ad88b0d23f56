"""A workload's steady state under continuous batching (issue 16, section 1: the first part): `tracer serving`.

Serving engines (vLLM, SGLang, TensorRT-LLM; shared/reference/serving.md) run iterations: each decodes one token of
every running sequence and prefills a chunk of waiting prompts, within a token budget (`max_num_tokens`); a
sequence that ends frees its KV blocks and a new request takes its place. In a steady state of N running sequences
(per engine: per data-parallel replica) with prompts of ISL tokens and OSL output tokens:
- N / OSL sequences end per iteration, so N ISL / OSL prompt tokens are prefilled per iteration on average;
  N (1 + ISL / OSL) tokens per iteration must fit the budget;
- the running sequences' contexts spread evenly over ISL .. ISL + OSL. A decode step's figures are affine in each
  sequence's context (tracer.derive), so an iteration over that spread costs what a step at the mean context
  ISL + OSL / 2 costs: derived from decode steps compiled at ISL and ISL + OSL (interpolated, never extrapolated);
- the KV pool is `kv_fraction` of HBM less the weights and the decode step's temporaries (vLLM's
  gpu_memory_utilization, TensorRT-LLM's kv_cache_free_gpu_mem_fraction); the sequences hold ISL + OSL / 2 tokens
  each on average (paged: a block per 16 tokens as they grow), which bounds N; or, with `admission="reserve"`, each
  running sequence holds ISL + OSL from the start (TensorRT-LLM's default capacity scheduler, GUARANTEED_NO_EVICT,
  reserves a request's prompt and maximum output before it starts: nvidia.github.io/TensorRT-LLM, "Useful Runtime
  Options"), which bounds N lower; vLLM and SGLang admit while blocks are free ("paged", the default).
A new request's prompt goes in chunks of what the budget leaves (max_num_tokens - N per replica), one an iteration,
and its first token comes out of the last: TTFT = ceil(ISL / chunk) iterations (no queueing: requests arrive as
others end). TPOT is one iteration; end to end, TTFT + (OSL - 1) TPOT.
One iteration is priced as one step over both kinds of tokens: the decode step at the mean context plus the share
f = N / (replicas OSL) per device of a compiled prefill of one whole prompt per replica (chunks of it cost what the
whole does: the same FLOPs and cache), less that prefill's weight reads, which the decode tokens' matmuls already
stream. At the achieved rates (the default, tracer.timing.iteration_kernels_s), kernel by kernel: each matmul runs
once over both kinds of tokens (its weights read once, its efficiency at the rows of both), the prefill's other
kernels add f of their time, then the collectives of both and one iteration's overhead. At the ideal roofline
(--ideal), in totals:
    compute = decode's + f prefill's, memory = decode's + f (prefill's - its weights'), comms = decode's + f prefill's,
    iteration = max(compute, memory) + comms.
Input and output prices split the iteration's chip-time between its decode and prefill tokens by the Shapley rule
for two parties: each pays the average of its two marginal times, what it takes alone and what it adds to the other:
    decode's share = (decode alone + iteration - prefill alone) / 2, prefill's = iteration - decode's.
The marginal rule in one order (decode alone, prefill the rest) would let whichever runs second ride nearly free in
the time the first leaves idle (prefill's compute under decode's memory-bound time); this one splits that saving
evenly. Each output says which time model priced it.
"""

import dataclasses
import math
from dataclasses import dataclass

from base.inputs import ConfigError, is_int, is_number
from meshes.strategies import get_strategy
from meshes.systems import get_system
from tracer.api import price, setup
from tracer.compile import compile_steps
from tracer.derive import StepModel, StructureChanged
from tracer.results import Phase
from tracer.roofline import memory
from tracer.step import Workload
from tracer.timing import iteration_kernels_s

DEFAULT_KV_FRACTION = 0.9  # vLLM's gpu_memory_utilization default
DEFAULT_MAX_NUM_TOKENS = 8192  # vLLM's max_num_batched_tokens default with chunked prefill (V1 engine)
ADMISSIONS = ("paged", "reserve")  # sequences hold their context as it grows; or reserve ISL + OSL (TensorRT-LLM)


@dataclass(frozen=True)
class Serving:
    """A workload's steady state on a system: system-wide unless named per chip."""

    model: str
    system: str
    strategy: str
    isl: int
    osl: int
    concurrency: int  # sequences running, over all replicas
    concurrency_note: str
    kv_fraction: float
    max_num_tokens: int
    kv_pool_bytes_per_device: float
    kv_bytes_per_sequence_per_device: float  # at the mean context, on the devices its replica spans
    decode_s: float  # the decode step alone at the mean context
    prefill_s: float  # an iteration's prefill share alone (N / OSL prompts, reading the weights once)
    iteration_s: float  # both in one step
    output_share_s: float  # of iteration_s, what the decode tokens pay (the Shapley rule); the rest the prefill
    prefill_tokens_per_iteration: float
    tpot_s: float
    ttft_s: float
    e2e_s: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    requests_per_s: float
    chips: int
    usd_per_hour: float
    usd_per_mtok_input: float
    usd_per_mtok_output: float
    usd_per_mtok_blended: float
    compiled: tuple[str, ...]  # the steps compiled, and what was derived from them
    notes: tuple[str, ...]
    time_model: str = "ideal roofline"  # what priced the steps (tracer.rates.rates_for, in words)
    admission: str = "paged"  # how sequences hold the KV pool: as they grow, or reserving ISL + OSL (ADMISSIONS)

    @property
    def output_tokens_per_s_per_chip(self) -> float:
        return self.output_tokens_per_s / self.chips

    @property
    def total_tokens_per_s(self) -> float:
        return self.output_tokens_per_s + self.input_tokens_per_s

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "output_tokens_per_s_per_chip": self.output_tokens_per_s_per_chip,
                "total_tokens_per_s": self.total_tokens_per_s, "compiled": list(self.compiled),
                "notes": list(self.notes)}


def _check(isl, osl, batch, kv_fraction, max_num_tokens, tpot_ms, ttft_ms, admission="paged"):
    if admission not in ADMISSIONS:
        raise ConfigError(f"--admission {admission!r} is not one of {', '.join(ADMISSIONS)}")
    for name, value in (("isl", isl), ("osl", osl), ("max-num-tokens", max_num_tokens)):
        if not is_int(value) or value <= 0:
            raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
    if batch != "max" and (not is_int(batch) or batch <= 0):
        raise ConfigError(f"--batch must be a positive integer or 'max', got {batch!r}")
    if not is_number(kv_fraction) or not 0 < kv_fraction <= 1:
        raise ConfigError(f"--kv-fraction must be a number in (0, 1], got {kv_fraction!r} (vLLM's default: 0.9)")
    for name, value in (("tpot-ms", tpot_ms), ("ttft-ms", ttft_ms)):
        if value is not None and (not is_number(value) or value <= 0):
            raise ConfigError(f"--{name} must be a finite number of milliseconds > 0, got {value!r}")
    if batch != "max" and (tpot_ms is not None or ttft_ms is not None):
        raise ConfigError("--tpot-ms and --ttft-ms choose the concurrency themselves (the largest that meets them); "
                          "leave out --batch, or give --batch max")


@dataclass(frozen=True)
class _Setting:
    """What stays the same at every concurrency: the workload, the pool, and the compiled prefill."""

    model: object
    system: str
    strategy: str
    isl: int
    osl: int
    replicas: int
    kv_fraction: float
    max_num_tokens: int
    pool: float
    prefill: Phase
    kw: dict
    admission: str = "paged"


def serving(model: str = "llama3-8b", system: str = "h200x1", strategy: str = "tp", isl: int = 1000,
            osl: int = 1000, batch: int | str = "max", kv_fraction: float = DEFAULT_KV_FRACTION,
            max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, tpot_ms: float | None = None, ttft_ms: float | None = None,
            admission: str = "paged", **kw) -> Serving:
    """The steady state of `batch` concurrent sequences (or the most the KV pool and token budget allow: "max"; or
    the most of those whose TPOT and TTFT meet `tpot_ms` and `ttft_ms`) of ISL prompt and OSL output tokens. kw:
    trace's weights, kv_cache, dtype, compiler, routing, fusion, usd_per_chip_hour."""
    _check(isl, osl, batch, kv_fraction, max_num_tokens, tpot_ms, ttft_ms, admission)
    strat = get_strategy(strategy)
    replicas = strat.ways("batch", strat.mesh_shape(get_system(system)))
    budget_n = int(max_num_tokens // (1 + isl / osl))  # running sequences per replica the token budget allows
    if budget_n < 1:
        raise ConfigError(f"--max-num-tokens {max_num_tokens} cannot hold one sequence's share of decode and "
                          f"prefill (1 + {isl}/{osl} tokens an iteration); raise it")
    n = replicas if batch == "max" else batch
    model_at, first = _decode_model(model, system, strategy, (n,), isl, osl, kw)
    pool, fits_n = _pool(model_at, first, n, replicas, isl, osl, kv_fraction, admission)
    s_pre = setup(model, system, strategy, batch=replicas, prompt=isl, context=isl, **kw)
    prefill = price(s_pre, _compiled(s_pre, "prefill"), find_max_batch=False).phases["prefill"]
    setting = _Setting(model, system, strategy, isl, osl, replicas, kv_fraction, max_num_tokens, pool, prefill, kw,
                       admission)
    if batch != "max":
        return _figures(setting, n, model_at, first, "as given", _over(n, replicas, budget_n, fits_n, setting))
    top = min(fits_n, budget_n) * replicas
    if top < replicas:
        raise ConfigError(f"not one sequence of {isl} + {osl} tokens fits the KV pool ({pool / 1e9:.1f} GB per "
                          f"device) beside the weights; try a system with more HBM, or lower --isl/--osl")
    how = "the KV pool" if fits_n <= budget_n else f"the token budget (--max-num-tokens {max_num_tokens})"
    reserving = ", each sequence reserving ISL + OSL" if admission == "reserve" else ""
    note = (f"the most {how} allows{reserving}: {fits_n * replicas} by the KV pool, {budget_n * replicas} by the "
            "budget")
    if tpot_ms is None and ttft_ms is None:
        model_at, first = _decode_model(model, system, strategy, (top,), isl, osl, kw)
        return _figures(setting, top, model_at, first, note, ())
    return _meeting(setting, top, tpot_ms, ttft_ms, note)


def _pool(model_at: StepModel, first, n: int, replicas: int, isl: int, osl: int, kv_fraction: float,
          admission: str = "paged"):
    """(the KV pool per device, the most sequences per replica it holds at their mean context, or at ISL + OSL where
    each reserves it), from the decode steps at batch n; temporaries counted as growing with the batch (the lower
    bound)."""
    step = model_at.at(n, isl + (osl if admission == "reserve" else osl // 2), first.compiler)
    pool = kv_fraction * first.system.chip.hbm_bytes - step.weight_bytes
    per_seq = step.kv_cache_bytes / (n // replicas)  # per device, one sequence of its replica, at the mean context
    temp_per_seq = memory(step, first.system, "decode").temp / (n // replicas)
    return pool, int(pool // (per_seq + temp_per_seq))


def _over(n: int, replicas: int, budget_n: int, fits_n: int, setting: "_Setting") -> tuple[str, ...]:
    """Notes for a given concurrency beyond the token budget or the KV pool."""
    notes = []
    if n // replicas > budget_n:
        notes.append(f"{n} sequences need {n // replicas * (1 + setting.isl / setting.osl):.0f} tokens an iteration "
                     f"per replica, over --max-num-tokens {setting.max_num_tokens}: the prefill cannot keep up; "
                     "priced as if it did")
    if n // replicas > fits_n:
        notes.append(f"{n} sequences do not fit the KV pool (at most {fits_n * replicas}): priced as if they did")
    return tuple(notes)


def from_steps(model, system: str, strategy: str, isl: int, osl: int, n: int, decode: dict, prefill,
               provenance: tuple[str, ...], kv_fraction: float = DEFAULT_KV_FRACTION,
               max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, **kw) -> Serving:
    """The steady state of n sequences from decode steps at (n, ISL) and (n, ISL + OSL) and a prefill step of one
    prompt per replica, however they were had (compiled, or derived: a serving sweep); provenance says which."""
    _check(isl, osl, n, kv_fraction, max_num_tokens, None, None)
    first = setup(model, system, strategy, batch=n, prompt=isl, context=isl + osl, **kw)
    replicas = first.strategy.ways("batch", first.mesh)
    s_pre = setup(model, system, strategy, batch=replicas, prompt=isl, context=isl, **kw)
    pre = price(s_pre, {"prefill": prefill}, find_max_batch=False).phases["prefill"]
    model_at = StepModel.fit("decode", decode)
    pool, fits_n = _pool(model_at, first, n, replicas, isl, osl, kv_fraction)
    setting = _Setting(model, system, strategy, isl, osl, replicas, kv_fraction, max_num_tokens, pool, pre, kw)
    budget_n = int(max_num_tokens // (1 + isl / osl))
    result = _figures(setting, n, model_at, first, "as given", _over(n, replicas, budget_n, fits_n, setting))
    return dataclasses.replace(result, compiled=provenance)


def _meeting(setting: _Setting, top: int, tpot_ms, ttft_ms, fit_note: str) -> Serving:
    """The most sequences (a multiple of the replicas, at most `top`) whose TPOT and TTFT meet the targets: read off
    decode steps derived between a low concurrency and `top` (one structure), then compiled at the answer, which
    checks them. Where the two are not one structure (the CPU compiler's batch 1), the low end rises to 8 sequences a
    replica; below it, concurrencies are compiled one by one."""
    r = setting.replicas
    targets = ", ".join(f"{name} {ms:g} ms" for name, ms in (("TPOT", tpot_ms), ("TTFT", ttft_ms)) if ms is not None)

    def meets(x: Serving) -> bool:
        return (tpot_ms is None or x.tpot_s * 1e3 <= tpot_ms) and (ttft_ms is None or x.ttft_s * 1e3 <= ttft_ms)

    def compiled(n: int) -> Serving:
        m, first = _decode_model(setting.model, setting.system, setting.strategy, (n,), setting.isl, setting.osl,
                                 setting.kw)
        return _figures(setting, n, m, first, "", ())

    low = min(max(r, 8 * r), top)
    try:
        fitted, first = _decode_model(setting.model, setting.system, setting.strategy, tuple(sorted({low, top})),
                                      setting.isl, setting.osl, setting.kw)
    except StructureChanged:
        fitted = None
    at = (lambda n: _figures(setting, n, fitted, first, "", ())) if fitted else compiled
    good, bad = (low, None) if meets(at(low)) else (None, low)
    if good is not None and meets(at(top)):
        good = top
    elif good is not None:
        bad = top
    else:  # the low end misses: below it, one compile a concurrency
        at, good = compiled, (r if meets(compiled(r)) else None)
    if good is None:
        result = compiled(r)
        return dataclasses.replace(result, concurrency_note=f"no concurrency meets {targets}: {r} sequence(s) "
                                                            f"shown; {fit_note}")
    while bad is not None and bad - good > r:
        mid = (good + bad) // 2 // r * r
        good, bad = (mid, bad) if meets(at(mid)) else (good, mid)
    result = compiled(good)
    checked = "" if at is compiled else (f"; read off decode steps derived between {low} and {top} sequences, "
                                         "then compiled at this one")
    if not meets(result):
        checked += " (the compiled steps miss by a little: shown as compiled)"
    return dataclasses.replace(result, concurrency_note=f"the most that meet {targets}{checked}; {fit_note}")


def _decode_model(model, system, strategy, batches: tuple[int, ...], isl, osl, kw):
    """(the decode steps at these batches between contexts ISL and ISL + OSL, derived from those compiled at the
    corners; the setup at the first batch and ISL + OSL)."""
    at = {(b, c): setup(model, system, strategy, batch=b, prompt=isl, context=c, **kw)
          for b in batches for c in (isl, isl + osl)}
    steps = {k: _compiled(s, "decode")["decode"] for k, s in at.items()}
    return StepModel.fit("decode", steps), at[(batches[0], isl + osl)]


_RECENT: dict = {}  # the last steps compiled: the same workload priced at another time model compiles nothing


def _compiled(s, phase: str) -> dict:
    """A setup's step, compiled, or the same one compiled lately in this process (the time model, the price and the
    calibration do not change a program)."""
    key = (repr(s.cfg), s.system.name, s.strategy.name, s.work, s.compiler, phase)
    if key not in _RECENT:
        if len(_RECENT) >= 16:
            _RECENT.clear()
        _RECENT[key] = compile_steps(s.cfg, s.system, s.strategy, s.work, (phase,), s.compiler)
    return _RECENT[key]


def _figures(setting: _Setting, n: int, model_at: StepModel, first, note: str, notes: tuple) -> Serving:
    """The steady state of n sequences, from the decode steps `model_at` gives and the compiled prefill."""
    isl, osl, replicas = setting.isl, setting.osl, setting.replicas
    top, mean = isl + osl, isl + osl // 2
    derived = model_at.at(n, mean, first.compiler)
    s_mean = dataclasses.replace(first, work=Workload(n, isl, mean))
    decode = price(s_mean, {"decode": derived}, find_max_batch=False).phases["decode"]
    f = n / replicas / osl  # prompts per device per iteration
    iteration, decode_s, prefill_s = _iteration(decode, setting.prefill, f, s_mean.system, s_mean.rates)
    share = (decode_s + iteration - prefill_s) / 2
    chips = s_mean.system.n_chips
    usd_per_s = s_mean.system.usd_per_chip_hour * chips / 3600
    out_per_iter, in_per_iter = n, n * isl / osl
    chunk = max(setting.max_num_tokens - n // replicas, 1)
    ttft = math.ceil(isl / chunk) * iteration  # the iterations its chunks take, the first token out of the last
    return Serving(
        s_mean.cfg.name, s_mean.system.name, s_mean.strategy.name, isl, osl, n, note, setting.kv_fraction,
        setting.max_num_tokens, setting.pool, derived.kv_cache_bytes / (n // replicas), decode_s, prefill_s,
        iteration, share, in_per_iter, iteration, ttft, ttft + (osl - 1) * iteration, out_per_iter / iteration,
        in_per_iter / iteration, n / osl / iteration, chips, usd_per_s * 3600,
        usd_per_s * (iteration - share) / in_per_iter * 1e6, usd_per_s * share / out_per_iter * 1e6,
        usd_per_s * iteration / (in_per_iter + out_per_iter) * 1e6,
        (f"decode at batch {n}, contexts {isl} and {top} (compiled); at {mean} (derived)",
         f"prefill of one {isl}-token prompt per replica (compiled)"),
        (*notes, f"step times: {s_mean.time_model}"), s_mean.time_model, setting.admission)


def _iteration(decode: Phase, prefill: Phase, f: float, system, rates) -> tuple[float, float, float]:
    """(the iteration's seconds, the decode step's alone, the prefill share's alone): module docstring."""
    d, p = decode.time, prefill.time
    if rates is not None:  # each kernel at its achieved rate: tracer.timing.iteration_kernels_s
        comms, overhead = d.comms_s + f * p.comms_s, rates.overhead_s
        both = iteration_kernels_s(decode.step, prefill.step, f, system, rates) + comms + overhead
        alone = iteration_kernels_s(None, prefill.step, f, system, rates) + f * p.comms_s + overhead
        return both, d.step_s, alone
    weights_s = prefill.step.cost.total.argument_bytes / system.chip.hbm_bw  # its weight reads, shared with decode's
    extra = max(p.memory_s - weights_s, 0.0)  # its other traffic
    both = max(d.compute_s + f * p.compute_s, d.memory_s + f * extra) + d.comms_s + f * p.comms_s
    alone = max(f * p.compute_s, weights_s + f * extra) + f * p.comms_s
    return both, d.step_s, alone
