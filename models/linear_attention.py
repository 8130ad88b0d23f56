"""Linear attention: the gated delta rule (Gated DeltaNet, as Qwen3-Next and Qwen3.5 run it on 3 of 4 layers).

A layer keeps, per sequence, a fixed state instead of a KV cache that grows: for each value head a [key dim x value
dim] matrix S (in `state_dtype`), and the last `linear_conv - 1` inputs of its causal depthwise convolution over q,
k and v. Each token t, with l2-normed q and k, a decay g = -exp(A) softplus(a + dt_bias) and a write strength
beta = sigmoid(b):
    S = exp(g) S;  S = S + k (beta (v - S^T k))^T;  o = S^T q / sqrt(key dim)
and the output is RMSNorm(o) x silu(z), projected back to the model dimension.

Decode runs that recurrence (one token a sequence, or each of a speculative step's positions in turn), reading and
writing S. Prefill runs the chunked form that serving kernels (flash-linear-attention's chunk_gated_delta_rule) run:
within chunks of CHUNK tokens the delta rule's triangular system is solved for all chunks at once, then the chunks
pass S along one after another, each reading it and writing it once. Cache arrays: "state" [L, B, Hv, K, V],
"conv_q"/"conv_k" [L, B, linear_conv - 1, Hk, K], "conv_v" [L, B, linear_conv - 1, Hv, V].
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.scipy.linalg import solve_triangular

from models.config import ModelConfig
from models.layers import Linear, RMSNorm, param
from models.scopes import ATTN_CORE, CACHE_UPDATE
from models.sharding import constrain

CHUNK = 64  # flash-linear-attention's chunk size
STATE_AXES = ("layers", "batch", "heads", None, None)
CONV_AXES = ("layers", "batch", None, "heads", None)


def linear_cache_arrays(cfg: ModelConfig, layers: int, batch: int) -> dict[str, tuple[tuple, tuple]]:
    k, hk, hv, kd, vd = cfg.linear_conv - 1, cfg.linear_k_heads, cfg.linear_v_heads, cfg.linear_k_dim, cfg.linear_v_dim
    return {"state": ((layers, batch, hv, kd, vd), STATE_AXES), "conv_q": ((layers, batch, k, hk, kd), CONV_AXES),
            "conv_k": ((layers, batch, k, hk, kd), CONV_AXES), "conv_v": ((layers, batch, k, hv, vd), CONV_AXES)}


class GatedDeltaNet(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, hk, hv, kd, vd, act = (cfg.hidden, cfg.linear_k_heads, cfg.linear_v_heads, cfg.linear_k_dim,
                                  cfg.linear_v_dim, cfg.jnp_dtype)
        self.cfg = cfg
        kw = dict(fmt=cfg.format(cfg.attn_weights), act_dtype=act)
        self.wq = Linear(rngs, (d, hk, kd), ("embed", "heads", "head_dim"), spec="btd,dnh->btnh", **kw)
        self.wk = Linear(rngs, (d, hk, kd), ("embed", "heads", "head_dim"), spec="btd,dnh->btnh", **kw)
        self.wv = Linear(rngs, (d, hv, vd), ("embed", "heads", "head_dim"), spec="btd,dnh->btnh", **kw)
        self.wz = Linear(rngs, (d, hv, vd), ("embed", "heads", "head_dim"), spec="btd,dnh->btnh", **kw)
        self.wb = Linear(rngs, (d, hv), ("embed", "heads"), spec="btd,dn->btn", **kw)
        self.wa = Linear(rngs, (d, hv), ("embed", "heads"), spec="btd,dn->btn", **kw)
        self.conv_q, self.conv_k, self.conv_v = (param(rngs, (cfg.linear_conv, h, w), (None, "heads", "head_dim"),
                                                       act, scale=0.5) for h, w in ((hk, kd), (hk, kd), (hv, vd)))
        self.dt_bias = param(rngs, (hv,), ("heads",), act, scale=1.0)
        self.a_log = param(rngs, (hv,), ("heads",), act, scale=1.0)
        self.norm = RMSNorm(vd, cfg.norm_eps, act, "head_dim")
        self.wo = Linear(rngs, (hv * vd, d), ("heads", "embed"), spec="btz,zd->btd", **kw)

    def __call__(self, x, cache: dict, layer, step, window: int):
        cfg = self.cfg
        rep = cfg.linear_v_heads // cfg.linear_k_heads
        parts, convs = {}, {}
        for name, proj, w in (("q", self.wq, self.conv_q), ("k", self.wk, self.conv_k), ("v", self.wv, self.conv_v)):
            held = cache[f"conv_{name}"][layer] if step.decode else None
            parts[name], convs[name] = _conv(proj(x), held, w[...], cfg.linear_conv)
        with jax.named_scope(ATTN_CORE):
            q, k = (_l2norm(parts[n]) for n in ("q", "k"))
            q = jnp.repeat(q, rep, axis=2) * cfg.linear_k_dim ** -0.5  # [B, T, Hv, K]: value heads share a key head
            k = jnp.repeat(k, rep, axis=2)
            v = parts["v"].astype(jnp.float32)
            beta = jax.nn.sigmoid(self.wb(x).astype(jnp.float32))  # [B, T, Hv]
            g = -jnp.exp(self.a_log[...].astype(jnp.float32)) * jax.nn.softplus(
                self.wa(x).astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32))
            state = cache["state"][layer].astype(jnp.float32) if step.decode else None
            o, state = _recurrent(q, k, v, beta, g, state) if step.decode else _chunked(q, k, v, beta, g, x.dtype)
        o = self.norm(o.astype(x.dtype)) * jax.nn.silu(self.wz(x))
        with jax.named_scope(CACHE_UPDATE):
            cache = {**{f"conv_{n}": cache[f"conv_{n}"].at[layer].set(c.astype(cache[f"conv_{n}"].dtype))
                        for n, c in convs.items()},
                     "state": cache["state"].at[layer].set(state.astype(cache["state"].dtype))}
        o = constrain(o, "batch", "seq", "heads", None)
        return self.wo(o.reshape(*o.shape[:2], -1)), cache


def _conv(x, held, w, width: int):
    """Causal depthwise convolution over time, then silu. x [B, T, H, D], held [B, width - 1, H, D] (the inputs
    before these; zeros at the start of a prompt), w [width, H, D] -> (y [B, T, H, D], the last width - 1 inputs)."""
    if held is None:
        held = jnp.zeros((x.shape[0], width - 1, *x.shape[2:]), x.dtype)
    padded = jnp.concatenate([held.astype(x.dtype), x], axis=1)
    t = x.shape[1]
    y = sum(padded[:, j:j + t].astype(jnp.float32) * w[j].astype(jnp.float32) for j in range(width))
    return jax.nn.silu(y).astype(x.dtype), padded[:, t:]


def _l2norm(x):
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-6)


def _recurrent(q, k, v, beta, g, state):
    """Decode: the recurrence over the step's T positions, in turn. q, k [B, T, H, K], v [B, T, H, V], beta, g
    [B, T, H], state [B, H, K, V] -> (o [B, T, H, V], state)."""
    outs = []
    for t in range(q.shape[1]):
        state = state * jnp.exp(g[:, t])[..., None, None]
        remembered = jnp.einsum("bhk,bhkv->bhv", k[:, t], state)
        delta = (v[:, t] - remembered) * beta[:, t][..., None]
        state = state + jnp.einsum("bhk,bhv->bhkv", k[:, t], delta)
        outs.append(jnp.einsum("bhk,bhkv->bhv", q[:, t], state))
    return jnp.stack(outs, axis=1), state


def _chunked(q, k, v, beta, g, dtype):
    """Prefill: the chunked gated delta rule from a zero state. Shapes as _recurrent's; the prompt is padded to whole
    chunks with tokens that write nothing (k = v = 0, beta = 0, no decay). Matmuls take their operands in the
    activations' `dtype` and accumulate in float32, as the kernels do; decays, the triangular solve and the state
    passed between chunks stay float32."""
    b, p, h, kd = k.shape

    def mm(spec, x, y):
        return jnp.einsum(spec, x.astype(dtype), y.astype(dtype), preferred_element_type=jnp.float32)

    n = -(-p // CHUNK)

    def chunks(x):  # [B, P, H, ...] -> [B, H, N, C, ...]
        x = jnp.pad(x, [(0, 0), (0, n * CHUNK - p)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape(b, n, CHUNK, h, *x.shape[3:])
        return jnp.moveaxis(x, 3, 1)

    q, k, v, beta, g = (chunks(x) for x in (q, k, v, beta, g))
    gc = jnp.cumsum(g, axis=-1)  # [B, H, N, C]: decay from the chunk's start
    lower = jnp.tril(jnp.ones((CHUNK, CHUNK), bool))
    decay = jnp.exp(jnp.where(lower, gc[..., :, None] - gc[..., None, :], -jnp.inf))  # [B, H, N, C, C]
    kb = k * beta[..., None]
    strict = mm("...ik,...jk->...ij", kb, k) * decay * ~jnp.eye(CHUNK, dtype=bool)
    # (I + strict) [u, w] = [beta v, beta k exp(gc)]: the delta rule inside each chunk, for all chunks at once
    rhs = jnp.concatenate([v * beta[..., None], kb * jnp.exp(gc)[..., None]], axis=-1)
    solved = solve_triangular(strict + jnp.eye(CHUNK), rhs, lower=True, unit_diagonal=True)
    u, w = solved[..., :v.shape[-1]], solved[..., v.shape[-1]:]
    scores = mm("...ik,...jk->...ij", q, k) * decay

    def step(s, xs):  # s [B, H, K, V]: the state entering the chunk
        q_c, k_c, u_c, w_c, gc_c, scores_c = xs
        new = u_c - mm("bhck,bhkv->bhcv", w_c, s)
        o = mm("bhck,bhkv->bhcv", q_c * jnp.exp(gc_c)[..., None], s) + mm("bhcj,bhjv->bhcv", scores_c, new)
        last = gc_c[..., -1:]
        s = s * jnp.exp(last)[..., None] + mm("bhck,bhcv->bhkv", k_c * jnp.exp(last - gc_c)[..., None], new)
        return s, o

    s0 = jnp.zeros((b, h, kd, v.shape[-1]), jnp.float32)
    per_chunk = tuple(jnp.moveaxis(x, 2, 0) for x in (q, k, u, w, gc, scores))
    state, o = jax.lax.scan(step, s0, per_chunk)  # o [N, B, H, C, V]
    o = jnp.moveaxis(o, 0, 2).reshape(b, h, n * CHUNK, -1)[:, :, :p]
    return jnp.moveaxis(o, 1, 2), state
