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
    decode's share = (decode alone + iteration - prefill alone) / 2, prefill's = iteration - decode's,
each alone taken at most the iteration (work added never makes an iteration shorter; where a party's priced alone
time exceeds both together, as the compiled step's fixed costs can for a small share, both together is used: no
share is negative). A prefill share alone reads the routed experts its chunk's tokens are expected to reach, not
those of the whole prompts its program was compiled for (serving_steps.chunk_reach).
The marginal rule in one order (decode alone, prefill the rest) would let whichever runs second ride nearly free in
the time the first leaves idle (prefill's compute under decode's memory-bound time); this one splits that saving
evenly. Each output says which time model priced it.
Speculative decoding (`speculative` K, Speculation): an iteration runs K decode steps of the draft (a multi-token-
prediction head, or a draft model: compiled, at the mean context), then verifies the K drafted tokens of every
sequence in one decode step of K + 1 positions a sequence (compiled as such: each position attends to the cache and
the positions before it, logits at all of them) mixed with the prefill share as above. A sequence gains
E = (1 - a^(K+1)) / (1 - a) tokens an iteration at acceptance a (an assumption the user gives), so TPOT is the
iteration / E, N E / OSL sequences end an iteration, and N (K + 1 + E ISL / OSL) tokens an iteration must fit the
budget. The draft's weights and its cache of each sequence are held beside the model's, out of the KV pool. The
draft's steps count with the decode tokens in the split of the iteration's price.
"""

import dataclasses
import math
from dataclasses import dataclass

from base.inputs import ConfigError, is_int, is_number
from meshes.strategies import get_strategy
from meshes.systems import get_system
from tracer.api import price, setup
from tracer.derive import StepModel, StructureChanged
from tracer.pipeline import pipelined
from tracer.results import Phase
from tracer.serving_steps import (
    DEFAULT_KV_FRACTION,
    DEFAULT_MAX_NUM_TOKENS,
    Serving,
    chunk_reach,
    decode_model,
    iteration_time,
    kv_pool,
    prefill_phase,
)
from tracer.speculation import Speculation, check_speculation, draft_memory, draft_seconds, iteration_tokens, step_shape
from tracer.step import Workload

ADMISSIONS = ("paged", "reserve")  # sequences hold their context as it grows; or reserve ISL + OSL (TensorRT-LLM)


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
    prefill_setup: object  # its Setup (serving_steps.chunk_reach reads it)
    kw: dict
    admission: str = "paged"
    spec: Speculation | None = None
    decode_only: bool = False  # disaggregated: the prompts are prefilled elsewhere (tracer.disagg)

    @property
    def queries(self) -> int:
        return step_shape(self.spec)[0]


def serving(model: str = "llama3-8b", system: str = "h200x1", strategy: str = "tp", isl: int = 1000,
            osl: int = 1000, batch: int | str = "max", kv_fraction: float = DEFAULT_KV_FRACTION,
            max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, tpot_ms: float | None = None, ttft_ms: float | None = None,
            admission: str = "paged", speculative: int = 0, acceptance: float | None = None, draft: str = "mtp",
            decode_only: bool = False, **kw) -> Serving:
    """The steady state of `batch` concurrent sequences (or the most the KV pool and token budget allow: "max"; or
    the most of those whose TPOT and TTFT meet `tpot_ms` and `ttft_ms`) of ISL prompt and OSL output tokens; with
    `speculative` K, each iteration drafts K tokens a sequence (by `draft`) and verifies them (Speculation);
    `decode_only`: the decode side of a disaggregated system, its prompts prefilled elsewhere (tracer.disagg). kw:
    trace's weights, kv_cache, dtype, compiler, routing, fusion, usd_per_chip_hour."""
    _check(isl, osl, batch, kv_fraction, max_num_tokens, tpot_ms, ttft_ms, admission)
    spec = check_speculation(speculative, acceptance, draft)
    strat = get_strategy(strategy)
    if strat.pipeline:
        if decode_only:
            raise ConfigError(f"strategy {strat.name} pipelines the layers: --disagg takes a strategy without stages")
        return pipelined(serving, model, system, strategy, isl, osl, batch, kv_fraction, max_num_tokens, admission,
                         speculative, acceptance, draft, kw, tpot_ms, ttft_ms)
    replicas = strat.replicas(get_system(system))
    queries = step_shape(spec)[0]
    per_seq = iteration_tokens(spec, isl, osl, decode_only)
    budget_n = int(max_num_tokens // per_seq)  # running sequences per replica the token budget allows
    if budget_n < 1:
        raise ConfigError(f"--max-num-tokens {max_num_tokens} cannot hold one sequence's share of decode and "
                          f"prefill ({per_seq:.3g} tokens an iteration); raise it")
    n = replicas if batch == "max" else batch
    model_at, first = decode_model(model, system, strategy, (n,), isl, osl, kw, queries)
    draft_mem = draft_memory(spec, first, system, strategy, n, isl, osl, kw)
    pool, fits_n = kv_pool(model_at, first, n, replicas, isl, osl, kv_fraction, admission, draft_mem)
    prefill, s_pre = prefill_phase(model, system, strategy, isl, replicas, kw)
    setting = _Setting(model, system, strategy, isl, osl, replicas, kv_fraction, max_num_tokens, pool, prefill, s_pre,
                       kw, admission, spec, decode_only)
    if batch != "max":
        return _figures(setting, n, model_at, first, "as given", _over(n, replicas, budget_n, fits_n, setting))
    top = min(fits_n, budget_n) * replicas
    if top < replicas:
        raise ConfigError(f"not one sequence of {isl} + {osl} tokens fits the KV pool ({max(pool, 0) / 1e9:.1f} GB "
                          f"per device) beside the weights; try a system with more HBM, a higher --kv-fraction, or "
                          "lower --isl/--osl")
    how = "the KV pool" if fits_n <= budget_n else f"the token budget (--max-num-tokens {max_num_tokens})"
    reserving = ", each sequence reserving ISL + OSL" if admission == "reserve" else ""
    note = (f"the most {how} allows{reserving}: {fits_n * replicas} by the KV pool, {budget_n * replicas} by the "
            "budget")
    if tpot_ms is None and ttft_ms is None:
        model_at, first = decode_model(model, system, strategy, (top,), isl, osl, kw, queries)
        return _figures(setting, top, model_at, first, note, ())
    return _meeting(setting, top, tpot_ms, ttft_ms, note)


def _over(n: int, replicas: int, budget_n: int, fits_n: int, setting: "_Setting") -> tuple[str, ...]:
    """Notes for a given concurrency beyond the token budget or the KV pool."""
    notes = []
    if n // replicas > budget_n:
        notes.append(f"{n} sequences need {n // replicas * (1 + setting.isl / setting.osl):.0f} tokens an iteration "
                     f"per replica, over --max-num-tokens {setting.max_num_tokens}: the prefill cannot keep up; "
                     "priced as if it did")
    if n // replicas > fits_n:
        held = (f"at most {fits_n * replicas}" if setting.pool > 0 else
                f"the weights leave none in --kv-fraction {setting.kv_fraction:g} of HBM: raise it to hold them")
        notes.append(f"{n} sequences do not fit the KV pool ({held}): priced as if they did")
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
    pool, fits_n = kv_pool(model_at, first, n, replicas, isl, osl, kv_fraction)
    setting = _Setting(model, system, strategy, isl, osl, replicas, kv_fraction, max_num_tokens, pool, pre, s_pre, kw)
    budget_n = int(max_num_tokens // iteration_tokens(None, isl, osl))
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
        m, first = decode_model(setting.model, setting.system, setting.strategy, (n,), setting.isl, setting.osl,
                                 setting.kw, setting.queries)
        return _figures(setting, n, m, first, "", ())

    low = min(max(r, 8 * r), top)
    try:
        fitted, first = decode_model(setting.model, setting.system, setting.strategy, tuple(sorted({low, top})),
                                      setting.isl, setting.osl, setting.kw, setting.queries)
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


def _figures(setting: _Setting, n: int, model_at: StepModel, first, note: str, notes: tuple) -> Serving:
    """The steady state of n sequences, from the decode steps `model_at` gives and the compiled prefill."""
    isl, osl, replicas, spec = setting.isl, setting.osl, setting.replicas, setting.spec
    top, mean = isl + osl, isl + osl // 2
    derived = model_at.at(n, mean, first.compiler)
    s_mean = dataclasses.replace(first, work=Workload(n, isl, mean, setting.queries))
    decode = price(s_mean, {"decode": derived}, find_max_batch=False).phases["decode"]
    gained = step_shape(spec)[1]  # output tokens a sequence an iteration
    draft_s = draft_seconds(spec, first, setting.system, setting.strategy, isl, osl, setting.kw, model_at.batches,
                            n) if spec else 0.0
    f = n * gained / replicas / osl  # prompts per device per iteration
    if setting.decode_only:  # prefilled elsewhere: every iteration is decode's
        iteration = decode_s = decode.time.step_s + draft_s
        prefill_s = 0.0
    else:
        iteration, decode_s, prefill_s = iteration_time(decode, setting.prefill, f, s_mean.system, s_mean.rates,
                                                    draft_s, chunk_reach(setting.prefill_setup, f))
    share = (min(decode_s, iteration) + iteration - min(prefill_s, iteration)) / 2  # each alone at most both
    chips = s_mean.system.n_chips
    usd_per_s = s_mean.system.usd_per_chip_hour * chips / 3600
    out_per_iter, in_per_iter = n * gained, n * gained * isl / osl
    chunk = max(setting.max_num_tokens - n * setting.queries // replicas, 1)
    ttft = math.ceil(isl / chunk) * iteration  # the iterations its chunks take, the first token out of the last
    ttft = 0.0 if setting.decode_only else ttft  # the prefill side's (tracer.disagg)
    tpot = iteration / gained
    positions = f" x {setting.queries} positions (verifying {spec.k} drafted)" if spec else ""
    compiled = (f"decode at batch {n}{positions}, contexts {isl} and {top} (compiled); at {mean} (derived)",
                f"prefill of one {isl}-token prompt per replica (compiled)")
    if spec:
        compiled += (f"draft ({spec.draft_config(first.cfg).name}) decode at batch {n}, contexts {isl} and {top} "
                     f"(compiled); at {mean} (derived)",)
        notes = (*notes, f"speculative decoding: {spec.k} tokens drafted a step by {spec.draft}, each accepted with "
                         f"chance {spec.acceptance:g} given those before it (an assumption, independent tokens: "
                         f"Leviathan et al. 2023): {gained:.2f} tokens a sequence an iteration")
    return Serving(
        s_mean.cfg.name, s_mean.system.name, s_mean.strategy.name, isl, osl, n, note, setting.kv_fraction,
        setting.max_num_tokens, setting.pool, derived.kv_cache_bytes / (n // replicas), decode_s, prefill_s,
        iteration, share, in_per_iter, tpot, ttft, ttft + (osl - 1) * tpot, out_per_iter / iteration,
        in_per_iter / iteration, n * gained / osl / iteration, chips, usd_per_s * 3600,
        usd_per_s * (iteration - share) / in_per_iter * 1e6, usd_per_s * share / out_per_iter * 1e6,
        usd_per_s * iteration / (in_per_iter + out_per_iter) * 1e6, compiled,
        (*notes, f"step times: {s_mean.time_model}"), s_mean.time_model, setting.admission,
        spec.k if spec else 0, spec.acceptance if spec else 0.0, spec.draft if spec else "", gained, draft_s)


