"""Per-device figures -> step times -> token economics, and the analytic estimates to hold them against.

Pure functions of a compiled step's figures and the system's numbers: nothing here reads a program.
"""

from dataclasses import dataclass

from meshes.systems import System
from models.config import ModelConfig
from tracer.compile import CompiledStep, Workload
from tracer.cost import Collective


@dataclass(frozen=True)
class StepTime:
    compute_s: float  # FLOPs / dense peak for the model's dtype
    memory_s: float  # HBM bytes / HBM bandwidth
    comms_s: float  # wire bytes / the bandwidth of the links each collective's group spans
    # No overlap is assumed between communication and the rest (the collectives of tensor parallelism sit on the
    # critical path between matmuls); compute and memory traffic overlap, as in any roofline.

    @property
    def step_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.comms_s

    @property
    def bound(self) -> str:
        terms = {"compute": self.compute_s, "memory": self.memory_s, "comms": self.comms_s}
        return max(terms, key=terms.get)


def link(system: System, collective: Collective) -> tuple[str, float]:
    """(link class, bytes/s one way): scale-up when every group stays inside one domain, else scale-out."""
    inside = all(len({system.node_of(d) for d in group}) == 1 for group in collective.groups)
    if inside:
        return "scale-up", system.chip.scale_up_bw
    return "scale-out", system.chip.scale_out_bw


def step_time(step: CompiledStep, system: System, dtype: str) -> StepTime:
    comms = sum(c.wire_bytes_per_device / link(system, c)[1] for c in step.cost.collectives)
    return StepTime(step.cost.flops / system.chip.flops_for(dtype), step.cost.hbm_bytes / system.chip.hbm_bw, comms)


def usd_per_mtok(system: System, tokens_per_s_per_chip: float) -> float:
    return system.usd_per_chip_hour / 3600 / tokens_per_s_per_chip * 1e6


@dataclass(frozen=True)
class Memory:
    weights: float
    kv_cache: float
    outputs: float
    temp: float
    capacity: float

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.outputs + self.temp

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity


def memory(step: CompiledStep, system: System, phase: str) -> Memory:
    """Per device. Decode takes the cache as a donated argument; prefill allocates it as a result."""
    cost = step.cost
    outputs = cost.output_bytes - (step.kv_cache_bytes if phase == "prefill" else 0.0)
    temp = max(cost.peak_live_bytes - cost.output_bytes, 0.0)
    return Memory(step.weight_bytes, step.kv_cache_bytes, max(outputs, 0.0), temp, system.chip.hbm_bytes)


def analytic(cfg: ModelConfig, work: Workload, phase: str, n_chips: int, tp: int) -> dict:
    """Textbook estimates per device: FLOPs = 2 x matmul params x tokens + attention; bytes = weights read once
    (the embedding table is gathered, not read, unless tied to the LM head) + KV cache read or written."""
    matmul_params = cfg.n_layers * (cfg.attn_params_per_layer + cfg.mlp_params_per_layer)
    head = cfg.hidden * cfg.vocab_size
    per_head_dim = 4 * cfg.n_heads * cfg.head_dim * cfg.n_layers  # QK^T and PV: 2 FLOPs x 2 matmuls
    b = work.batch
    if phase == "prefill":
        tokens = b * work.prompt
        # causal attention: query t attends to t + 1 keys
        attn = per_head_dim * b * work.prompt * (work.prompt + 1) / 2
        flops = 2 * matmul_params * tokens + 2 * head * b + attn  # LM head on the last position only
        kv = b * work.prompt * cfg.kv_bytes_per_token
    else:
        flops = 2 * (matmul_params + head) * b + per_head_dim * b * work.context
        kv = b * work.context * cfg.kv_bytes_per_token
    weights_read = (cfg.total_params - cfg.embed_params + (cfg.embed_params if cfg.tie_embeddings else 0))
    return {"flops_per_device": flops / n_chips,
            "hbm_bytes_per_device": weights_read * cfg.bytes_per_value / tp + kv / n_chips}
