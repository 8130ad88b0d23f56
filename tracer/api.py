"""The Python API: `trace(...)` compiles a model's prefill and decode steps on a system and prices them.

Its result's `to_dict()` is the object `tracer trace --json` prints.
"""

import dataclasses
import math
from dataclasses import dataclass

from base.inputs import ConfigError, is_int
from meshes.strategies import Strategy, get_strategy
from meshes.systems import get_system
from models.config import ModelConfig
from models.files import get_model
from models.moe import expert_slots, plan_groups, reached_fraction
from tracer.compile import choose_compiler, compile_steps
from tracer.defaults import DEFAULTS, FUSIONS, ROUTINGS
from tracer.errors import DoesNotFit
from tracer.quirks import QUIRKS
from tracer.roofline import (
    Memory,
    StepTime,
    analytic,
    charge_routed_experts,
    collective_time,
    fused_kernels,
    layout,
    link,
    memory,
    step_time,
    tokens_per_expert_copy,
    usd_per_mtok,
)
from tracer.step import CompiledStep, Workload

MAX_BATCH_TRIES = 4  # compiles spent confirming the largest batch that fits


@dataclass(frozen=True)
class Phase:
    name: str
    step: CompiledStep
    time: StepTime
    memory: Memory
    tokens_per_step: int
    tokens_per_s_per_chip: float
    usd_per_mtok: float
    analytic: dict
    collectives: tuple[dict, ...]
    moe: dict | None = None  # the dispatch plan of one token group
    breakdown: dict | None = None  # part of the model -> FLOPs, HBM bytes, wire bytes and their times
    compiled_hbm_bytes: float = 0.0  # as the program's own kernels move them (before fusion and routing)

    def to_dict(self) -> dict:
        cost = self.step.cost
        return {
            "flops_per_device": cost.flops,
            "flops_by_dtype": cost.flops_by_dtype,
            "hbm_bytes_per_device": cost.hbm_bytes,
            "hbm_bytes_compiled": self.compiled_hbm_bytes,
            "expert_weight_bytes_read": cost.expert_weight_bytes,
            "comm_bytes_per_device": cost.comm_bytes,
            "collectives": list(self.collectives),
            "memory_per_device": {**dataclasses.asdict(self.memory), "total": self.memory.total,
                                  "fits": self.memory.fits},
            "xla_memory_analysis": self.step.xla_memory,
            "time_s": {"compute": self.time.compute_s, "memory": self.time.memory_s, "comms": self.time.comms_s,
                       "step": self.time.step_s},
            "bound": self.time.bound,
            "tokens_per_step": self.tokens_per_step,
            "tokens_per_s_per_chip": self.tokens_per_s_per_chip,
            "usd_per_mtok": self.usd_per_mtok,
            "analytic": {**self.analytic,
                         "flops_ratio": cost.flops / self.analytic["flops_per_device"],
                         "hbm_bytes_ratio": cost.hbm_bytes / self.analytic["hbm_bytes_per_device"]},
            "compile_s": self.step.compile_s,
            **({"moe": self.moe} if self.moe else {}),
            "breakdown": self.breakdown,
        }


@dataclass(frozen=True)
class TraceResult:
    model: ModelConfig
    system_name: str
    strategy: str
    mesh: dict
    work: Workload
    usd_per_chip_hour: float
    price_note: str
    phases: dict[str, Phase]
    max_batch: int  # the largest decode batch that fits in HBM at this context (0: the weights alone do not fit)
    max_batch_note: str
    notes: tuple[str, ...]
    compiler_note: str = "chosen"  # why this compiler produced the figures (auto's choice and its reason)
    routing: str = "uniform"  # how the routed experts a step reaches are counted (models.moe.reached_fraction)
    fusion: str = "kernels"  # whose kernels move the HBM bytes: serving engines' (tracer.read.fusion) or the program's

    @property
    def compiler(self) -> str:
        return next(iter(self.phases.values())).step.compiler

    def to_dict(self) -> dict:
        out = {
            "model": self.model.name, "system": self.system_name, "strategy": self.strategy,
            "compiler": self.compiler, "compiler_note": self.compiler_note, "devices": math.prod(self.mesh.values()),
            "mesh": self.mesh,
            "batch": self.work.batch, "prompt": self.work.prompt, "context": self.work.context,
            "dtype": self.model.dtype, "weights_dtype": self.model.weights, "experts_dtype": self.model.experts,
            "vocab_dtype": self.model.vocab, "kv_cache_dtype": self.model.kv, "total_params": self.model.total_params,
            "active_params": self.model.active_params, "routing": self.routing, "fusion": self.fusion,
            "usd_per_chip_hour": self.usd_per_chip_hour,
            "price_note": self.price_note,
            **{name: phase.to_dict() for name, phase in self.phases.items()},
            "max_batch": self.max_batch, "max_batch_note": self.max_batch_note,
        }
        if {"prefill", "decode"} <= self.phases.keys():
            out["output_to_input_cost"] = self.phases["decode"].usd_per_mtok / self.phases["prefill"].usd_per_mtok
        out["notes"] = list(self.notes)
        return out


def _moe_plan(cfg: ModelConfig, strategy: Strategy, mesh: dict, work: Workload, phase: str) -> dict | None:
    """The dispatch plan the model compiled (models.moe.choose_groups, same inputs) and what it implies."""
    if not cfg.is_moe:
        return None
    tokens = work.batch * (work.prompt if phase == "prefill" else 1)
    split = phase == "prefill" and strategy.ways("seq", mesh) > 1  # split prompts: each device's part a row
    _, merged, groups, plan = plan_groups(cfg, tokens, split,
                                          lambda axis, shared=None: strategy.ways(axis, mesh, shared=shared))
    shards = strategy.ways("experts", mesh)
    slots = expert_slots(cfg, shards)
    return {"kernel": plan.kernel, "expert_slots": slots, "replicated_experts": slots - cfg.n_experts,
            "token_groups": groups, "tokens_per_group": tokens // groups, "expert_shards": shards,
            "groups_merged_across_expert_devices": merged,
            "capacity_factor": cfg.capacity_factor, "bins": plan.bins, "slots_per_bin": plan.capacity,
            "slots_over_assignments": plan.slots / plan.assignments,
            "expected_drop_fraction_uniform_routing": plan.expected_drop_fraction()}


def _phase(name, step, cfg, system, work, mesh, strategy, routing, fusion) -> Phase:
    n_chips = math.prod(mesh.values())
    lay = layout(strategy, mesh)
    compiled_hbm = step.cost.hbm_bytes
    if fusion == "kernels":
        step = fused_kernels(step)
    if cfg.is_moe and routing == "uniform":
        step = charge_routed_experts(step, reached_fraction(cfg.n_experts, cfg.n_active,
                                                            tokens_per_expert_copy(work, name, lay)))
    time = step_time(step, system)
    tokens = work.batch * (work.prompt if name == "prefill" else 1)
    per_chip = tokens / time.step_s / n_chips
    collectives = tuple({**c.to_dict(), "link": link(system, c), "time_s": collective_time(system, c)}
                        for c in step.cost.collectives)
    return Phase(name, step, time, memory(step, system, name), tokens, per_chip, usd_per_mtok(system, per_chip),
                 analytic(cfg, work, name, lay, routing), collectives,
                 _moe_plan(cfg, strategy, mesh, work, name), _breakdown(step, system, time), compiled_hbm)


def _breakdown(step: CompiledStep, system, time: StepTime) -> dict:
    """Per part of the model (the named scopes in the program's op metadata): its FLOPs, HBM bytes and wire bytes,
    and their compute, memory and communication times on this system (compute at the step's own seconds per
    FLOP, its mix of precisions)."""
    parts = {scope: {"flops": v.flops, "hbm_bytes": v.hbm_bytes, "wire_bytes": 0.0, "comms_s": 0.0}
             for scope, v in step.cost.by_scope().items()}
    for c in step.cost.collectives:
        seconds = collective_time(system, c)
        for scope, wire in c.scopes:
            part = parts.setdefault(scope, {"flops": 0.0, "hbm_bytes": 0.0, "wire_bytes": 0.0, "comms_s": 0.0})
            part["wire_bytes"] += wire
            part["comms_s"] += seconds * wire / c.wire_bytes_per_device if c.wire_bytes_per_device else 0.0
    per_flop = time.compute_s / step.cost.flops if step.cost.flops else 0.0
    for part in parts.values():
        part["compute_s"] = part["flops"] * per_flop
        part["memory_s"] = part["hbm_bytes"] / system.chip.hbm_bw
    return parts


def _max_batch(cfg, system, strategy, work: Workload, mem: Memory, replicas: int,
               compiler: str = "cpu") -> tuple[int, str]:
    """Largest decode batch that fits: memory beyond the weights grows linearly with the batch (KV cache, logits,
    activations), so extrapolate from the compiled step, then confirm by compiling at that batch and the next."""
    if mem.weights >= mem.capacity:
        return 0, (f"weights alone ({mem.weights / 1e9:.1f} GB per device) exceed HBM ({mem.capacity / 1e9:.0f} GB)"
                   " at any batch")

    def decode_memory(batch: int) -> Memory:
        trial = dataclasses.replace(work, batch=batch)
        try:
            step = compile_steps(cfg, system, strategy, trial, phases=("decode",), compiler=compiler)["decode"]
        except DoesNotFit as err:  # the compiler refused it: what it needed beyond the arguments
            kv = mem.kv_cache * batch / work.batch
            return Memory(mem.weights, kv, 0.0, err.temp_bytes, mem.capacity)
        return memory(step, system, "decode")

    batch = work.batch
    for _ in range(MAX_BATCH_TRIES):
        per_seq = (mem.total - mem.weights) / batch
        guess = int((mem.capacity - mem.weights) // per_seq) // replicas * replicas
        if guess < replicas:
            return 0, f"not even {replicas} sequence(s) of {work.context} tokens fit beside the weights"
        if guess == batch and mem.fits:
            return batch, "confirmed by compiling the decode step at this batch"
        batch, mem = guess, decode_memory(guess)
        if not mem.fits:
            continue
        up = decode_memory(guess + replicas)
        if not up.fits:
            return guess, "confirmed by compiling the decode step at this batch and the next"
        batch, mem = guess + replicas, up
    return guess, "estimated by linear extrapolation from the compiled steps (not confirmed)"


def _notes(cfg: ModelConfig, compiler: str, sequence_shards: int = 1, routing: str = "uniform",
           fusion: str = "kernels") -> tuple[str, ...]:
    experts = f", routed experts {cfg.experts}" if cfg.is_moe else ""
    notes = [f"model: {cfg.total_params / 1e9:.4g}B parameters, {cfg.active_params / 1e9:.4g}B active per token "
             f"(embedding lookup excluded); weights {cfg.weights}{experts}, KV cache {cfg.kv}, activations {cfg.dtype}",
             "loop bodies (lax.scan over layers) are weighted by their trip counts; cost_analysis counts them once",
             "collective wire bytes use ring formulas: all-reduce 2(n-1)/n x V, all-gather, reduce-scatter and "
             "all-to-all (n-1)/n x V; priced at NVLink bandwidth inside a scale-up domain and at the per-GPU network "
             "NIC across domains, plus an assumed latency per algorithm step (1 us NVLink, 5 us network); "
             "communication is not overlapped with compute",
             "attention core counted as a fused flash kernel: scores stay on chip",
             "HBM bytes as serving engines' fused kernels move them (tracer/read/fusion.py: merged QKV and gate/up "
             "projections, rope, activations and router weights in matmul epilogues, the MoE gather and scatter-add "
             "in the grouped matmuls, residual add with RMSNorm); the compiled program's own bytes are "
             "`hbm_bytes_compiled` (--fusion compiled prices those)" if fusion == "kernels" else
             "HBM bytes as the compiled program's own kernels move them (--fusion compiled); serving engines fuse "
             "more (--fusion kernels)",
             "analytic HBM bytes count weights and KV cache only; prefill also moves activations (B x P x hidden per "
             "tensor), which is most of its bytes",
             "slices of stacked weights/caches and layout-only copies are read in place by their consumer, as GPU "
             "and TPU compilers do"]
    stored = {cfg.weights, cfg.attn_weights, cfg.experts}
    if stored & {"float8", "int8"}:
        notes.append("fp8/int8 weights run as W8A8 matmuls at the chip's fp8/int8 peak, activations quantized on the "
                     "fly; their per-channel or block scales (under 0.1% of the bytes) are not modelled")
    if "mxfp4" in stored:
        notes.append("MXFP4 weights are read at 4.25 bits per value (4-bit e2m1 plus one 8-bit scale per 32) and "
                     "converted inside the matmul, which runs in bf16 (W4A16)")
    if "nvfp4" in stored:
        how = ("activations quantized to FP4 on the fly, the matmul at the chip's FP4 peak (W4A4)" if
               cfg.fp4_activations else "converted inside the matmul, which runs in bf16 (W4A16): this chip has no "
               "FP4 tensor cores")
        notes.append(f"NVFP4 weights are read at 4.5 bits per value (4-bit e2m1 plus one e4m3 scale per 16; the "
                     f"per-tensor f32 scale is negligible); {how}")
    if "int4" in stored:
        notes.append(f"int4 weights (AWQ/GPTQ style, W4A16) are read at {cfg.bits('int4'):.3g} bits per value (4-bit "
                     f"integers plus one 16-bit scale and one 4-bit zero point per group of {cfg.int4_group}) and "
                     "converted inside the matmul, which runs in bf16")
    if cfg.kv != cfg.dtype:
        notes.append(f"KV cache stored in {cfg.kv}: read and written at its own width")
    if cfg.is_moe:
        notes.append(f"MoE: tokens grouped per batch shard (merged across the experts' devices when a few tokens per "
                     f"device would leave most expert slots empty); each expert computes only the tokens routed to "
                     f"it, in slots of capacity factor {cfg.capacity_factor:g} (see `moe` per phase); when a device "
                     "has no more tokens than experts, a gathered-rows kernel computes each token with its own "
                     "experts' weights (decode): FLOPs follow active parameters, weight bytes the experts a device "
                     "holds")
        notes.append("routed experts' weights are read once per expert the step's tokens reach, as a grouped kernel "
                     "reads them: E (1 - (1 - k/E)^T) of E for T tokens under uniformly random routing (the program "
                     "itself reads one per slot or row; `hbm_bytes_compiled`)" if routing == "uniform" else
                     "routed experts' weights are read as the program computes them: min(E, T x k) experts for T "
                     "tokens, every assignment to an expert of its own (--routing worst)")
    if cfg.is_mla:
        notes.append("MLA decode in the absorbed form: the latent cache (kv_lora_rank + rope values per token and "
                     "layer) is read, not per-head K and V; it has no head axis, so each device of a tensor-parallel "
                     "group holds its sequences' whole latent cache, and the latent down-projections are replicated")
    if any(cfg.window_pattern):
        notes.append("sliding-window layers keep min(window, context) positions as a ring; prefill attends in bands "
                     "of the window (about 2 x window keys per query, as a banded flash kernel does)")
    if sequence_shards > 1:
        latent = " (MLA: the latent, expanded on each device)" if cfg.is_mla else ""
        notes.append(f"context parallel over {sequence_shards} devices: prompt and cache positions striped (position "
                     f"p on device p mod {sequence_shards}), so causal prefill work is balanced; prefill all-gathers "
                     f"each layer's keys and values{latent}; decode attends over each device's own slots and "
                     "all-reduces the softmax statistics and partial outputs (flash decoding across devices)")
    return (*notes, *QUIRKS[compiler].notes(cfg.dtype))


def fp4_matmuls(cfg: ModelConfig, system) -> ModelConfig:
    """NVFP4 matmuls quantize their activations to FP4 (W4A4, at the FP4 peak) on chips with FP4 tensor cores, and
    convert the weights inside a bf16 matmul (W4A16) elsewhere."""
    fp4 = "float4" in system.chip.peak_flops and "nvfp4" in {cfg.weights, cfg.attn_weights, cfg.experts}
    return dataclasses.replace(cfg, fp4_activations=fp4) if fp4 != cfg.fp4_activations else cfg


def trace(model: str | ModelConfig = DEFAULTS["model"], system: str = DEFAULTS["system"],
          strategy: str = DEFAULTS["strategy"], batch: int = DEFAULTS["batch"], prompt: int | None = None,
          context: int = DEFAULTS["context"], dtype: str | None = None, usd_per_chip_hour: float | None = None,
          find_max_batch: bool = True, weights: str | None = None, kv_cache: str | None = None,
          capacity_factor: float | None = None, compiler: str = "cpu", routing: str = "uniform",
          fusion: str = "kernels") -> TraceResult:
    """prompt: prefill tokens per sequence; None fills the whole context. model: a preset name, a model file
    (.toml or a Hugging Face config.json) or a ModelConfig. dtype, weights, kv_cache: override the model's
    activation, weight and KV-cache dtypes. capacity_factor: MoE expert slots per expert, as a multiple of the
    balanced load (1.0 computes exactly the active parameters). compiler: cpu (emulated devices), gpu or tpu
    (the target's own compiler, compile-only; needs its extra), or auto (the target's own when installed).
    routing: uniform (the routed experts' weights read as far as uniformly routed tokens are expected to reach them)
    or worst (every assignment to an expert of its own, as the program computes them).
    fusion: kernels (HBM bytes as serving engines' fused kernels move them, tracer.read.fusion) or compiled (as the
    compiled program moves them)."""
    if routing not in ROUTINGS:
        raise ConfigError(f"--routing {routing!r} is not one of {', '.join(ROUTINGS)}")
    if fusion not in FUSIONS:
        raise ConfigError(f"--fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
    prompt = context if prompt is None else prompt
    for name, value in (("batch", batch), ("context", context), ("prompt", prompt)):
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
    mesh = strat.mesh_shape(sys_)
    work = Workload(batch, prompt, context)
    compiler, why = choose_compiler(compiler, sys_)
    steps = compile_steps(cfg, sys_, strat, work, compiler=compiler)
    phases = {name: _phase(name, step, cfg, sys_, work, mesh, strat, routing, fusion) for name, step in steps.items()}
    max_batch, note = (_max_batch(cfg, sys_, strat, work, phases["decode"].memory, strat.ways("batch", mesh),
                                  compiler)
                       if find_max_batch
                       else (0, "not searched"))
    return TraceResult(cfg, sys_.name, strat.name, mesh, work, sys_.usd_per_chip_hour, sys_.price_note, phases,
                       max_batch, note, _notes(cfg, compiler, strat.ways("cache_seq", mesh), routing, fusion), why,
                       routing, fusion)
