"""Building blocks shared by the attention, MLP and expert layers: weights in any stored dtype, the matmul each
dtype runs as, RMSNorm, RoPE and the attention core.

Einsum letters: B batch, T query tokens, S key positions, D hidden, N query heads, K kv heads, G = N / K,
H head dim, F ffn, E experts, V vocab.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import DTYPES, MXFP4_BLOCK

ATTN_CORE = "attn_core"  # named scope of the attention core: the tracer reads it as one fused (flash) kernel


def param(rngs: nnx.Rngs, shape, axes, dtype, scale=None, fan_in=None) -> nnx.Param:
    """A weight with logical axis names. Quantized dtypes are drawn in f32 and cast (values do not matter to cost)."""
    std = scale or 1.0 / math.sqrt(fan_in or shape[0])
    value = nnx.initializers.normal(std)(rngs.params(), shape, jnp.float32)
    return nnx.Param(value.astype(dtype), logical_axes=tuple(axes))


def zeros(shape, axes, dtype) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, dtype), logical_axes=tuple(axes))


class Linear(nnx.Module):
    """A matmul weight `w` stored in `dtype` (config.DTYPES), with MXFP4 block scales and an optional bias.

    `spec` is the einsum of the activation with w (e.g. "btd,dnh->btnh"); `contract` the contracted axis of w."""

    def __init__(self, rngs: nnx.Rngs, shape, axes, dtype: str, act_dtype, spec: str, contract: int = 0,
                 bias: bool = False, fan_in: int | None = None, scale: float | None = None):
        self.spec, self.contract, self.act_dtype = spec, contract, act_dtype
        self.w = param(rngs, shape, axes, DTYPES[dtype], scale=scale, fan_in=fan_in or shape[contract])
        if dtype == "mxfp4":  # one power-of-two scale (e8m0) per block of 32 values along the contracted axis
            s_shape = tuple(d // MXFP4_BLOCK if i == contract else d for i, d in enumerate(shape))
            # blocks need not divide a tensor-parallel split of their axis (2880 / 32 = 90 over 8): kept whole there
            s_axes = tuple(None if i == contract else a for i, a in enumerate(axes))
            self.scales = nnx.Param(jnp.ones(s_shape, jnp.float8_e8m0fnu), logical_axes=s_axes)
        else:
            self.scales = None
        out_axes = [a for i, a in enumerate(axes) if i != contract]
        out_shape = [d for i, d in enumerate(shape) if i != contract]
        self.b = zeros(out_shape, out_axes, act_dtype) if bias else None

    def __call__(self, x):
        return self.apply(self.spec, x)

    def apply(self, spec: str, x):
        """The weight used with another einsum (MLA's absorbed decode)."""
        scales = None if self.scales is None else self.scales[...]
        y = matmul(spec, x, self.w[...], scales, self.act_dtype, self.contract)
        return y if self.b is None else y + _broadcast(self.b[...], spec, spec.split("->")[1])

    def partial(self, x, parts: int):
        """x times w with w's contracted axis cut into `parts` pieces kept apart: [..., parts, out] partial sums
        that the caller adds up (after adding others to them: see models.moe). The bias is shared among them."""
        scales = None if self.scales is None else self.scales[...]
        spec, x, w = split_contraction(self.spec, x, self.w[...], self.contract, parts)
        y = matmul(spec, x, w, scales, self.act_dtype, self.contract, self.spec.split("->")[0].split(",")[1])
        return y if self.b is None else y + _broadcast(self.b[...] / parts, self.spec, spec.split("->")[1])


def _broadcast(b, spec: str, out: str):
    """A bias over the output letters of `spec` that are not contracted, shaped to broadcast against `out`."""
    lhs, own = spec.split("->")
    kept = "".join(c for c in lhs.split(",")[1] if c in own)
    return b.reshape([b.shape[kept.index(c)] if c in kept else 1 for c in out])


def split_contraction(spec: str, x, w, contract: int, parts: int):
    """(spec, x, w) with the letter of w's contracted axis `contract` cut into (parts, rest) in both operands and the
    parts kept as an output axis just before the last: a device holding one part computes its partial sum without
    reducing it (tensor-parallel experts combine their weighted partial outputs before the one all-reduce)."""
    lhs, out = spec.split("->")
    x_letters, w_letters = lhs.split(",")
    c = w_letters[contract]
    p = next(ch for ch in "pqrstuvwxyz" if ch not in spec)

    def cut(a, letters):
        i = letters.index(c)
        return a.reshape(*a.shape[:i], parts, a.shape[i] // parts, *a.shape[i + 1:])

    new = f"{x_letters.replace(c, p + c)},{w_letters.replace(c, p + c)}->{out[:-1]}{p}{out[-1]}"
    return new, cut(x, x_letters), cut(w, w_letters)


def matmul(spec: str, x, w, scales, act_dtype, blocked: int = 0, scale_letters: str | None = None):
    """x (activations) times w in the way w's stored dtype runs on current accelerators:
    - bf16/f32: a plain matmul;
    - fp8 and int8 (W8A8): activations quantized to w's dtype, an fp8/int8 matmul (per-channel/block scales are
      applied to the output and are not modelled);
    - mxfp4 (W4A16): w converted on the fly inside the matmul, and its block scales read once. The scales are
      applied per output element, summed over blocks: the bytes and (negligible) FLOPs of a fused MXFP4 kernel, not
      its exact numerics. `blocked` is the scales' axis the 32-value blocks run along; `scale_letters` the scales'
      einsum letters when w was reshaped (split_contraction), else w's."""
    if w.dtype in (jnp.float8_e4m3fn, jnp.int8):  # the kernel's epilogue writes act_dtype (scales applied there)
        return jnp.einsum(spec, x.astype(w.dtype), w, preferred_element_type=act_dtype)
    if w.dtype == jnp.float4_e2m1fn:
        y = jnp.einsum(spec, x, w.astype(act_dtype))
        lhs, out = spec.split("->")
        w_letters = scale_letters or lhs.split(",")[1]
        factor = scales.astype(jnp.float32)
        if w_letters[blocked] in out:  # the blocks run along an output axis: one scale per 32 outputs
            factor = jnp.repeat(factor, MXFP4_BLOCK, axis=blocked)
        contracted = tuple(i for i, c in enumerate(w_letters) if c not in out)
        factor = jnp.sum(factor, axis=contracted).astype(act_dtype)
        kept = "".join(c for c in w_letters if c in out)
        return jnp.einsum(f"{out},{kept}->{out}", y, factor)
    return jnp.einsum(spec, x, w.astype(act_dtype) if w.dtype != act_dtype else w)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, dtype, axis: str = "embed"):
        self.scale = nnx.Param(jnp.ones((dim,), dtype), logical_axes=(axis,))
        self.eps = eps

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


def attend(q, k, v, mask, scale: float, sinks=None):
    """q [B, T, K, G, H], k [B, S, K, H], v [B, S, K, Hv], mask [B, T, S], sinks [K, G] learned logits that take
    softmax mass and no value -> [B, T, K, G, Hv]. The fused-kernel region."""
    with jax.named_scope(ATTN_CORE):
        dtype = q.dtype
        scores = jnp.einsum("btkgh,bskh->bkgts", q, k.astype(dtype)) * scale
        scores = jnp.where(mask[:, None, None], scores.astype(jnp.float32), -1e30)
        if sinks is not None:
            sink = jnp.broadcast_to(sinks.astype(jnp.float32)[None, :, :, None, None], (*scores.shape[:-1], 1))
            probs = jax.nn.softmax(jnp.concatenate([scores, sink], axis=-1), axis=-1)[..., :-1]
        else:
            probs = jax.nn.softmax(scores, axis=-1)
        return jnp.einsum("bkgts,bskh->btkgh", probs.astype(dtype), v.astype(dtype))
