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
  each on average (paged: a block per 16 tokens as they grow), which bounds N.
A new request's prompt goes in chunks of what the budget leaves (max_num_tokens - N per replica), one an iteration,
and its first token comes out of the last: TTFT = ceil(ISL / chunk) iterations (no queueing: requests arrive as
others end). TPOT is one iteration; end to end, TTFT + (OSL - 1) TPOT.
One iteration is priced as one step over both kinds of tokens: the decode step at the mean context plus the share
N / OSL of a compiled prefill of one whole prompt per replica (chunks of it cost what the whole does: the same
FLOPs and cache), less that prefill's weight reads, which the decode tokens' matmuls already stream:
    compute = decode's + f prefill's, memory = decode's + f (prefill's - its weights'), comms = decode's + f prefill's,
    iteration = max(compute, memory) + comms  (tracer.roofline.StepTime), f = N / (replicas OSL) prompts per device.
Input and output prices split the iteration's chip-time between its decode and prefill tokens by the Shapley rule
for two parties: each pays the average of its two marginal times, what it takes alone and what it adds to the other:
    decode's share = (decode alone + iteration - prefill alone) / 2, prefill's = iteration - decode's.
The marginal rule in one order (decode alone, prefill the rest) would let whichever runs second ride nearly free in
the time the first leaves idle (prefill's compute under decode's memory-bound time); this one splits that saving
evenly. Every step is priced at the chips' peaks, as `tracer trace` prices them (the achieved-rate model is the
issue's section 2, to come).
"""

import dataclasses
import math
from dataclasses import dataclass

from base.inputs import ConfigError, is_int, is_number
from meshes.strategies import get_strategy
from meshes.systems import get_system
from tracer.api import price, setup
from tracer.compile import compile_steps
from tracer.derive import StepModel
from tracer.results import Phase
from tracer.roofline import memory
from tracer.step import Workload

DEFAULT_KV_FRACTION = 0.9  # vLLM's gpu_memory_utilization default
DEFAULT_MAX_NUM_TOKENS = 8192  # vLLM's max_num_batched_tokens default with chunked prefill (V1 engine)


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


def _check(isl, osl, batch, kv_fraction, max_num_tokens):
    for name, value in (("isl", isl), ("osl", osl), ("max-num-tokens", max_num_tokens)):
        if not is_int(value) or value <= 0:
            raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
    if batch != "max" and (not is_int(batch) or batch <= 0):
        raise ConfigError(f"--batch must be a positive integer or 'max', got {batch!r}")
    if not is_number(kv_fraction) or not 0 < kv_fraction <= 1:
        raise ConfigError(f"--kv-fraction must be a number in (0, 1], got {kv_fraction!r} (vLLM's default: 0.9)")


def serving(model: str = "llama3-8b", system: str = "h200x1", strategy: str = "tp", isl: int = 1000,
            osl: int = 1000, batch: int | str = "max", kv_fraction: float = DEFAULT_KV_FRACTION,
            max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, **kw) -> Serving:
    """The steady state of `batch` concurrent sequences (or the most the KV pool and token budget allow: "max") of
    ISL prompt and OSL output tokens. kw: trace's weights, kv_cache, dtype, compiler, routing, fusion, ..."""
    _check(isl, osl, batch, kv_fraction, max_num_tokens)
    strat = get_strategy(strategy)
    replicas = strat.ways("batch", strat.mesh_shape(get_system(system)))
    budget_n = int(max_num_tokens // (1 + isl / osl))  # running sequences per replica the token budget allows
    if budget_n < 1:
        raise ConfigError(f"--max-num-tokens {max_num_tokens} cannot hold one sequence's share of decode and "
                          f"prefill (1 + {isl}/{osl} tokens an iteration); raise it")
    n = replicas if batch == "max" else batch
    notes = []
    model_at, first = _decode_model(model, system, strategy, n, isl, osl, kw)
    step = model_at.at(n, isl + osl // 2, first.compiler)
    pool = kv_fraction * first.system.chip.hbm_bytes - step.weight_bytes
    per_seq = step.kv_cache_bytes / (n // replicas)  # per device, one sequence of its replica, at the mean context
    temp_per_seq = memory(step, first.system, "decode").temp / (n // replicas)
    fits_n = int(pool // (per_seq + temp_per_seq))  # temporaries counted as growing with the batch: the lower bound
    if batch == "max":
        n = min(fits_n, budget_n) * replicas
        if n < replicas:
            raise ConfigError(f"not one sequence of {isl} + {osl} tokens fits the KV pool ({pool / 1e9:.1f} GB per "
                              f"device) beside the weights; try a system with more HBM, or lower --isl/--osl")
        how = ("the KV pool" if fits_n <= budget_n else f"the token budget (--max-num-tokens {max_num_tokens})")
        note = f"the most {how} allows: {fits_n * replicas} by the KV pool, {budget_n * replicas} by the budget"
        model_at, first = _decode_model(model, system, strategy, n, isl, osl, kw)
    else:
        note = "as given"
        if n // replicas > budget_n:
            notes.append(f"{n} sequences need {n // replicas * (1 + isl / osl):.0f} tokens an iteration per replica,"
                         f" over --max-num-tokens {max_num_tokens}: the prefill cannot keep up; priced as if it did")
        if n // replicas > fits_n:
            notes.append(f"{n} sequences do not fit the KV pool (at most {fits_n * replicas}): priced as if they did")
    return _steady(first, model_at, model, system, strategy, isl, osl, n, replicas, note, kv_fraction,
                   max_num_tokens, pool, kw, tuple(notes))


def _decode_model(model, system, strategy, n, isl, osl, kw):
    """(the decode steps at batch n between contexts ISL and ISL + OSL, derived from the two compiled there; the
    setup at ISL + OSL)."""
    at = {c: setup(model, system, strategy, batch=n, prompt=isl, context=c, **kw) for c in (isl, isl + osl)}
    steps = {(n, c): compile_steps(s.cfg, s.system, s.strategy, s.work, ("decode",), s.compiler)["decode"]
             for c, s in at.items()}
    return StepModel.fit("decode", steps), at[isl + osl]


def _steady(first, model_at, model, system, strategy, isl, osl, n, replicas, note, kv_fraction, max_num_tokens, pool,
            kw, notes):
    top, mean = isl + osl, isl + osl // 2
    derived = model_at.at(n, mean, first.compiler)
    s_mean = dataclasses.replace(first, work=Workload(n, isl, mean))
    decode = price(s_mean, {"decode": derived}, find_max_batch=False).phases["decode"]
    s_pre = setup(model, system, strategy, batch=replicas, prompt=isl, context=isl, **kw)
    prefill = price(s_pre, compile_steps(s_pre.cfg, s_pre.system, s_pre.strategy, s_pre.work, ("prefill",),
                                         s_pre.compiler), find_max_batch=False).phases["prefill"]
    f = n / replicas / osl  # prompts per device per iteration
    iteration, decode_s, prefill_s = _iteration(decode, prefill, f, s_mean.system.chip.hbm_bw)
    share = (decode_s + iteration - prefill_s) / 2
    chips = s_mean.system.n_chips
    usd_per_s = s_mean.system.usd_per_chip_hour * chips / 3600
    out_per_iter, in_per_iter = n, n * isl / osl
    chunk = max(max_num_tokens - n // replicas, 1)
    ttft = math.ceil(isl / chunk) * iteration  # the iterations its chunks take, the first token out of the last
    return Serving(
        s_mean.cfg.name, s_mean.system.name, s_mean.strategy.name, isl, osl, n, note, kv_fraction, max_num_tokens,
        pool, derived.kv_cache_bytes / (n // replicas), decode_s, prefill_s, iteration, share, in_per_iter, iteration,
        ttft, ttft + (osl - 1) * iteration, out_per_iter / iteration, in_per_iter / iteration, n / osl / iteration,
        chips, usd_per_s * 3600, usd_per_s * (iteration - share) / in_per_iter * 1e6,
        usd_per_s * share / out_per_iter * 1e6, usd_per_s * iteration / (in_per_iter + out_per_iter) * 1e6,
        (f"decode at batch {n}, contexts {isl} and {top} (compiled); at {mean} (derived)",
         f"prefill of one {isl}-token prompt per replica (compiled)"),
        (*notes, "every step at the chips' peaks (no achieved-rate model yet)"))


def _iteration(decode: Phase, prefill: Phase, f: float, hbm_bw: float) -> tuple[float, float, float]:
    """(the iteration's seconds, the decode step's alone, the prefill share's alone): module docstring."""
    d, p = decode.time, prefill.time
    weights_s = prefill.step.cost.total.argument_bytes / hbm_bw  # its weight reads, shared with decode's
    extra = max(p.memory_s - weights_s, 0.0)  # its other traffic
    both = max(d.compute_s + f * p.compute_s, d.memory_s + f * extra) + d.comms_s + f * p.comms_s
    alone = max(f * p.compute_s, weights_s + f * extra) + f * p.comms_s
    return both, d.step_s, alone
