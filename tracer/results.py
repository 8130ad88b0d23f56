"""What `trace` returns: frozen, typed values that reports and comparisons read by attribute.

`TraceResult.to_dict()` is the public JSON object (`tracer trace --json`, sweep records and their cache); it is
written at those edges only.
"""

import dataclasses
import math
from dataclasses import dataclass

from models.config import ModelConfig
from tracer.read import Collective
from tracer.roofline import Analytic, Memory
from tracer.step import COMPILED, CompiledStep, Workload
from tracer.timing import StepTime


@dataclass(frozen=True)
class MoePlan:
    """The dispatch plan of one token group, as the model compiled it (models.moe.choose_groups)."""

    kernel: str  # "bins" (capacity-bounded slots per expert) or "rows" (each token with its own experts' weights)
    expert_slots: int  # experts, replicas included, over the devices that hold them
    replicated_experts: int
    token_groups: int
    tokens_per_group: int
    expert_shards: int
    groups_merged_across_expert_devices: bool
    capacity_factor: float
    bins: int
    slots_per_bin: int
    slots_over_assignments: float
    expected_drop_fraction_uniform_routing: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CollectiveTime:
    """One collective of a step, the links it crosses and its seconds per step."""

    collective: Collective
    link: str  # scale-up or scale-out
    time_s: float

    def to_dict(self) -> dict:
        return {**self.collective.to_dict(), "link": self.link, "time_s": self.time_s}


@dataclass(frozen=True)
class PartCost:
    """One part of the model (a named scope of the program's op metadata) in one step, per device: its FLOPs, HBM
    bytes and wire bytes, and their communication, compute and memory seconds on the system."""

    part: str
    flops: float
    hbm_bytes: float
    wire_bytes: float
    comms_s: float
    compute_s: float
    memory_s: float

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "part"}


@dataclass(frozen=True)
class Phase:
    """One compiled step (prefill or decode) priced on the system: per device unless named otherwise."""

    name: str
    step: CompiledStep
    time: StepTime
    memory: Memory
    tokens_per_step: int
    tokens_per_s_per_chip: float
    usd_per_mtok: float
    analytic: Analytic
    collectives: tuple[CollectiveTime, ...]
    moe: MoePlan | None = None  # the dispatch plan of one token group
    breakdown: tuple[PartCost, ...] = ()  # per part of the model
    compiled_hbm_bytes: float = 0.0  # as the program's own kernels move them (before fusion and routing)
    kv_read_bytes: float = 0.0  # of the KV cache a device holds, what the step reads (decode; sparse attention: less)

    @property
    def flops_ratio(self) -> float:
        """Compiled FLOPs over the analytic estimate's."""
        return self.step.cost.flops / self.analytic.flops_per_device

    @property
    def hbm_bytes_ratio(self) -> float:
        return self.step.cost.hbm_bytes / self.analytic.hbm_bytes_per_device

    def to_dict(self) -> dict:
        cost = self.step.cost
        return {
            "flops_per_device": cost.flops,
            "flops_by_dtype": cost.flops_by_dtype,
            "hbm_bytes_per_device": cost.hbm_bytes,
            "hbm_bytes_compiled": self.compiled_hbm_bytes,
            "expert_weight_bytes_read": cost.expert_weight_bytes,
            "comm_bytes_per_device": cost.comm_bytes,
            "collectives": [c.to_dict() for c in self.collectives],
            "memory_per_device": {**dataclasses.asdict(self.memory), "total": self.memory.total,
                                  "fits": self.memory.fits},
            "kv_cache_read_per_device": self.kv_read_bytes,
            "xla_memory_analysis": self.step.xla_memory.to_dict(),
            "time_s": {"compute": self.time.compute_s, "memory": self.time.memory_s, "comms": self.time.comms_s,
                       **({} if self.time.kernels_s is None else {"kernels": self.time.kernels_s,
                                                                   "overhead": self.time.overhead_s}),
                       **({"overlapped_collectives": self.time.hidden_s} if self.time.hidden_s else {}),
                       "step": self.time.step_s, "model": self.time.model},
            "bound": self.time.bound,
            "tokens_per_step": self.tokens_per_step,
            "tokens_per_s_per_chip": self.tokens_per_s_per_chip,
            "usd_per_mtok": self.usd_per_mtok,
            "analytic": {**dataclasses.asdict(self.analytic), "flops_ratio": self.flops_ratio,
                         "hbm_bytes_ratio": self.hbm_bytes_ratio},
            "compile_s": self.step.compile_s,
            "provenance": (self.step.provenance or COMPILED).to_dict(),
            **({"moe": self.moe.to_dict()} if self.moe else {}),
            "breakdown": {p.part: p.to_dict() for p in self.breakdown},
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
    time_model: str = "ideal roofline"  # what priced the step times (tracer.rates.rates_for says it in words)

    @property
    def compiler(self) -> str:
        return next(iter(self.phases.values())).step.compiler

    @property
    def devices(self) -> int:
        return math.prod(self.mesh.values())

    @property
    def output_to_input_cost(self) -> float | None:
        """USD per output token over USD per input token (None unless both phases were traced)."""
        if not {"prefill", "decode"} <= self.phases.keys():
            return None
        return self.phases["decode"].usd_per_mtok / self.phases["prefill"].usd_per_mtok

    def to_dict(self) -> dict:
        out = {
            "model": self.model.name, "system": self.system_name, "strategy": self.strategy,
            "compiler": self.compiler, "compiler_note": self.compiler_note, "devices": self.devices,
            "mesh": self.mesh,
            "batch": self.work.batch, "prompt": self.work.prompt, "context": self.work.context,
            "dtype": self.model.dtype, "weights_dtype": self.model.weights, "experts_dtype": self.model.experts,
            "vocab_dtype": self.model.vocab, "kv_cache_dtype": self.model.kv, "total_params": self.model.total_params,
            "active_params": self.model.active_params, "routing": self.routing, "fusion": self.fusion,
            "usd_per_chip_hour": self.usd_per_chip_hour,
            "price_note": self.price_note, "time_model": self.time_model,
            **{name: phase.to_dict() for name, phase in self.phases.items()},
            "max_batch": self.max_batch, "max_batch_note": self.max_batch_note,
        }
        if self.output_to_input_cost is not None:
            out["output_to_input_cost"] = self.output_to_input_cost
        out["notes"] = list(self.notes)
        return out
