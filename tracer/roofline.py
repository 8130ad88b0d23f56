"""Per-device figures -> step times -> token economics, and the analytic estimates to hold them against.

Pure functions of a compiled step's figures and the system's numbers: nothing here reads a program.
"""

from dataclasses import dataclass

from meshes.systems import System
from models.config import DTYPE_BITS, ModelConfig
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


def step_time(step: CompiledStep, system: System) -> StepTime:
    """Compute: each precision's FLOPs at the chip's dense peak for it (fp8 matmuls at the fp8 peak)."""
    comms = sum(c.wire_bytes_per_device / link(system, c)[1] for c in step.cost.collectives)
    compute = sum(flops / system.chip.flops_for(dtype) for dtype, flops in step.cost.flops_by_dtype.items())
    return StepTime(compute, step.cost.hbm_bytes / system.chip.hbm_bw, comms)


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


def _keys_seen(prompt: int, window: int) -> float:
    """Sum over the prompt's queries of the keys each attends to (causal, within the window)."""
    if not window or window >= prompt:
        return prompt * (prompt + 1) / 2
    return window * (window + 1) / 2 + (prompt - window) * window


def analytic(cfg: ModelConfig, work: Workload, phase: str, mesh: dict[str, int]) -> dict:
    """Textbook estimates per device.
    FLOPs: 2 x active matmul parameters x tokens (routed experts: only the k a token uses) + attention over the keys
    each query sees (windows included; MLA decode in its absorbed form). Weights with no axis to split (MLA's
    latent down-projections, the router) are computed by every device of the tensor-parallel group.
    Bytes: every stored weight read once (the embedding table is gathered, not read, unless tied to the LM head;
    routed experts only as far as the step's tokens can reach them: T tokens x k of E),
    spread over the tensor-parallel group, + the KV cache read (decode) or written (prefill) by the device's own
    sequences (MLA's latent cache and repeated GQA kv heads are replicated across the group, and repeated kv heads'
    projections computed once per copy)."""
    dp, tp = mesh["dp"], mesh["tp"]
    n_chips = dp * tp
    head = cfg.hidden * cfg.vocab_size
    matmul_active = sum(cfg.attn_params_per_layer + cfg.mlp_params(i, active=True) for i in range(cfg.n_layers))
    replicated = sum(cfg.replicated_params(i) for i in range(cfg.n_layers))
    matmul_active += replicated * (tp - 1)  # counted once per device of the group, then divided by all devices
    kv_replicas = tp if cfg.is_mla else max(1, tp // cfg.n_kv_heads) if tp % cfg.n_kv_heads == 0 else 1
    if not cfg.is_mla:  # repeated kv heads: their projections are computed once per copy
        matmul_active += (kv_replicas - 1) * cfg.n_layers * 2 * cfg.hidden * cfg.n_kv_heads * cfg.head_dim
    b = work.batch
    pair = cfg.attn_pair_flops(decode=phase == "decode")
    if phase == "prefill":
        attn = pair * b * sum(_keys_seen(work.prompt, cfg.window(i)) for i in range(cfg.n_layers))
        flops = 2 * matmul_active * b * work.prompt + 2 * head * b + attn  # LM head on the last position only
        kv = b * cfg.kv_bytes(work.prompt)
    else:
        attn = pair * b * sum(min(cfg.window(i) or work.context, work.context) for i in range(cfg.n_layers))
        flops = 2 * (matmul_active + head) * b + attn
        kv = b * cfg.kv_bytes(work.context)
    weights_read = cfg.weight_bytes - (0 if cfg.tie_embeddings else cfg.embed_params * cfg.bytes_per_value)
    if cfg.is_moe:  # a group of T tokens reaches at most T x k of the E experts: the rest are not read
        tokens = b * (work.prompt if phase == "prefill" else 1) // dp
        reached = min(1.0, tokens * cfg.n_active / cfg.n_experts)
        weights_read -= (1 - reached) * cfg.routed_expert_params * DTYPE_BITS[cfg.experts] / 8
    weights_read += cfg.replicated_weight_bytes * (tp - 1)  # whole on every device of the group
    return {"flops_per_device": flops / n_chips,
            "hbm_bytes_per_device": weights_read / tp + kv * kv_replicas / n_chips}
