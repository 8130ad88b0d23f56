"""Per-device figures -> step times -> token economics, and the analytic estimates to hold them against.

Pure functions of a compiled step's figures and the system's numbers: nothing here reads a program.
"""

import dataclasses
import math
from dataclasses import dataclass

from meshes.systems import System
from models.config import ModelConfig
from models.moe import expert_slots, reached_fraction
from models.scopes import SCOPES
from tracer.quirks import QUIRKS
from tracer.read import Collective, Kernel, wire_bytes
from tracer.step import CompiledStep, Workload
from tracer.timing import collective_time


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
    """Per device. Decode takes the cache as a donated argument; prefill allocates it as a result. Temporaries as the
    compiler's quirks say (tracer.quirks: its own buffer assignment, or a liveness walk of the program)."""
    return Memory(*_memory_parts(step, phase), system.chip.hbm_bytes)


def memory_bytes(step: CompiledStep, phase: str) -> float:
    """Memory.total without a system."""
    return sum(_memory_parts(step, phase))


def _memory_parts(step: CompiledStep, phase: str) -> tuple[float, float, float, float]:
    cost = step.cost
    outputs = cost.output_bytes - (step.kv_cache_bytes if phase == "prefill" else 0.0)
    temp = QUIRKS[step.compiler].temp_bytes(cost.peak_live_bytes, cost.output_bytes, step.xla_memory.temp)
    return step.weight_bytes, step.kv_cache_bytes, max(outputs, 0.0), temp


def _keys_seen(prompt: int, window: int, chunked: bool = False) -> float:
    """Sum over the prompt's queries of the keys each attends to (causal, within the window, or within the query's
    own chunk of `window` positions)."""
    if not window or window >= prompt:
        return prompt * (prompt + 1) / 2
    if chunked:
        rest = prompt % window
        return prompt // window * window * (window + 1) / 2 + rest * (rest + 1) / 2
    return window * (window + 1) / 2 + (prompt - window) * window


@dataclass(frozen=True)
class Splits:
    """How many ways a strategy splits each kind of work: what the analytic estimate needs of it."""

    n_chips: int
    batch: int  # sequences split over this many devices (data parallelism)
    heads: int  # attention heads
    kv_heads: int
    mlp: int  # dense MLP hidden
    experts: int  # routed experts spread over this many devices
    expert_mlp: int  # each expert's hidden
    vocab: int
    gathered: bool  # weights are sharded but gathered whole where used (FSDP)
    colocated: int = 1  # token groups whose tokens meet on one copy of the experts (EP over their devices)
    seq: int = 1  # prompt positions split over this many devices (context parallelism)
    cache_seq: int = 1  # cached positions likewise
    routed: int = 0  # devices the routed experts' work is split over: by tokens or by weights (0: all of them)
    weight_shards: int = 1  # devices a weight is split over (gathered whole before use under FSDP)


def splits(strategy, mesh: dict[str, int]) -> Splits:
    w = strategy.ways
    routed = {a for axis in ("batch", "experts", "expert_mlp") for a in strategy.axes(axis)}
    return Splits(math.prod(mesh.values()), w("batch", mesh), w("heads", mesh), w("kv_heads", mesh), w("mlp", mesh),
                  w("experts", mesh), w("expert_mlp", mesh), w("vocab", mesh),
                  gathered=w("embed", mesh, weights=True) > 1, colocated=w("batch", mesh, shared="experts"),
                  seq=w("seq", mesh), cache_seq=w("cache_seq", mesh), routed=math.prod(mesh[a] for a in routed),
                  weight_shards=w("embed", mesh, weights=True))


def tokens_per_expert_copy(work: Workload, phase: str, split: Splits) -> float:
    """Tokens whose routing can reach one device's experts: those of the token groups that send to it (a batch
    shard's, or every colocated shard's under expert parallelism; a prompt split over devices counts its parts)."""
    tokens = work.tokens(phase)
    seq = split.seq if phase == "prefill" and work.prompt % split.seq == 0 else 1
    return tokens / split.batch / seq * split.colocated


def fused_kernels(step: CompiledStep) -> CompiledStep:
    """The step as serving engines' fused kernels run it (tracer.read.fusion): the same FLOPs, fewer HBM bytes; the
    program's own figure stays in Phase.compiled_hbm_bytes."""
    return dataclasses.replace(step, cost=dataclasses.replace(step.cost, kernels=step.cost.fused))


def charge_routed_experts(step: CompiledStep, fraction: float) -> CompiledStep:
    """The step with its routed-expert weight reads taken as a grouped kernel makes them: each expert the step's
    tokens reach read once, `fraction` of those a device holds. The program reads an expert per slot or row it
    computes (every bin's, or min(E, T k)), so this only lowers its figure."""
    cost = step.cost
    saved = cost.expert_weight_bytes - min(cost.expert_weight_bytes, fraction * step.expert_weight_bytes)
    experts = {k.name for k in cost.kernels if k.scope == SCOPES.routed_experts and k.cost.argument_bytes}
    held = sum(k.total.argument_bytes for k in cost.kernels if k.name in experts)
    if saved <= 0 or not held:
        return step
    share = min(saved / held, 1.0)  # of each expert kernel's weight reads: not made

    def charged(k: Kernel) -> Kernel:
        c = k.cost
        return dataclasses.replace(k, cost=dataclasses.replace(c, bytes_read=c.bytes_read - share * c.argument_bytes,
                                                               argument_bytes=(1 - share) * c.argument_bytes))
    kernels = tuple(charged(k) if k.name in experts else k for k in cost.kernels)
    cost = dataclasses.replace(cost, kernels=kernels, expert_weight_bytes=cost.expert_weight_bytes - saved)
    return dataclasses.replace(step, cost=cost)


@dataclass(frozen=True)
class Analytic:
    """The textbook estimate of a step, per device (`analytic`)."""

    flops_per_device: float
    hbm_bytes_per_device: float


def _weights_read(cfg: ModelConfig, work: Workload, phase: str, split: Splits, routing: str,
                  held: bool = False) -> float:
    """Weight bytes a device reads in a step (see `analytic`); `held`: those it holds (every expert it has)."""
    weights_read = cfg.weight_bytes - (0 if cfg.tie_embeddings else cfg.embed_params * cfg.bits(cfg.vocab) / 8)
    slots = expert_slots(cfg, split.experts) if cfg.is_moe else 0
    routed_bytes = cfg.routed_expert_params * cfg.bits(cfg.experts) / 8
    weights_read += (slots / cfg.n_experts - 1) * routed_bytes if cfg.is_moe else 0  # replicas are read too
    routed_bytes *= slots / cfg.n_experts if cfg.is_moe else 1
    if cfg.is_moe and not held:  # the experts a device's tokens do not reach are not read
        reached = reached_fraction(cfg.n_experts, cfg.n_active, tokens_per_expert_copy(work, phase, split), routing)
        weights_read -= (1 - reached) * routed_bytes
        routed_bytes *= reached
    if split.gathered:
        return weights_read
    other = weights_read - routed_bytes - cfg.replicated_weight_bytes
    return other / split.heads + routed_bytes / (split.experts * split.expert_mlp) + cfg.replicated_weight_bytes


def analytic(cfg: ModelConfig, work: Workload, phase: str, split: Splits, routing: str = "uniform") -> Analytic:
    """Textbook estimates per device.
    FLOPs: 2 x active matmul parameters x tokens (routed experts: only the k a token uses) + attention over the keys
    each query sees (windows and chunks included, a chunked layer's decode over its ring of min(chunk, context)
    positions as the program reads it; MLA decode in its absorbed form), each kind of work divided by the ways the
    layout splits it: a device computes its own sequences' share of each tensor-parallel matmul, and its share of
    all expert assignments. Weights with no axis to split (MLA's latent down-projections, the router) are computed
    by every device that holds the sequences' tokens.
    Bytes: every stored weight read once (the embedding table is gathered, not read, unless tied to the LM head;
    routed experts only as far as the step's tokens reach them: E (1 - (1 - k/E)^T) of E under uniform routing,
    min(E, T x k) at worst), each divided by the ways it
    is sharded (gathered whole under FSDP), + the KV cache read (decode) or written (prefill) by the device's own
    sequences (MLA's latent cache and repeated GQA kv heads are replicated across the head-parallel group).
    A decode step of several positions a sequence (speculative verification) computes each of them over the whole
    context and reads the cache once. Context parallelism splits the prompt's tokens, their query-key pairs and the
    cache over its devices (MLA gathers the latent and expands every position's keys and values on each device)."""
    tokens = work.tokens(phase)
    seq = split.seq if phase == "prefill" and work.prompt % split.seq == 0 else 1  # decode's one position: not split
    cache_seq = split.cache_seq if work.context % split.cache_seq == 0 else 1
    per_seq = tokens / split.batch / seq  # tokens a device holds
    attn_split = 1 if split.gathered else split.heads
    mlp_split = 1 if split.gathered else split.mlp
    kv_rep = cfg.kv_copies(split.kv_heads)
    attn = sum(cfg.attn_params(i) for i in range(cfg.n_layers))
    if not cfg.is_mla:  # repeated kv heads: their projections are computed once per copy
        attn += (kv_rep - 1) * (cfg.n_layers - cfg.linear_layers) * 2 * cfg.hidden * cfg.n_kv_heads * cfg.head_dim
    latent_down = cfg.n_layers * cfg.latent_down_params  # every head shard's
    routers = sum(cfg.router_params for i in range(cfg.n_layers) if cfg.layer_is_moe(i))  # every device's tokens
    dense = sum(cfg.dense_mlp_params for i in range(cfg.n_layers) if not cfg.layer_is_moe(i))
    shared = sum(cfg.shared_params for i in range(cfg.n_layers) if cfg.layer_is_moe(i))
    routed = sum(cfg.n_active * cfg.expert_params for i in range(cfg.n_layers) if cfg.layer_is_moe(i))
    head = cfg.hidden * cfg.vocab_size
    queries = work.queries if phase == "decode" else 1  # positions a sequence runs in a decode step
    head_tokens = work.batch * queries / split.batch  # the LM head: the last position (prefill), each one (decode)
    per_device_params = (attn - latent_down) / attn_split + latent_down + routers + (dense + shared) / mlp_split
    flops = 2 * (per_seq * per_device_params + tokens * routed / ((split.routed or split.n_chips) * seq)
                 + head_tokens * head / (1 if split.gathered else split.vocab))
    if cfg.is_mla and seq > 1:  # context-parallel prefill expands the gathered latent of every position
        expand = cfg.n_layers * cfg.kv_lora_rank * cfg.n_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim)
        flops += 2 * (tokens / split.batch - per_seq) * expand / attn_split
    pair = cfg.attn_pair_flops(decode=phase == "decode")
    b = work.batch
    softmax = [i for i in range(cfg.n_layers) if not cfg.is_linear(i)]
    if phase == "prefill":
        keys = sum(_keys_seen(work.prompt, cfg.window(i), cfg.chunked) for i in softmax)
    else:
        keys = sum(min(cfg.window(i) or work.context, work.context) for i in softmax)
    scored = keys  # the indexer scores every (query, key) pair attention would see
    if phase == "decode" and cfg.index_topk:  # and decode attends to the chosen index_topk alone
        keys = len(softmax) * min(work.context, cfg.index_topk)
    per_split = b * queries / split.batch / (seq if phase == "prefill" else cache_seq)
    flops += pair * per_split * keys / attn_split
    # the indexer's score of each pair: a dot product, a relu and a weighted sum per index head
    flops += (2 * cfg.index_dim + 3) * cfg.index_heads * per_split * scored if cfg.index_topk else 0.0
    linear_flops, state_written = _linear(cfg, work, phase, split)
    return Analytic(flops + linear_flops, _weights_read(cfg, work, phase, split, routing)
                    + _kv_bytes(cfg, work, phase, split) + state_written)


LINEAR_CHUNK = 64  # flash-linear-attention's chunk size (models.linear_attention.CHUNK)


def _linear(cfg: ModelConfig, work: Workload, phase: str, split: Splits) -> tuple[float, float]:
    """The linear-attention layers' core, per device: (FLOPs, the state a decode step writes back). FLOPs a token
    and value head of the gated delta rule with key dim K and value dim V: decode's recurrence 7 K V (decay the
    state, read it with k, write the correction, read it with q); prefill's chunked form as flash-linear-attention
    runs it in chunks of C: 4 C K (k k^T and q k^T within the chunk) + C^2 / 3 + 2 C (K + V) (invert the chunk's
    triangular system and apply it to k and v) + 2 C V (scores times values) + 6 K V (the state read by w and q,
    and updated). Value heads split like attention heads."""
    if not cfg.has_linear:
        return 0.0, 0.0
    kd, vd, c = cfg.linear_k_dim, cfg.linear_v_dim, LINEAR_CHUNK
    heads = cfg.linear_v_heads / (1 if split.gathered else split.heads)
    per = 7 * kd * vd if phase == "decode" else 4 * c * kd + c * c / 3 + 2 * c * (kd + vd) + 2 * c * vd + 6 * kd * vd
    flops = cfg.linear_layers * heads * work.tokens(phase) / split.batch * per
    return flops, _state_bytes(cfg, work, split) if phase == "decode" else 0.0


def _state_bytes(cfg: ModelConfig, work: Workload, split: Splits) -> float:
    """The linear layers' state a device holds for its own sequences (split over heads, as attention's)."""
    return work.batch * cfg.state_bytes_per_sequence / split.batch / (1 if split.gathered else split.heads)


def _kv_bytes(cfg: ModelConfig, work: Workload, phase: str, split: Splits, held: bool = False) -> float:
    """KV cache a device reads (decode) or writes (prefill) for its own sequences (see `analytic`), linear layers'
    state included; sparse attention's decode reads every index key and the chosen latent rows alone."""
    kv = work.batch * (cfg.kv_bytes(work.prompt if phase == "prefill" else work.context)
                       - cfg.state_bytes_per_sequence)
    if not held and phase == "decode":  # sparse attention: the index keys and the chosen rows
        kv *= cfg.kv_read_fraction(work.context)
    cache_seq = split.cache_seq if work.context % split.cache_seq == 0 else 1
    kv_split = 1 if cfg.is_mla else split.kv_heads / cfg.kv_copies(split.kv_heads)
    return kv / split.batch / kv_split / cache_seq + _state_bytes(cfg, work, split)


def analytic_memory(cfg: ModelConfig, work: Workload, split: Splits) -> float:
    """Bytes a device holds in a decode step by the textbook: its weights (every expert it has) and its sequences'
    KV cache; no temporaries."""
    return _weights_read(cfg, work, "decode", split, "worst", held=True) + _kv_bytes(cfg, work, "decode", split,
                                                                                     held=True)


def analytic_comms_s(cfg: ModelConfig, work: Workload, split: Splits, system: System) -> float:
    """A lower bound on a decode step's communication by the textbook (ring algorithms, as collective_time): where
    attention heads are split over h devices, each layer all-reduces its tokens x hidden after attention, and again
    after its MLP where the MLP's hidden is split (a MoE layer: its experts' hidden, whose partial sums it adds in one
    all-reduce); FSDP all-gathers every weight. The other exchanges of MoE layers (dispatch across expert devices)
    are left out, as their form depends on the dispatch plan: an estimate that errs fast, never slow."""
    def seconds(op: str, n: int, count: int, moved: float) -> float:  # count executions over the first n devices
        if n <= 1 or not count:
            return 0.0
        wire = count * wire_bytes(op, n, moved, moved)
        return collective_time(system, Collective(op, n, (tuple(range(n)),), count, moved, wire))

    if split.gathered:  # each layer's weights, gathered whole
        return seconds("all-gather", split.weight_shards, cfg.n_layers, cfg.weight_bytes / cfg.n_layers)
    x = work.batch * work.queries / split.batch * cfg.hidden * cfg.bits(cfg.dtype) / 8  # the device's tokens x hidden
    moe = sum(1 for i in range(cfg.n_layers) if cfg.layer_is_moe(i))
    after_attention = seconds("all-reduce", split.heads, cfg.n_layers, x)
    return (after_attention + seconds("all-reduce", split.mlp, cfg.n_layers - moe, x)
            + seconds("all-reduce", split.expert_mlp, moe, x))
