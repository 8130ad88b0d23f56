"""A decoder-only transformer in Flax NNX: embedding, RMSNorm, RoPE, grouped-query attention, SwiGLU, LM head.

Every weight carries logical axis names (`logical_axes` metadata); activations are constrained by name through
models.sharding. Shapes in comments: B batch, T query tokens, S/C key positions (C = cache capacity), D hidden,
N query heads, K kv heads, G = N / K, H head_dim, F ffn, V vocab, L layers.

`prefill` and `decode` are plain functions of (weights, ...) so the tracer can jit them over abstract arrays.
The attention core runs under the named scope ATTN_CORE: it stands for a fused (flash) kernel whose scores stay
on chip, and the tracer reads it that way.
"""

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import ModelConfig
from models.sharding import constrain

ATTN_CORE = "attn_core"
PREFILL_QUERY_BLOCK = 1024  # causal prefill attention skips key blocks past each query block, as flash kernels do


def _param(rngs: nnx.Rngs, shape, axes, dtype, scale=None):
    init = nnx.initializers.normal(scale or 1.0 / math.sqrt(shape[0]))
    return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=axes)


class RMSNorm(nnx.Module):
    def __init__(self, cfg: ModelConfig):
        self.scale = nnx.Param(jnp.ones((cfg.hidden,), cfg.jnp_dtype), logical_axes=("embed",))
        self.eps = cfg.norm_eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (x32 * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope(x, positions, theta: float):
    """x [B, T, heads, H], positions [B, T]: rotate pairs (first half, second half) as Llama does."""
    half = x.shape[-1] // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [H/2]
    angle = positions[..., None, None].astype(jnp.float32) * freq  # [B, T, 1, H/2]
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attend(q, k, v, mask):
    """q [B, T, K, G, H], k/v [B, S, K, H], mask [B, T, S] -> [B, T, K, G, H]. The fused-kernel region."""
    with jax.named_scope(ATTN_CORE):
        scores = jnp.einsum("btkgh,bskh->bkgts", q, k) / math.sqrt(q.shape[-1])
        scores = jnp.where(mask[:, None, None], scores.astype(jnp.float32), -1e30)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bkgts,bskh->btkgh", probs, v)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, n, k, h, dt = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.jnp_dtype
        self.cfg = cfg
        self.wq = _param(rngs, (d, n, h), ("embed", "heads", "head_dim"), dt)
        self.wk = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), dt)
        self.wv = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), dt)
        self.wo = _param(rngs, (n, h, d), ("heads", "head_dim", "embed"), dt, scale=1.0 / math.sqrt(n * h))

    def project(self, x, positions):
        """x [B, T, D] -> q [B, T, K, G, H], k and v [B, T, K, H], rotated."""
        cfg = self.cfg
        q = rope(jnp.einsum("btd,dnh->btnh", x, self.wq[...]), positions, cfg.rope_theta)
        k = rope(jnp.einsum("btd,dkh->btkh", x, self.wk[...]), positions, cfg.rope_theta)
        v = jnp.einsum("btd,dkh->btkh", x, self.wv[...])
        q = q.reshape(*q.shape[:2], cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.head_dim)
        return constrain(q, "batch", "seq", "kv_heads", None, None), k, v

    def out(self, o):
        """o [B, T, K, G, H] -> [B, T, D]."""
        o = o.reshape(*o.shape[:2], self.cfg.n_heads, self.cfg.head_dim)
        return jnp.einsum("btnh,nhd->btd", o, self.wo[...])


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, f, dt = cfg.hidden, cfg.ffn, cfg.jnp_dtype
        self.gate = _param(rngs, (d, f), ("embed", "mlp"), dt)
        self.up = _param(rngs, (d, f), ("embed", "mlp"), dt)
        self.down = _param(rngs, (f, d), ("mlp", "embed"), dt)

    def __call__(self, x):
        h = jax.nn.silu(jnp.einsum("btd,df->btf", x, self.gate[...])) * jnp.einsum("btd,df->btf", x, self.up[...])
        return jnp.einsum("btf,fd->btd", constrain(h, "batch", "seq", "mlp"), self.down[...])


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = RMSNorm(cfg)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, cache, layer, positions, attention):
        """One layer: `attention(q, k, v, cache, layer) -> (o, cache)` decides prefill or decode."""
        with jax.named_scope("attention"):
            q, k, v = self.attn.project(self.attn_norm(x), positions)
            o, cache = attention(q, k, v, cache, layer)
            x = x + self.attn.out(o)
        with jax.named_scope("mlp"):
            x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, "batch", "seq", "embed"), cache


@partial(jax.tree_util.register_dataclass, data_fields=["k", "v"], meta_fields=[])
@dataclasses.dataclass
class KVCache:
    k: jax.Array  # [L, B, C, K, H]: L layers, B sequences, capacity C positions
    v: jax.Array  # [L, B, C, K, H]

    AXES = ("layers", "batch", "cache_seq", "kv_heads", "head_dim")

    @staticmethod
    def shape(cfg: ModelConfig, batch: int, capacity: int):
        return (cfg.n_layers, batch, capacity, cfg.n_kv_heads, cfg.head_dim)


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden), ("vocab", "embed"), cfg.jnp_dtype, scale=1.0)
        if cfg.scan_layers:  # one Block whose weights carry a leading layer axis
            make = nnx.vmap(lambda r: Block(cfg, r), in_axes=0, out_axes=0)
            self.layers = nnx.split_rngs(splits=cfg.n_layers)(make)(rngs)
        else:
            self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = _param(rngs, (cfg.hidden, cfg.vocab_size), ("embed", "vocab"), cfg.jnp_dtype)

    def logits(self, x):
        """x [B, D] -> [B, V]."""
        with jax.named_scope("lm_head"):
            x = self.final_norm(x)
            w = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
            return constrain(jnp.einsum("bd,dv->bv", x, w), "batch", "vocab")

    def run_layers(self, x, cache, positions, attention):
        if not self.cfg.scan_layers:
            for i, block in enumerate(self.layers):
                x, cache = block(x, cache, i, positions, attention)
            return x, cache
        graphdef, stacked = nnx.split(self.layers)

        def body(carry, xs):
            layer_weights, i = xs
            return nnx.merge(graphdef, layer_weights)(*carry, i, positions, attention), None

        (x, cache), _ = jax.lax.scan(body, (x, cache), (stacked, jnp.arange(self.cfg.n_layers)))
        return x, cache


def _prefill_attention(q, k, v, cache: KVCache, layer, *, prompt: int):
    """Write the prompt's K/V into positions [0, P) and attend causally, one query block at a time."""
    with jax.named_scope("cache_update"):
        zero = jnp.zeros((), jnp.int32)
        cache = KVCache(jax.lax.dynamic_update_slice(cache.k, k[None], (layer, zero, zero, zero, zero)),
                        jax.lax.dynamic_update_slice(cache.v, v[None], (layer, zero, zero, zero, zero)))
    block = min(PREFILL_QUERY_BLOCK, prompt)
    outs = []
    for start in range(0, prompt, block):
        end = min(start + block, prompt)  # keys past `end` are masked for every query in the block: skip them
        t, s = jnp.arange(start, end)[:, None], jnp.arange(end)[None, :]
        mask = jnp.broadcast_to(s <= t, (q.shape[0], end - start, end))
        outs.append(attend(q[:, start:end], k[:, :end], v[:, :end], mask))
    return jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0], cache


def _decode_attention(q, k, v, cache: KVCache, layer, *, positions):
    """Write one token per sequence at its position, then attend over all C cached positions (masked past it)."""
    with jax.named_scope("cache_update"):
        # per sequence, an in-place update at its own position; vmapped over the batch so that the update stays
        # sharded with it (an indexed scatter would gather the batch across replicas)
        def write(c, x, p):  # c [L, C, K, H], x [1, K, H]
            zero = jnp.zeros((), jnp.int32)
            return jax.lax.dynamic_update_slice(c, x[None], (layer, p, zero, zero))

        update = jax.vmap(write, in_axes=(1, 0, 0), out_axes=1)
        cache = KVCache(update(cache.k, k, positions), update(cache.v, v, positions))
    k_all, v_all = cache.k[layer], cache.v[layer]  # [B, C, K, H]
    mask = (jnp.arange(k_all.shape[1])[None, :] <= positions[:, None])[:, None, :]  # [B, 1, C]
    return attend(q, k_all, v_all, mask), cache


def prefill(weights: nnx.State, tokens, *, graphdef: nnx.GraphDef, capacity: int):
    """tokens [B, P] -> (logits of the last position [B, V], KV cache with capacity C >= P)."""
    model: Transformer = nnx.merge(graphdef, weights)
    cfg = model.cfg
    batch, prompt = tokens.shape
    shape = KVCache.shape(cfg, batch, capacity)
    cache = KVCache(constrain(jnp.zeros(shape, cfg.jnp_dtype), *KVCache.AXES),
                    constrain(jnp.zeros(shape, cfg.jnp_dtype), *KVCache.AXES))
    positions = jnp.broadcast_to(jnp.arange(prompt), (batch, prompt))
    x = constrain(model.embed[...][tokens], "batch", "seq", "embed")  # [B, P, D]
    x, cache = model.run_layers(x, cache, positions, partial(_prefill_attention, prompt=prompt))
    return model.logits(x[:, -1]), cache


def decode(weights: nnx.State, cache: KVCache, tokens, positions, *, graphdef: nnx.GraphDef):
    """tokens [B], positions [B] (where each token goes in the cache) -> (logits [B, V], updated cache)."""
    model: Transformer = nnx.merge(graphdef, weights)
    x = constrain(model.embed[...][tokens][:, None], "batch", "seq", "embed")  # [B, 1, D]
    x, cache = model.run_layers(x, cache, positions[:, None], partial(_decode_attention, positions=positions))
    return model.logits(x[:, 0]), cache


def abstract_model(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's graph and its weights as ShapeDtypeStructs: nothing is allocated."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
