"""The Python API: `trace(...)` compiles a model's prefill and decode steps on a system and prices them.

Its result's `to_dict()` is the object `tracer trace --json` prints.
"""

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from base.inputs import ConfigError, is_int, is_number
from meshes.strategies import Strategy, get_strategy
from meshes.systems import System, get_system
from models.config import ModelConfig
from models.files import get_model
from models.moe import expert_slots, plan_groups, reached_fraction
from tracer.compile import check_devices, check_splits, choose_compiler, compile_steps
from tracer.defaults import DEFAULTS, FUSIONS, ROUTINGS
from tracer.derive import StepModel, StructureChanged, structure_key
from tracer.errors import DoesNotFit
from tracer.notes import notes
from tracer.rates import Rates, rates_for
from tracer.results import CollectiveTime, MoePlan, PartCost, Phase, TraceResult
from tracer.roofline import (
    Memory,
    analytic,
    charge_routed_experts,
    fused_kernels,
    memory,
    splits,
    tokens_per_expert_copy,
    usd_per_mtok,
)
from tracer.search import BatchChoice, choose_batch, largest_fitting
from tracer.step import CompiledStep, Workload
from tracer.timing import StepTime, collective_time, link, step_time


def _moe_plan(cfg: ModelConfig, strategy: Strategy, mesh: dict, work: Workload, phase: str) -> MoePlan | None:
    """The dispatch plan the model compiled (models.moe.choose_groups, same inputs) and what it implies."""
    if not cfg.is_moe:
        return None
    tokens = work.tokens(phase)
    split = phase == "prefill" and strategy.ways("seq", mesh) > 1  # split prompts: each device's part a row
    _, merged, groups, plan = plan_groups(cfg, tokens, split,
                                          lambda axis, shared=None: strategy.ways(axis, mesh, shared=shared))
    shards = strategy.ways("experts", mesh)
    slots = expert_slots(cfg, shards)
    return MoePlan(plan.kernel, slots, slots - cfg.n_experts, groups, tokens // groups, shards, merged,
                   cfg.capacity_factor, plan.bins, plan.capacity, plan.slots / plan.assignments,
                   plan.expected_drop_fraction())


def _phase(name, step, cfg, system, work, mesh, strategy, routing, fusion, rates: Rates | None = None) -> Phase:
    n_chips = math.prod(mesh.values())
    split = splits(strategy, mesh)
    compiled_hbm = step.cost.hbm_bytes
    if fusion == "kernels":
        step = fused_kernels(step)
    if cfg.is_moe and routing == "uniform":
        step = charge_routed_experts(step, reached_fraction(cfg.n_experts, cfg.n_active,
                                                            tokens_per_expert_copy(work, name, split)))
    time = step_time(step, system, rates, name, strategy.overlap, work.batch / strategy.ways("batch", mesh))
    tokens = work.tokens(name)
    per_chip = tokens / time.step_s / n_chips
    collectives = tuple(CollectiveTime(c, link(system, c), collective_time(system, c, rates))
                        for c in step.cost.collectives)
    held = memory(step, system, name)
    read = held.kv_cache * cfg.kv_read_fraction(work.context) if name == "decode" else 0.0
    return Phase(name, step, time, held, tokens, per_chip, usd_per_mtok(system, per_chip),
                 analytic(cfg, work, name, split, routing), collectives,
                 _moe_plan(cfg, strategy, mesh, work, name), _breakdown(step, system, time, rates), compiled_hbm, read)


def _breakdown(step: CompiledStep, system, time: StepTime, rates: Rates | None) -> tuple[PartCost, ...]:
    """Per part of the model (the named scopes in the program's op metadata): its FLOPs, HBM bytes and wire bytes,
    and their compute, memory and communication times on this system (compute at the step's own seconds per
    FLOP, its mix of precisions; memory at the step's own seconds per byte)."""
    parts = {scope: {"flops": v.flops, "hbm_bytes": v.hbm_bytes, "wire_bytes": 0.0, "comms_s": 0.0}
             for scope, v in step.cost.by_scope().items()}
    for c in step.cost.collectives:
        seconds = collective_time(system, c, rates)
        for scope, wire in c.scopes:
            part = parts.setdefault(scope, {"flops": 0.0, "hbm_bytes": 0.0, "wire_bytes": 0.0, "comms_s": 0.0})
            part["wire_bytes"] += wire
            part["comms_s"] += seconds * wire / c.wire_bytes_per_device if c.wire_bytes_per_device else 0.0
    per_flop = time.compute_s / step.cost.flops if step.cost.flops else 0.0
    per_byte = time.memory_s / step.cost.hbm_bytes if step.cost.hbm_bytes else 0.0
    return tuple(PartCost(scope, **p, compute_s=p["flops"] * per_flop, memory_s=p["hbm_bytes"] * per_byte)
                 for scope, p in parts.items())


def _max_batch(cfg, system, strategy, work: Workload, mem: Memory, replicas: int, compiler: str,
               confirm: bool) -> tuple[int, str]:
    """The largest decode batch that fits (tracer.search), estimated from the compiled decode step; with `confirm`,
    checked by compiling the decode step at it."""

    def decode_memory(batch: int) -> Memory:
        trial = dataclasses.replace(work, batch=batch)
        try:
            step = compile_steps(cfg, system, strategy, trial, phases=("decode",), compiler=compiler)["decode"]
        except DoesNotFit as err:  # the compiler refused it: what it needed beyond the arguments
            kv = mem.kv_cache * batch / work.batch
            return Memory(mem.weights, kv, 0.0, err.temp_bytes, mem.capacity)
        return memory(step, system, "decode")

    return largest_fitting(decode_memory, work.batch, mem, replicas, work.context, confirm)


def fp4_matmuls(cfg: ModelConfig, system) -> ModelConfig:
    """NVFP4 matmuls quantize their activations to FP4 (W4A4, at the FP4 peak) on chips with FP4 tensor cores, and
    convert the weights inside a bf16 matmul (W4A16) elsewhere."""
    fp4 = "float4" in system.chip.peak_flops and "nvfp4" in {cfg.weights, cfg.attn_weights, cfg.experts}
    return dataclasses.replace(cfg, fp4_activations=fp4) if fp4 != cfg.fp4_activations else cfg


@dataclass(frozen=True)
class Setup:
    """A point's inputs, checked and resolved, before anything is compiled."""

    cfg: ModelConfig
    system: System
    strategy: Strategy
    mesh: dict
    work: Workload
    compiler: str
    compiler_note: str
    routing: str
    fusion: str
    rates: Rates | None = None  # the achieved rates steps are priced at; None: the ideal roofline
    time_model: str = "ideal roofline"  # which, in words


def setup(model: str | ModelConfig = DEFAULTS["model"], system: str = DEFAULTS["system"],
          strategy: str = DEFAULTS["strategy"], batch: int = DEFAULTS["batch"], prompt: int | None = None,
          context: int = DEFAULTS["context"], dtype: str | None = None, usd_per_chip_hour: float | None = None,
          weights: str | None = None, kv_cache: str | None = None, capacity_factor: float | None = None,
          compiler: str = "cpu", routing: str = "uniform", fusion: str = "kernels", ideal: bool = False,
          calibration: str | None = None, queries: int = 1) -> Setup:
    """Check a point's inputs (`trace` says what each means): every error a point can meet before its programs
    are traced, in one line."""
    if routing not in ROUTINGS:
        raise ConfigError(f"--routing {routing!r} is not one of {', '.join(ROUTINGS)}")
    if fusion not in FUSIONS:
        raise ConfigError(f"--fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
    prompt = context if prompt is None else prompt
    for name, value in (("batch", batch), ("context", context), ("prompt", prompt), ("queries", queries)):
        if not is_int(value) or value <= 0:
            raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
    int32 = 2**31 - 1  # token ids and positions are int32 in the step programs
    if context > int32 or batch * prompt > int32:
        raise ConfigError(f"batch {batch} x prompt {prompt} tokens and context {context} must each stay under 2^31 "
                          "(token positions and ids are 32-bit in the compiled steps); lower them")
    if capacity_factor is not None and not (is_int(capacity_factor) or isinstance(capacity_factor, float)):
        raise ConfigError(f"--capacity-factor must be a number, got {capacity_factor!r}")
    if prompt > context:
        raise ConfigError(f"--prompt {prompt} exceeds --context {context}: the cache must hold the prompt; "
                          f"raise --context to at least {prompt}")
    cfg = (model if isinstance(model, ModelConfig) else get_model(model)).with_dtypes(weights, kv_cache, dtype)
    if capacity_factor is not None:
        if not cfg.is_moe:
            raise ConfigError(f"--capacity-factor applies to mixture-of-experts models; {cfg.name} is dense")
        cfg = dataclasses.replace(cfg, capacity_factor=capacity_factor)
    sys_ = get_system(system, usd_per_chip_hour)
    cfg = fp4_matmuls(cfg, sys_)
    strat = get_strategy(strategy)
    if strat.pipeline:
        raise ConfigError(f"strategy {strat.name} runs the layers in pipeline stages: `tracer serving` prices it "
                          "(one stage's step alone: --strategy tp on a stage's chips)")
    mesh = strat.mesh_shape(sys_)
    work = Workload(batch, prompt, context, queries)
    compiler, why = choose_compiler(compiler, sys_)
    check_devices(sys_, compiler)
    check_splits(strat, mesh, work)
    rates, time_model = rates_for(sys_.chip, calibration, ideal)
    return Setup(cfg, sys_, strat, mesh, work, compiler, why, routing, fusion, rates, time_model)


def trace(model: str | ModelConfig = DEFAULTS["model"], system: str = DEFAULTS["system"],
          strategy: str = DEFAULTS["strategy"], batch: int = DEFAULTS["batch"], prompt: int | None = None,
          context: int = DEFAULTS["context"], dtype: str | None = None, usd_per_chip_hour: float | None = None,
          find_max_batch: bool = True, weights: str | None = None, kv_cache: str | None = None,
          capacity_factor: float | None = None, compiler: str = "cpu", routing: str = "uniform",
          fusion: str = "kernels", confirm: bool = False, decode_only: bool = False, ideal: bool = False,
          calibration: str | None = None) -> TraceResult:
    """prompt: prefill tokens per sequence; None fills the whole context. model: a preset name, a model file
    (.toml or a Hugging Face config.json) or a ModelConfig. dtype, weights, kv_cache: override the model's
    activation, weight and KV-cache dtypes. capacity_factor: MoE expert slots per expert, as a multiple of the
    balanced load (1.0 computes exactly the active parameters). compiler: cpu (emulated devices), gpu or tpu
    (the target's own compiler, compile-only; needs its extra), or auto (the target's own when installed).
    routing: uniform (the routed experts' weights read as far as uniformly routed tokens are expected to reach them)
    or worst (every assignment to an expert of its own, as the program computes them).
    fusion: kernels (HBM bytes as serving engines' fused kernels move them, tracer.read.fusion) or compiled (as the
    compiled program moves them). confirm: compile the decode step at the largest batch estimated to fit.
    decode_only: compile the decode step alone (a batch search's probe: its result has no prefill phase).
    ideal: price every kernel at the chip's peaks (the pure roofline) instead of the achieved rates of the chip's
    rates file (tracer.rates); calibration: a rates file of your own (tracer calibrate writes one)."""
    s = setup(model, system, strategy, batch, prompt, context, dtype, usd_per_chip_hour, weights, kv_cache,
              capacity_factor, compiler, routing, fusion, ideal, calibration)
    steps = compile_steps(s.cfg, s.system, s.strategy, s.work, compiler=s.compiler,
                          phases=("decode",) if decode_only else ("prefill", "decode"))
    return price(s, steps, find_max_batch, confirm)


def price(s: Setup, steps: dict[str, CompiledStep], find_max_batch: bool = True, confirm: bool = False,
          decode_at: Callable[[int], CompiledStep] | None = None,
          found: tuple[int, str] | None = None) -> TraceResult:
    """A point's compiled (or derived: tracer.derive) steps priced on its system, and the largest batch that fits
    searched from its decode step. decode_at(batch): the decode step at another batch without compiling it (a
    derived point's model); else the search compiles where it must. found: (the largest batch, how) already
    searched (a sweep's worker did, beside the compile)."""
    phases = {name: _phase(name, step, s.cfg, s.system, s.work, s.mesh, s.strategy, s.routing, s.fusion, s.rates)
              for name, step in steps.items()}
    replicas = s.strategy.ways("batch", s.mesh)
    if found is not None:
        max_batch, note = found
    elif not find_max_batch:
        max_batch, note = 0, "not searched"
    elif decode_at is None:
        max_batch, note = _max_batch(s.cfg, s.system, s.strategy, s.work, phases["decode"].memory, replicas,
                                     s.compiler, confirm)
    else:
        max_batch, note = largest_fitting(lambda b: memory(decode_at(b), s.system, "decode"), s.work.batch,
                                          phases["decode"].memory, replicas, s.work.context)
        note = (note.replace("compiled", "derived").replace("--confirm compiles it", "a trace at it compiles it")
                + " (derived decode steps, tracer.derive: a line in the batch)")
    return TraceResult(s.cfg, s.system.name, s.strategy.name, s.mesh, s.work, s.system.usd_per_chip_hour,
                       s.system.price_note, phases, max_batch, note,
                       notes(s.cfg, s.compiler, s.strategy.ways("cache_seq", s.mesh), s.routing, s.fusion,
                             s.strategy.overlap),
                       s.compiler_note, s.routing, s.fusion, s.time_model)


def trace_choosing_batch(model, system: str, strategy: str, batch: int | str, tpot_ms: float | None,
                         **kw) -> BatchChoice:
    """`trace` at `batch`, or at the largest batch that fits ("max"), or at the largest whose decode step stays under
    `tpot_ms` milliseconds (within what fits): tracer.search.choose_batch. kw: the other arguments of `trace`."""
    if tpot_ms is not None and (not is_number(tpot_ms) or tpot_ms <= 0):
        raise ConfigError(f"--tpot-ms must be a finite number of milliseconds > 0, got {tpot_ms!r}")

    def trace_at(b: int, search: bool, probe: bool = False) -> TraceResult:
        """search: for the largest batch that fits; probe: the decode step alone."""
        return trace(model, system, strategy, batch=b, decode_only=probe,
                     **(kw if search else {**kw, "find_max_batch": False}))

    def derive(a: TraceResult, b: TraceResult):
        """The decode step's seconds at any batch between two traces, where they are one program structure."""
        s = {n: setup(model, system, strategy, t.work.batch, t.work.prompt, t.work.context, **setup_kw)
             for n, t in (("a", a), ("b", b))}
        keys = {structure_key(x.cfg, x.strategy, x.mesh, x.work, "decode") for x in s.values()}
        try:
            fitted = StepModel.fit("decode", {(t.work.batch, t.work.context): t.phases["decode"].step
                                              for t in (a, b)}) if len(keys) == 1 else None
        except StructureChanged:
            return None

        def seconds(batch: int) -> float:
            at = setup(model, system, strategy, batch, a.work.prompt, a.work.context, **setup_kw)
            step = fitted.at(batch, a.work.context, at.compiler)
            return price(at, {"decode": step}, find_max_batch=False).phases["decode"].time.step_s

        return None if fitted is None else seconds

    setup_kw = {k: v for k, v in kw.items() if k in SETUP_ARGS}
    return choose_batch(trace_at, batch, tpot_ms, get_strategy(strategy).replicas(get_system(system)), derive)


SETUP_ARGS = ("dtype", "usd_per_chip_hour", "weights", "kv_cache", "capacity_factor", "compiler", "routing", "fusion",
              "ideal", "calibration")
