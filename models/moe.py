"""Feed-forward layers: the dense SwiGLU MLP, and the mixture of experts with its router and dispatch.

Dispatch is written so that the compiled program does the work of a production MoE kernel on every compiler
(no dense compute over all experts: jax.lax.ragged_dot does that on CPU, xla-facts.md):
- tokens form one group per batch shard (`ways("batch")`); inside a group each (token, expert) assignment gets a
  slot in a bin, found by sorting, and tokens are gathered into their slots, computed, and scattered back weighted;
- grouped kernel (prefill, large batches): one bin per expert with ceil(assignments / E x capacity_factor) slots,
  then one batched matmul per expert: [G, E, C, D] x [E, D, F];
- gathered-rows kernel (decode): when a device has no more assignments than local experts, one bin per expert
  shard with ceil(assignments / shards x capacity_factor) rows, each row reading its own expert's weights. FLOPs are
  exactly the active ones, and no device reads more expert weights than it holds.
Experts carry the logical axis "experts": sharded, tokens reach them through the collectives the compiler inserts.
"""

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import ModelConfig
from models.layers import Linear, matmul, param, zeros
from models.scopes import COMBINE, EXPERT_WEIGHTS, EXPERTS, ROUTER
from models.sharding import constrain, same_split, stripes, ways


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, ffn: int | None = None):
        d, f = cfg.hidden, ffn or cfg.ffn
        kw = dict(fmt=cfg.format(cfg.weights), act_dtype=cfg.jnp_dtype)
        self.gate = Linear(rngs, (d, f), ("embed", "mlp"), spec="btd,df->btf", **kw)
        self.up = Linear(rngs, (d, f), ("embed", "mlp"), spec="btd,df->btf", **kw)
        self.down = Linear(rngs, (f, d), ("mlp", "embed"), spec="btf,fd->btd", **kw)

    def __call__(self, x):
        return self.down(self.hidden(x))

    def hidden(self, x):
        return constrain(jax.nn.silu(self.gate(x)) * self.up(x), "batch", "seq", "mlp")

    def partial(self, x):
        """x [B, T, D] -> [B, T, P, D]: the down projection's partial sums, one per shard of the hidden axis (P =
        its shards), left for the caller to add to others and reduce once."""
        return constrain(self.down.partial(self.hidden(x), ways("mlp")), "batch", "seq", "mlp", "embed")


@dataclass(frozen=True)
class DispatchPlan:
    """How one token group's assignments are binned: the same function plans the program and reports it."""

    kernel: str  # "grouped" (one bin per expert) or "rows" (one bin per expert shard, weights gathered per row)
    bins: int
    capacity: int  # slots per bin
    assignments: int  # tokens x k in the group

    @property
    def slots(self) -> int:
        return self.bins * self.capacity

    def expected_drop_fraction(self) -> float:
        """Assignments beyond a bin's capacity, for uniformly random routing (binomial occupancy per bin)."""
        n, p, cap = self.assignments, 1 / self.bins, self.capacity
        if cap >= n:
            return 0.0
        mean, sd = n * p, math.sqrt(n * p * (1 - p)) or 1.0
        top = min(n, int(mean + 40 * sd) + cap + 1)
        dropped = 0.0
        for x in range(cap + 1, top + 1):
            log_pmf = math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * math.log(p) + (
                n - x) * math.log1p(-p) if p < 1 else 0.0
            dropped += (x - cap) * math.exp(log_pmf)
        return dropped * self.bins / n


def reached_fraction(n_experts: int, k: int, tokens: float, routing: str = "uniform") -> float:
    """The share of E experts that T tokens, each routed to k distinct ones, reach: under uniform routing each expert
    is missed by a token with probability 1 - k/E, so E (1 - (1 - k/E)^T) are reached on average; `worst` is the
    bound min(E, T k), every assignment to an expert of its own."""
    if routing == "worst":
        return min(1.0, tokens * k / n_experts)
    return 1.0 - (1.0 - k / n_experts) ** tokens


def expert_slots(cfg: ModelConfig, expert_shards: int) -> int:
    """Experts held over `expert_shards` devices: when E does not divide, every device holds ceil(E / shards) and
    the extra slots replicate the first experts (as redundant experts balance hot ones: 256 over 72 -> 288)."""
    return -(-cfg.n_experts // expert_shards) * expert_shards


def dispatch_plan(cfg: ModelConfig, tokens: int, expert_shards: int, colocated: int = 1) -> DispatchPlan:
    """`tokens` in one group, experts split over `expert_shards` devices, `colocated` groups sending their rows to
    each expert device (expert parallelism over the devices that hold the groups)."""
    assignments = tokens * cfg.n_active
    slots = expert_slots(cfg, expert_shards)
    rows = max(1, math.ceil(assignments / expert_shards * cfg.capacity_factor))
    if rows * colocated <= slots // expert_shards:
        return DispatchPlan("rows", expert_shards, rows, assignments)
    capacity = max(1, math.ceil(assignments / slots * cfg.capacity_factor))
    return DispatchPlan("grouped", slots, capacity, assignments)


def choose_groups(cfg: ModelConfig, tokens: int, batch_shards: int, expert_shards: int,
                  colocated: int) -> tuple[bool, int, DispatchPlan]:
    """(merged, groups, plan). Token groups follow the batch shards, and where they share devices with the experts
    (`colocated` groups per expert device) each group's slots round up per expert: with a few tokens per device
    (decode) that computes mostly empty slots. Merging the colocated groups into one (their tokens gathered onto
    each expert device, the outputs summed back) rounds up once; it is taken when the groups would compute over
    twice its slots (gathering every token onto every expert device costs more traffic than an all-to-all)."""
    plan = dispatch_plan(cfg, tokens // batch_shards, expert_shards, colocated)
    if colocated == 1:
        return False, batch_shards, plan
    groups = batch_shards // colocated
    merged = dispatch_plan(cfg, tokens // groups, expert_shards)
    if 2 * merged.slots < colocated * plan.slots:
        return True, groups, merged
    return False, batch_shards, plan


def plan_groups(cfg: ModelConfig, tokens: int, split: bool, ways) -> tuple[str, bool, int, DispatchPlan]:
    """(token axis, merged, groups, plan) of a MoE layer over the step's `tokens`: `split` when each sequence's
    positions are split over devices (each device's part then a row of its own, on the "tokens" axis); `ways(axis,
    shared_with)` the shards of a logical axis. The model plans its program with it, and the tracer reports it."""
    tok = "tokens" if split else "batch"
    merged, groups, plan = choose_groups(cfg, tokens, ways(tok), ways("experts"), ways(tok, "experts"))
    return tok, merged, groups, plan


def _ranks(bins, n_bins: int):
    """Each assignment's rank among those of its bin, in token order (by a stable sort). bins [A] -> [A]."""
    order = jnp.argsort(bins, stable=True)
    sorted_bins = bins[order]
    first = jnp.searchsorted(sorted_bins, jnp.arange(n_bins))
    rank_sorted = jnp.arange(bins.shape[0]) - first[sorted_bins]
    return jnp.zeros_like(bins).at[order].set(rank_sorted)


class MoE(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, f, act = cfg.hidden, cfg.expert_ffn, cfg.jnp_dtype
        self.cfg = cfg
        self.slots = e = expert_slots(cfg, ways("experts"))  # E, plus replicas when E does not divide
        self.router = param(rngs, (d, cfg.n_experts), ("embed", None), act)
        biased = cfg.expert_bias or cfg.router == "sigmoid"
        self.router_bias = zeros((cfg.n_experts,), (None,), jnp.float32) if biased else None
        kw = dict(fmt=cfg.format(cfg.experts), act_dtype=act, bias=cfg.expert_bias, contract=1)
        self.gate = Linear(rngs, (e, d, f), ("experts", "embed", "expert_mlp"), spec="gecd,edf->gecf", **kw)
        self.up = Linear(rngs, (e, d, f), ("experts", "embed", "expert_mlp"), spec="gecd,edf->gecf", **kw)
        self.down = Linear(rngs, (e, f, d), ("experts", "expert_mlp", "embed"), spec="gecf,efd->gecd", **kw)
        self.shared = MLP(cfg, rngs, cfg.n_shared * cfg.expert_ffn) if cfg.n_shared else None
        self.shared_gate = param(rngs, (d, 1), ("embed", None), act) if cfg.shared_gate else None

    def route(self, x):
        """x [G, S, D] -> expert ids [G, S, k] and their weights (normalised over the k chosen)."""
        cfg = self.cfg
        with jax.named_scope(ROUTER):
            logits = jnp.einsum("gsd,de->gse", x, self.router[...]).astype(jnp.float32)
            if cfg.router == "sigmoid":  # DeepSeek-V3: the bias steers selection only
                scores = jax.nn.sigmoid(logits)
                idx = _top_k(scores + self.router_bias[...], cfg.n_active)
                weights = jnp.take_along_axis(scores, idx, axis=-1)
            else:
                if self.router_bias is not None:
                    logits = logits + self.router_bias[...]
                probs = jax.nn.softmax(logits, axis=-1)
                idx = _top_k(probs, cfg.n_active)
                weights = jnp.take_along_axis(probs, idx, axis=-1)
            return idx, (weights / jnp.sum(weights, axis=-1, keepdims=True)).astype(x.dtype)

    def __call__(self, x):
        """x [B, T, D] -> [B, T, D]."""
        cfg = self.cfg
        batch, seq, d = x.shape
        inputs = x
        tok, merged, groups, plan = plan_groups(cfg, batch * seq, (s := stripes("seq", seq)) > 1, ways)
        if s > 1:  # a split sequence: each device's part of it is a row of its own
            seq, batch = seq // s, batch * s
            x = constrain(x.reshape(-1, s, seq, d).transpose(1, 0, 2, 3).reshape(batch, seq, d), tok, None, "embed")
        g_axis = f"{tok}-experts" if merged else tok  # merged: the groups span the experts' devices
        xg = constrain(x.reshape(groups, batch // groups * seq, d), g_axis, None, "embed")  # [G, S, D]
        idx, weights = self.route(xg)
        if self.slots > cfg.n_experts:  # every other token of a replicated expert goes to its replica
            replicas = self.slots - cfg.n_experts
            odd = (jnp.arange(idx.shape[1]) % 2 == 1)[None, :, None]
            idx = jnp.where((idx < replicas) & odd, idx + cfg.n_experts, idx)
        per_shard = self.slots // plan.bins if plan.kernel == "rows" else 1
        slot_token, slot_weight, slot_expert = jax.vmap(
            lambda i, w: _assign(i, w, plan, per_shard))(idx, weights)  # each [G, slots]
        x_pad = jnp.concatenate([xg, jnp.zeros((groups, 1, d), x.dtype)], axis=1)
        xe = jnp.take_along_axis(x_pad, slot_token[..., None], axis=1)  # [G, slots, D]
        xe = _to_experts(xe.reshape(groups, plan.bins, plan.capacity, d), g_axis)
        parts = ways("expert_mlp")  # each expert's hidden split: its output is a partial sum per part
        with jax.named_scope(EXPERTS):
            if plan.kernel == "grouped":
                h = jax.nn.silu(self.gate(xe)) * self.up(xe)
                out = self.down.partial(constrain(h, g_axis, "experts", None, "expert_mlp", prefer="experts"), parts)
            else:
                # each row's expert id travels with its token, so each device gathers only the experts it holds
                local = _to_experts(slot_expert.reshape(groups, plan.bins, plan.capacity), g_axis)
                h = jax.nn.silu(self._rows(self.gate, "gnrd,gnrdf->gnrf", xe, local, g_axis)) * self._rows(
                    self.up, "gnrd,gnrdf->gnrf", xe, local, g_axis)
                h = constrain(h, g_axis, "experts", None, "expert_mlp", prefer="experts")
                out = self._rows(self.down, "gnrf,gnrfd->gnrd", h, local, g_axis, parts)
            out = constrain(out, g_axis, "experts", None, "expert_mlp", "embed", prefer="experts")
        out = _to_groups(out, g_axis, None, "expert_mlp", "embed")
        y, partial_axis = self._combine(out, slot_token, slot_weight, g_axis, xg.shape[1])
        if tok == "tokens":  # [G, S, P, D] back to the prompt's order
            y = y.reshape(s, -1, seq, *y.shape[2:]).transpose(1, 0, 2, 3, 4)
        y = y.reshape(*inputs.shape[:2], *y.shape[-2:])  # [B, T, P, D]
        if self.shared is None:
            return _sum(y, 2)
        gate = 1.0 if self.shared_gate is None else jax.nn.sigmoid(  # Qwen3-Next: [B, T, 1]
            jnp.einsum("btd,do->bto", inputs, self.shared_gate[...]).astype(jnp.float32)).astype(x.dtype)
        if same_split(partial_axis, "mlp"):  # one reduction of the routed and shared experts' sum, as engines do
            return _sum(y + self.shared.partial(inputs) * (gate if self.shared_gate is None else gate[..., None]), 2)
        return _sum(y, 2) + self.shared(inputs) * gate

    def _combine(self, out, slot_token, slot_weight, g_axis: str, tokens: int):
        """Each group's slot outputs, weighted and added into their tokens, without reducing partial sums: out
        [G, bins, C, P, D] (P: the experts' hidden parts) -> ([G, S, P, D], the logical axis P is split over).
        Bins still split over the devices the groups do not span (Q of them) are each added up on their device: the
        Q partial sums are the P axis instead when the experts' hidden is not split (expert parallelism over tensor
        parallel devices), and are reduced here when it is too."""
        groups, bins, capacity, parts, d = out.shape
        q_axis = f"experts-{g_axis}"  # the devices bins stay split over
        q = ways(q_axis)
        out = out.reshape(groups, q, bins // q * capacity, parts, d).transpose(0, 1, 3, 2, 4)
        out = constrain(out, g_axis, q_axis, "expert_mlp", None, "embed")  # [G, Q, P, slots / Q, D]
        token, weight = (constrain(a.reshape(groups, q, -1), g_axis, q_axis, None) for a in (slot_token, slot_weight))
        with jax.named_scope(COMBINE):
            out = out * weight[:, :, None, :, None]
            add = jax.vmap(jax.vmap(jax.vmap(lambda t, o: jnp.zeros((tokens + 1, d), out.dtype).at[t].add(o),
                                             in_axes=(None, 0))))  # a scatter batched over G, Q and P
            y = constrain(add(token, out)[..., :-1, :], g_axis, q_axis, "expert_mlp", None, "embed")
        if parts == 1 and q > 1:  # the bins' devices hold the partial sums
            return constrain(y[:, :, 0].transpose(0, 2, 1, 3), g_axis, None, q_axis, "embed"), q_axis
        y = _sum(y, 1) if q > 1 else y[:, 0]  # both split (a strategy file's choice): the bins' sums reduced here
        return constrain(y.transpose(0, 2, 1, 3), g_axis, None, "expert_mlp", "embed"), "expert_mlp"

    def _rows(self, linear: Linear, spec: str, x, local, g_axis: str, parts: int = 0):
        """Each row times its own expert's weights, gathered from the experts its shard holds. local [G, n, R].
        With `parts`, the contracted axis is cut into that many partial sums (Linear.partial)."""
        n = local.shape[1]

        def gather(arr):  # [E, ...] -> [G, n, R, ...]
            shards = arr.reshape(n, arr.shape[0] // n, *arr.shape[1:])
            return jax.vmap(jax.vmap(lambda a, i: a[i]), in_axes=(None, 0))(shards, local)

        with jax.named_scope(EXPERT_WEIGHTS):  # read in place by the matmul (models.scopes)
            w_axes = linear.w.get_metadata()["logical_axes"][1:]  # after "experts": [G, n, R, ...]
            w = constrain(gather(linear.w[...]), g_axis, "experts", None, *w_axes, prefer="experts")
            blocks = tuple(gather(b) for b in linear.blocks())
            bias = None if linear.b is None else gather(linear.b[...])
        y = matmul(spec, x, w, blocks, linear.act_dtype, linear.contract + 2, linear.w4a4, parts)
        return y if bias is None else y + (bias[..., None, :] / parts if parts else bias)


def _sum(x, axis: int):
    """Partial sums added up in their own dtype (jnp.sum of bf16 accumulates in f32, and its all-reduce would move
    f32: serving engines all-reduce bf16)."""
    return jax.lax.reduce(x, jnp.zeros((), x.dtype), jax.lax.add, (axis,))


def _to_experts(x, g_axis: str):
    """[G, bins, ...] from its group's devices to its bin's: first split the bins over the axes the groups do not
    use (a local slice), then hand the shared axes from groups to bins (an all-to-all)."""
    rest = (None,) * (x.ndim - 2)
    x = constrain(x, g_axis, "experts", *rest, prefer=g_axis)
    return constrain(x, g_axis, "experts", *rest, prefer="experts")


def _to_groups(x, g_axis: str, *rest):
    """The way back: the shared axes from bins to groups (an all-to-all). Bins stay split over the other axes: the
    weighted scatter-add into the tokens then sums over them (an all-reduce of the tokens, not a gather of slots).
    `rest`: the logical axes of the dimensions after the bins (none split by default)."""
    return constrain(x, g_axis, "experts", *(rest or (None,) * (x.ndim - 2)), prefer=g_axis)


def _top_k(scores, k: int):
    """Indices of the k largest scores along the last axis, by a sort: lax.top_k flattens its operand, and the SPMD
    partitioner then gathers every batch shard's scores onto every device."""
    iota = jax.lax.broadcasted_iota(jnp.int32, scores.shape, scores.ndim - 1)
    _, order = jax.lax.sort((-scores, iota), dimension=scores.ndim - 1, num_keys=1)
    return order[..., :k]


def _assign(idx, weights, plan: DispatchPlan, per_shard: int):
    """One group: idx, weights [S, k] -> per slot: its token (S: empty), its weight, its expert within the bin."""
    tokens, k = idx.shape
    expert = idx.reshape(-1)
    bins = expert // per_shard  # grouped: per_shard = 1, a bin per expert
    rank = _ranks(bins, plan.bins)
    slot = jnp.where(rank < plan.capacity, bins * plan.capacity + rank, plan.slots)  # past the end: dropped
    token = jnp.arange(tokens * k) // k
    empty = plan.slots + 1
    slot_token = jnp.full(empty, tokens).at[slot].set(token)[:-1]
    slot_weight = jnp.zeros(empty, weights.dtype).at[slot].set(weights.reshape(-1))[:-1]
    slot_expert = jnp.zeros(empty, jnp.int32).at[slot].set(expert % per_shard)[:-1]
    return slot_token, slot_weight, slot_expert
