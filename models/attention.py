"""Attention layers and their KV cache: grouped-query attention (with sliding windows and learned sinks) and
multi-head latent attention (DeepSeek-V3), each in a prefill and a decode form.

A layer's cache is a dict of arrays stacked over the layers of one kind: GQA {"k", "v"} [L, B, C, K, H], MLA
{"latent"} [L, B, C, R + rope] (the compressed KV and the shared rotary key, as DeepSeek serves it). A windowed
layer's cache holds C = min(window, context) slots used as a ring: position p lives at ring index p % C.

Context parallelism (a strategy that splits "seq" and "cache_seq" over s devices) stripes positions over the
devices, as striped attention and large-context servers do: position p goes to device p % s. The cache stores ring
index r in slot (r % s) x C/s + r // s, so each device's contiguous block holds every s-th position and any prefix
is spread evenly; prefill runs the prompt in the same order (index i x P/s + j holds position j x s + i), so causal
attention costs every device the same and its cache lands on its own device without moving.
"""

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import ModelConfig
from models.formats import DTYPES
from models.layers import Linear, RMSNorm, attend, matmul, param, rope
from models.linear_attention import GatedDeltaNet, linear_cache_arrays
from models.scopes import CACHE_UPDATE
from models.sharding import constrain, stripes, ways
from models.sparse_attention import INDEX_AXES, Indexer, gather_chosen, index_cache_arrays, kth_largest

PREFILL_QUERY_BLOCK = 1024  # causal prefill attention skips key blocks outside each query block, as flash kernels do
CACHE_AXES = {"k": ("layers", "batch", "cache_seq", "kv_heads", "head_dim"),
              "v": ("layers", "batch", "cache_seq", "kv_heads", "head_dim"),
              "latent": ("layers", "batch", "cache_seq", "latent"), **INDEX_AXES}


@dataclass(frozen=True)
class Step:
    """What a forward pass is doing: prefill of the whole prompt, or decode of one token per sequence (or a few:
    speculative decoding's verification), against the cache."""

    decode: bool
    positions: jax.Array  # [B, T]


def kv_repeat(cfg: ModelConfig) -> int:
    """Copies of each kv head under the current layout (ModelConfig.kv_copies)."""
    return cfg.kv_copies(ways("kv_heads"))


def cache_capacity(cfg: ModelConfig, layer: int, context: int) -> int:
    return min(cfg.window(layer), context) if cfg.window(layer) else context


def cache_arrays(cfg: ModelConfig, layers: int, batch: int, capacity: int,
                 linear: bool = False) -> dict[str, tuple[tuple, tuple]]:
    """name -> (shape, logical axes) of one stack of `layers` layers' cache (a linear-attention layer's state)."""
    if linear:
        return linear_cache_arrays(cfg, layers, batch)
    if cfg.is_mla:
        index = index_cache_arrays(cfg, layers, batch, capacity) if cfg.index_topk else {}
        return {"latent": ((layers, batch, capacity, cfg.kv_lora_rank + cfg.qk_rope_head_dim), CACHE_AXES["latent"]),
                **index}
    shape = (layers, batch, capacity, cfg.n_kv_heads * kv_repeat(cfg), cfg.head_dim)
    return {"k": (shape, CACHE_AXES["k"]), "v": (shape, CACHE_AXES["v"])}


def striped_order(length: int, s: int) -> jax.Array:
    """The position at each index of a sequence striped over s devices: index i x length/s + j holds j x s + i."""
    return jnp.arange(length).reshape(length // s, s).T.reshape(length)


def cache_slot(position, cap: int, s: int):
    """The slot that holds `position` in a cache of `cap` slots striped over s devices (a ring when cap is a
    window shorter than the context)."""
    ring = position % cap
    return ring if s == 1 else ring % s * (cap // s) + ring // s


def slot_positions(cap: int, s: int) -> jax.Array:
    """The ring index each slot holds (the inverse of cache_slot)."""
    slots = jnp.arange(cap)
    return slots if s == 1 else slots % (cap // s) * s + slots // (cap // s)


def write_cache(cache: dict, new: dict, layer, step: Step) -> dict:
    """Store this pass's entries (name -> [B, T, ...], prefill's in the prompt's own order) for `layer`."""
    with jax.named_scope(CACHE_UPDATE):
        out = {}
        for name, arr in cache.items():
            x = new[name].astype(arr.dtype)
            cap = arr.shape[2]
            s = stripes("cache_seq", cap)
            if step.decode and x.shape[1] > 1:  # several positions a sequence (speculative verification)
                def write_rows(c, rows, p, cap=cap, s=s):  # c [L, C, ...], rows [T, ...], p [T]
                    return c.at[layer, cache_slot(p, cap, s)].set(rows, mode="drop")

                out[name] = jax.vmap(write_rows, in_axes=(1, 0, 0), out_axes=1)(arr, x, step.positions)
                continue
            if step.decode:  # per sequence, in place at its own slot; vmapped so that it stays sharded by batch
                def write(c, row, p, cap=cap, s=s):  # c [L, C, ...], row [1, ...]
                    return c.at[layer, cache_slot(p, cap, s)].set(row[0], mode="drop")

                out[name] = jax.vmap(write, in_axes=(1, 0, 0), out_axes=1)(arr, x, step.positions[:, 0])
                continue
            prompt, zero = x.shape[1], jnp.zeros((), jnp.int32)
            if prompt <= cap and stripes("seq", prompt) == s:  # each device's share of the prompt to its own block
                blocks = arr.reshape(arr.shape[0], arr.shape[1], s, cap // s, *arr.shape[3:])
                rows = x.reshape(x.shape[0], s, prompt // s, *x.shape[2:])
                blocks = jax.lax.dynamic_update_slice(blocks, rows[None], (layer,) + (zero,) * (blocks.ndim - 1))
                out[name] = constrain(blocks.reshape(arr.shape), *CACHE_AXES[name])
            elif s == 1 and stripes("seq", prompt) == 1:  # a window: the last `cap` positions, each at p % cap
                x = jnp.roll(x[:, prompt - cap:], (prompt - cap) % cap, axis=1)
                out[name] = jax.lax.dynamic_update_slice(arr, x[None], (layer,) + (zero,) * (arr.ndim - 1))
            else:  # orders that differ: each kept position to its slot (the rest dropped)
                positions = striped_order(prompt, stripes("seq", prompt))
                slots = jnp.where(positions >= prompt - cap, cache_slot(positions, cap, s), cap)
                out[name] = arr.at[layer, :, slots].set(jnp.moveaxis(x, 1, 0), mode="drop")
        return out


def causal_blocks(q, k, v, window: int, scale: float, sinks=None, chunked: bool = False, select=None):
    """Prefill attention, one query block at a time over the keys it can see: causal blocks of
    PREFILL_QUERY_BLOCK queries; with a window shorter than the prompt, blocks of `window` queries that each see
    their own block and the one before (a banded flash kernel's work: about 2 x window keys per query); with chunks
    (`chunked`), each chunk of `window` positions on its own, causal within it; `select(start, end, causal mask)`
    narrows a query block's keys further (sparse attention: the dense pairs' work, under a mask).
    q [B, P, K, G, H], k [B, P, K, H], v [B, P, K, Hv] -> [B, P, K, G, Hv]."""
    batch, prompt = q.shape[:2]
    if (s := stripes("seq", prompt)) > 1:
        return _striped(q, k, v, window, scale, sinks, s, chunked)
    if window and window < prompt:
        return _chunks(q, k, v, window, scale, sinks) if chunked else _banded(q, k, v, window, scale, sinks)
    return _causal(q, k, v, scale, sinks, select)


def _causal(q, k, v, scale: float, sinks=None, select=None):
    batch, prompt = q.shape[:2]
    block = min(PREFILL_QUERY_BLOCK, prompt)
    outs = []
    for start in range(0, prompt, block):
        end = min(start + block, prompt)
        t, s = jnp.arange(start, end)[:, None], jnp.arange(end)[None, :]
        mask = jnp.broadcast_to(s <= t, (batch, end - start, end))
        if select is not None:
            mask = select(start, end, mask)
        outs.append(attend(q[:, start:end], k[:, :end], v[:, :end], mask, scale, sinks))
    return jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]


def _chunks(q, k, v, chunk: int, scale: float, sinks=None):
    """Chunked attention (Llama 4's local layers): the whole chunks folded into the batch, each causal on its own,
    then the last, partial chunk."""
    batch, prompt = q.shape[:2]
    whole = prompt // chunk * chunk

    def fold(x):
        return x[:, :whole].reshape(batch * (whole // chunk), chunk, *x.shape[2:])

    out = _causal(fold(q), fold(k), fold(v), scale, sinks)
    outs = [out.reshape(batch, whole, *out.shape[2:])]
    if whole < prompt:
        outs.append(_causal(q[:, whole:], k[:, whole:], v[:, whole:], scale, sinks))
    return jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]


def _striped(q, k, v, window: int, scale: float, sinks, s: int, chunked: bool = False):
    """Context-parallel prefill over a prompt striped across s devices (index i x n + j holds position j x s + i):
    keys and values are gathered whole, and each device takes blocks of its own queries, j in [j0, j1), against
    the keys of every stripe up to j1 (from j0 - window / s under a window or chunks). Every device sees the same key
    range, so causal work is balanced: about P^2 / 2s query-key pairs each."""
    batch, prompt = q.shape[:2]
    n = prompt // s
    k, v = constrain(k, "batch", None, "kv_heads", None), constrain(v, "batch", None, "kv_heads", None)
    qs = constrain(q.reshape(batch, s, n, *q.shape[2:]), "batch", "seq", None, "kv_heads", None, None)
    ks, vs = k.reshape(batch, s, n, *k.shape[2:]), v.reshape(batch, s, n, *v.shape[2:])
    block = max(1, PREFILL_QUERY_BLOCK // s)  # as many blocks as without the split: finer causal skipping
    reach = -(-window // s) if window and window < prompt else n  # stripes' keys a query block can see before it
    stripe = jnp.arange(s)
    outs = []
    for j0 in range(0, n, block):
        j1, lo = min(j0 + block, n), max(0, j0 - reach)
        q_pos = (jnp.arange(j0, j1)[None, :] * s + stripe[:, None]).reshape(-1)  # [s x jb]
        k_pos = (jnp.arange(lo, j1)[None, :] * s + stripe[:, None]).reshape(-1)
        visible = k_pos[None, :] <= q_pos[:, None]
        if window and window < prompt and chunked:
            visible &= k_pos[None, :] // window == q_pos[:, None] // window
        elif window and window < prompt:
            visible &= k_pos[None, :] > q_pos[:, None] - window
        mask = jnp.broadcast_to(visible, (batch, *visible.shape))
        qb = qs[:, :, j0:j1].reshape(batch, -1, *q.shape[2:])

        def keys(x, lo=lo, j1=j1):
            return x[:, :, lo:j1].reshape(batch, -1, *x.shape[3:])

        out = attend(qb, keys(ks), keys(vs), mask, scale, sinks)
        outs.append(out.reshape(batch, s, j1 - j0, *out.shape[2:]))
    out = jnp.concatenate(outs, axis=2) if len(outs) > 1 else outs[0]
    return out.reshape(batch, prompt, *out.shape[3:])


def _banded(q, k, v, window: int, scale: float, sinks=None):
    batch, prompt = q.shape[:2]
    blocks = -(-prompt // window)
    pad = blocks * window - prompt

    def split(x):  # [B, P, ...] -> [B, blocks, W, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return x.reshape(batch, blocks, window, *x.shape[2:])

    def with_previous(x):  # keys of block i: blocks i - 1 and i -> [B * blocks, 2W, ...]
        x = split(x)
        prev = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
        both = jnp.concatenate([prev, x], axis=2)
        return both.reshape(batch * blocks, 2 * window, *both.shape[3:])

    a, b = jnp.arange(window)[:, None], jnp.arange(2 * window)[None, :]  # query a of a block, key b of its band
    first = jnp.arange(blocks)[:, None, None] == 0
    visible = (b - window <= a) & (b - window > a - window) & ~(first & (b < window))  # [blocks, W, 2W]
    mask = jnp.broadcast_to(visible, (batch, blocks, window, 2 * window)).reshape(batch * blocks, window, 2 * window)
    qb = split(q).reshape(batch * blocks, window, *q.shape[2:])
    out = attend(qb, with_previous(k), with_previous(v), mask, scale, sinks)
    return out.reshape(batch, blocks * window, *out.shape[2:])[:, :prompt]


def decode_mask(cache_arr, step: Step, chunk: int = 0):
    """[B, T, C]: the slots each query position sees: those written up to its own position (all of them once a
    ring has wrapped); with chunks of `chunk` positions, only those of its own chunk."""
    cap = cache_arr.shape[2]
    held = slot_positions(cap, stripes("cache_seq", cap))
    if not chunk and step.positions.shape[1] > 1:
        return held[None, None, :] <= step.positions[:, :, None]
    if not chunk:
        return (held[None, :] <= step.positions[:, :1])[:, None, :]
    positions = step.positions if step.positions.shape[1] > 1 else step.positions[:, :1]
    p = positions[:, :, None]
    position = p - (p - held[None, None, :]) % cap  # the latest position <= p that the slot's ring index holds
    return (position >= 0) & (position // chunk == p // chunk)


class GQA(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, n, k, h, act = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.jnp_dtype
        self.cfg = cfg
        kw = dict(fmt=cfg.format(cfg.attn_weights), act_dtype=act, bias=cfg.qkv_bias)
        self.wq = Linear(rngs, (d, n, h), ("embed", "heads", "head_dim"), spec="btd,dnh->btnh", **kw)
        self.wk = Linear(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), spec="btd,dkh->btkh", **kw)
        self.wv = Linear(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), spec="btd,dkh->btkh", **kw)
        self.wo = Linear(rngs, (n * h, d), ("heads", "embed"), spec="btz,zd->btd", **kw)
        self.sinks = param(rngs, (n,), ("heads",), act, scale=1.0) if cfg.attn_sinks else None
        gate = dict(kw, bias=False)
        self.wg = Linear(rngs, (d, n, h), ("embed", "heads", "head_dim"), spec="btd,dnh->btnh", **gate) \
            if cfg.attn_gate else None

    def __call__(self, x, cache: dict, layer, step: Step, window: int):
        cfg = self.cfg
        rep = kv_repeat(cfg)
        kv_heads, group = cfg.n_kv_heads * rep, cfg.n_heads // (cfg.n_kv_heads * rep)
        q = rope(self.wq(x), step.positions, cfg.rope_theta)
        k = rope(_repeated(self.wk, x, rep), step.positions, cfg.rope_theta)
        v = _repeated(self.wv, x, rep)
        q = constrain(q.reshape(*q.shape[:2], kv_heads, group, cfg.head_dim), "batch", "seq", "kv_heads", None, None)
        k, v = constrain(k, "batch", "seq", "kv_heads", None), constrain(v, "batch", "seq", "kv_heads", None)
        sinks = None if self.sinks is None else self.sinks[...].reshape(kv_heads, group)
        scale = 1 / math.sqrt(cfg.head_dim)
        cache = write_cache(cache, {"k": k, "v": v}, layer, step)
        if step.decode:
            kc, vc = cache["k"][layer], cache["v"][layer]  # [B, C, K, H]
            o = attend(q, kc, vc, decode_mask(cache["k"], step, window if cfg.chunked else 0), scale, sinks)
        else:
            o = causal_blocks(q, k, v, window, scale, sinks, cfg.chunked)
        o = o.reshape(*o.shape[:2], cfg.n_heads * cfg.head_dim)
        if self.wg is not None:  # Qwen3-Next: the output times a sigmoid gate of the input, per head and value
            o = o * jax.nn.sigmoid(self.wg(x).astype(jnp.float32)).astype(o.dtype).reshape(o.shape)
        return self.wo(o), cache


def _repeated(linear: Linear, x, rep: int):
    """A kv projection with each kv head repeated `rep` times, the weight repeated before the matmul so that each
    device of the group computes only the heads it holds."""
    if rep == 1:
        return linear(x)
    w = constrain(jnp.repeat(linear.w[...], rep, axis=1), "embed", "kv_heads", "head_dim")
    blocks = tuple(jnp.repeat(b, rep, axis=1) for b in linear.blocks())
    y = matmul(linear.spec, x, w, blocks, linear.act_dtype, linear.contract, w4a4=linear.w4a4)
    return y if linear.b is None else y + jnp.repeat(linear.b[...], rep, axis=0)


class MLA(nnx.Module):
    """Multi-head latent attention. Prefill expands the latent into per-head keys and values; decode uses the
    absorbed form: queries move into the latent space and attend over the cached latent directly."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, n, r, act = cfg.hidden, cfg.n_heads, cfg.kv_lora_rank, cfg.jnp_dtype
        nope, pe, hv, qk = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.head_dim
        self.cfg = cfg
        kw = dict(fmt=cfg.format(cfg.attn_weights), act_dtype=act)
        if cfg.q_lora_rank:
            self.wq_a = Linear(rngs, (d, cfg.q_lora_rank), ("embed", "q_lora"), spec="btd,dr->btr", **kw)
            self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps, act, "q_lora")
            self.wq_b = Linear(rngs, (cfg.q_lora_rank, n, qk), ("q_lora", "heads", "head_dim"), spec="btr,rnh->btnh",
                               **kw)
        else:
            self.wq = Linear(rngs, (d, n, qk), ("embed", "heads", "head_dim"), spec="btd,dnh->btnh", **kw)
        self.wkv_a = Linear(rngs, (d, r + pe), ("embed", "latent"), spec="btd,dr->btr", **kw)
        self.kv_norm = RMSNorm(r, cfg.norm_eps, act, "latent")
        self.wk_b = Linear(rngs, (r, n, nope), ("latent", "heads", "head_dim"), spec="btr,rnh->btnh", **kw)
        self.wv_b = Linear(rngs, (r, n, hv), ("latent", "heads", "head_dim"), spec="btr,rnh->btnh", **kw)
        self.wo = Linear(rngs, (n * hv, d), ("heads", "embed"), spec="btz,zd->btd", **kw)
        self.indexer = Indexer(cfg, rngs) if cfg.index_topk else None

    def __call__(self, x, cache: dict, layer, step: Step, window: int):
        cfg = self.cfg
        r, nope = cfg.kv_lora_rank, cfg.qk_nope_head_dim
        q_latent = self.q_norm(self.wq_a(x)) if cfg.q_lora_rank else None
        q = self.wq_b(q_latent) if cfg.q_lora_rank else self.wq(x)  # [B, T, N, qk]
        q = constrain(q, "batch", "seq", "heads", None)
        q_nope, q_pe = q[..., :nope], rope(q[..., nope:], step.positions, cfg.rope_theta)
        kv = self.wkv_a(x)  # [B, T, R + rope]
        c = self.kv_norm(kv[..., :r])
        k_pe = rope(kv[..., r:][:, :, None, :], step.positions, cfg.rope_theta)[:, :, 0]
        new = {"latent": jnp.concatenate([c, k_pe], axis=-1)}
        if self.indexer is not None:
            new["index"], new["index_scale"] = self.indexer.keys(x)
        cache = write_cache(cache, new, layer, step)
        scale = 1 / math.sqrt(cfg.head_dim)
        if step.decode:
            q_lat = self.wk_b.apply("btnh,rnh->btnr", q_nope)  # [B, 1, N, R]
            qc = constrain(jnp.concatenate([q_lat, q_pe], axis=-1)[:, :, None], "batch", "seq", None, "heads", None)
            latent = cache["latent"][layer]  # [B, C, R + rope]
            mask = decode_mask(cache["latent"], step, window if cfg.chunked else 0)
            if self.indexer is not None and latent.shape[1] > cfg.index_topk:  # read the chosen tokens alone
                scores = self.indexer.scores(x, q_latent, cache["index"][layer], cache["index_scale"][layer])
                rows, chosen = gather_chosen(latent, scores, mask, cfg.index_topk)  # [B, T, k, R + rope]
                b, t = qc.shape[:2]
                o_lat = attend(qc.reshape(b * t, 1, *qc.shape[2:]), rows.reshape(b * t, *rows.shape[2:])[:, :, None],
                               rows.reshape(b * t, *rows.shape[2:])[:, :, None, :r], chosen.reshape(b * t, 1, -1),
                               scale).reshape(b, t, *qc.shape[2:4], r)
            else:
                o_lat = attend(qc, latent[:, :, None], latent[:, :, None, :r], mask, scale)
            o = self.wv_b.apply("btnr,rnh->btnh", o_lat[:, :, 0])  # [B, 1, N, v]
        else:
            seq = "seq"
            if stripes("seq", c.shape[1]) > 1:  # context parallel: gather the latent, not the keys it expands to
                c, k_pe, seq = constrain(c, "batch", None, None), constrain(k_pe, "batch", None, None), None
            k = jnp.concatenate([self.wk_b(c), jnp.broadcast_to(k_pe[:, :, None], (*c.shape[:2], *q_pe.shape[2:3],
                                                                                    k_pe.shape[-1]))], axis=-1)
            k, v = constrain(k, "batch", seq, "heads", None), constrain(self.wv_b(c), "batch", seq, "heads", None)
            qh = jnp.concatenate([q_nope, q_pe], axis=-1)[:, :, :, None]  # [B, P, N, 1, qk]
            select = None
            if self.indexer is not None:  # each query's index_topk best keys, under the causal mask
                ik = new["index"].astype(cache_dtype(cfg, "index"))  # scored as stored: fp8

                def select(start, end, visible, ik=ik, isc=new["index_scale"]):
                    scores = self.indexer.scores(x[:, start:end], q_latent[:, start:end], ik[:, :end], isc[:, :end])
                    return kth_largest(scores, visible, cfg.index_topk)
            o = causal_blocks(qh, k, v, window, scale, chunked=cfg.chunked, select=select)[:, :, :, 0]
        return self.wo(o.reshape(*o.shape[:2], -1)), cache


def cache_dtype(cfg: ModelConfig, name: str):
    """The dtype a cache array is kept in: the KV cache's, a linear layer's state_dtype, its convolution's inputs in
    the activations' dtype."""
    if name in ("state", "index_scale"):
        return DTYPES[cfg.state_dtype] if name == "state" else jnp.float32
    if name == "index":  # the sparse-attention indexer's keys: fp8
        return DTYPES["float8"]
    return cfg.jnp_dtype if name.startswith("conv_") else DTYPES[cfg.kv]


def make_attention(cfg: ModelConfig, rngs: nnx.Rngs, linear: bool = False) -> nnx.Module:
    if linear:
        return GatedDeltaNet(cfg, rngs)
    return MLA(cfg, rngs) if cfg.is_mla else GQA(cfg, rngs)

