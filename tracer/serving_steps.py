"""The compiled steps a serving steady state is priced from, and its result (tracer.serving says how they combine):
decode steps derived between those compiled at a workload's contexts, a compiled prefill, the KV pool they leave, and
one iteration's seconds, kept apart so that the techniques built on them (tracer.speculation, tracer.pipeline,
tracer.disagg) share one copy."""

import dataclasses
from dataclasses import dataclass

from base.inputs import ConfigError
from models.moe import reached_fraction
from tracer.api import price, setup
from tracer.compile import compile_steps
from tracer.derive import StepModel
from tracer.results import Phase
from tracer.roofline import charge_routed_experts, memory, splits, tokens_per_expert_copy
from tracer.timing import iteration_kernels_s

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
    time_model: str = "ideal roofline"  # what priced the steps (tracer.rates.rates_for, in words)
    admission: str = "paged"  # how sequences hold the KV pool: as they grow, or reserving ISL + OSL (ADMISSIONS)
    speculative: int = 0  # tokens drafted a step (0: none)
    acceptance: float = 0.0  # the assumed chance a drafted token is accepted, given those before it were
    draft: str = ""  # what drafts them: "mtp" (a head of one of the model's layers) or a draft model
    tokens_per_step: float = 1.0  # output tokens a sequence gains an iteration (1 without speculation)
    draft_s: float = 0.0  # of iteration_s: the draft's steps

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


def decode_model(model, system, strategy, batches: tuple[int, ...], isl, osl, kw, queries: int = 1):
    """(the decode steps at these batches between contexts ISL and ISL + OSL, derived from those compiled at the
    corners; the setup at the first batch and ISL + OSL). `queries`: positions a sequence (speculative
    verification)."""
    at = {(b, c): setup(model, system, strategy, batch=b, prompt=isl, context=c, queries=queries, **kw)
          for b in batches for c in (isl, isl + osl)}
    steps = {k: compiled(s, "decode")["decode"] for k, s in at.items()}
    return StepModel.fit("decode", steps), at[(batches[0], isl + osl)]


_RECENT: dict = {}  # the last steps compiled: the same workload priced at another time model compiles nothing


def compiled(s, phase: str) -> dict:
    """A setup's step, compiled, or the same one compiled lately in this process (the time model, the price and the
    calibration do not change a program)."""
    key = (repr(s.cfg), s.system.name, s.strategy.name, s.work, s.compiler, phase)
    if key not in _RECENT:
        if len(_RECENT) >= 16:
            _RECENT.clear()
        _RECENT[key] = compile_steps(s.cfg, s.system, s.strategy, s.work, (phase,), s.compiler)
    return _RECENT[key]


def prefill_phase(model, system: str, strategy: str, isl: int, replicas: int, kw: dict):
    """(the compiled prefill of one ISL-token prompt per replica, priced; its setup)."""
    s_pre = setup(model, system, strategy, batch=replicas, prompt=isl, context=isl, **kw)
    return price(s_pre, compiled(s_pre, "prefill"), find_max_batch=False).phases["prefill"], s_pre


def kv_pool(model_at: StepModel, first, n: int, replicas: int, isl: int, osl: int, kv_fraction: float,
          admission: str = "paged", draft: tuple[float, float] = (0.0, 0.0)):
    """(the KV pool per device, the most sequences per replica it holds at their mean context, or at ISL + OSL where
    each reserves it), from the decode steps at batch n; temporaries counted as growing with the batch (the lower
    bound). `draft`: a speculative draft's (weight bytes, cache bytes a sequence) per device, held beside them."""
    step = model_at.at(n, isl + (osl if admission == "reserve" else osl // 2), first.compiler)
    held = memory(step, first.system, "decode")
    weights = held.weights + draft[0]
    if weights >= held.capacity:
        raise ConfigError(f"the weights{' and the draft' if draft[0] else ''} ({weights / 1e9:.1f} GB per device) "
                          f"exceed the {first.system.chip.name}'s {held.capacity / 1e9:.0f} GB: use more "
                          "chips (a larger system, or a strategy that splits the weights) or smaller --weights")
    pool = kv_fraction * held.capacity - weights  # <= 0: none (the weights fill the fraction)
    per_seq = held.kv_cache / (n // replicas) + draft[1]  # per device, a sequence of its replica, mean context
    return pool, max(int(pool // (per_seq + held.temp / (n // replicas))), 0)


def chunk_reach(s_pre, f: float) -> float | None:
    """Of the routed experts a device holds, the share a chunk of f of the compiled prefill's prompts is expected
    to reach under uniform routing (models.moe.reached_fraction), where the compiled prefill's charge is for its
    whole prompts' tokens: a few prompt tokens alone reach few experts. None: nothing to lower (a dense model, worst
    routing, or the whole prompts)."""
    cfg = s_pre.cfg
    if not cfg.is_moe or s_pre.routing != "uniform" or f >= 1:
        return None
    tokens = f * tokens_per_expert_copy(s_pre.work, "prefill", splits(s_pre.strategy, s_pre.mesh))
    return reached_fraction(cfg.n_experts, cfg.n_active, tokens)


def iteration_time(decode: Phase, prefill: Phase, f: float, system, rates, draft_s: float = 0.0,
                   reached: float | None = None) -> tuple[float, float, float]:
    """(the iteration's seconds, the decode step's alone, the prefill share's alone): module docstring. `draft_s`:
    a speculative draft's steps, which run before the verification and count with the decode; `reached`: the
    prefill share's routed-expert reach alone (chunk_reach)."""
    d, p = decode.time, prefill.time
    alone = prefill_alone(prefill, f, system, rates, reached)
    if rates is not None:  # each kernel at its achieved rate: tracer.timing.iteration_kernels_s
        comms, overhead = d.comms_s + f * p.comms_s, d.overhead_s  # the decode step's: its sequences'
        both = iteration_kernels_s(decode.step, prefill.step, f, system, rates) + comms + overhead + draft_s
        return both, d.step_s + draft_s, alone
    extra = _prefill_memory(prefill, system)[1]
    both = max(d.compute_s + f * p.compute_s, d.memory_s + f * extra) + d.comms_s + f * p.comms_s + draft_s
    return both, d.step_s + draft_s, alone


def prefill_alone(prefill: Phase, f: float, system, rates, reached: float | None = None) -> float:
    """Seconds of an iteration that prefills f of the compiled prefill's prompts and nothing else: its weights read
    once (its routed experts' as far as the chunk reaches them: `reached`, chunk_reach), f of the rest, and the
    host overhead of f prompts a replica (the compiled prefill holds one each; module docstring)."""
    if reached is not None:
        prefill = dataclasses.replace(prefill, step=charge_routed_experts(prefill.step, reached))
    p = prefill.time
    if rates is not None:
        return iteration_kernels_s(None, prefill.step, f, system, rates) + f * p.comms_s + rates.overhead(f)
    weights_s, extra = _prefill_memory(prefill, system)
    return max(f * p.compute_s, weights_s + f * extra) + f * p.comms_s


def _prefill_memory(prefill: Phase, system) -> tuple[float, float]:
    """At the ideal roofline, (seconds of the prefill's weight reads, which decode's matmuls stream already in a
    mixed iteration; seconds of its other HBM traffic)."""
    weights_s = prefill.step.cost.total.argument_bytes / system.chip.hbm_bw
    return weights_s, max(prefill.time.memory_s - weights_s, 0.0)
