"""Building blocks shared by the attention, MLP and expert layers: weights in any stored dtype, the matmul each
dtype runs as, RMSNorm, RoPE and the attention core.

Einsum letters: B batch, T query tokens, S key positions, D hidden, N query heads, K kv heads, G = N / K,
H head dim, F ffn, E experts, V vocab.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from models.formats import Format
from models.scopes import ATTN_CORE
from models.sharding import ways


def param(rngs: nnx.Rngs, shape, axes, dtype, scale=None, fan_in=None) -> nnx.Param:
    """A weight with logical axis names. Quantized dtypes are drawn in f32 and cast (values do not matter to cost)."""
    std = scale or 1.0 / math.sqrt(fan_in or shape[0])
    value = nnx.initializers.normal(std)(rngs.params(), shape, jnp.float32)
    return nnx.Param(value.astype(dtype), logical_axes=tuple(axes))


def zeros(shape, axes, dtype) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, dtype), logical_axes=tuple(axes))


class Linear(nnx.Module):
    """A matmul weight `w` stored in a format (config.FORMATS): its element type, block scales and zero points along
    the contracted axis (MXFP4, NVFP4, int4), and an optional bias.

    `spec` is the einsum of the activation with w (e.g. "btd,dnh->btnh"); `contract` the contracted axis of w."""

    def __init__(self, rngs: nnx.Rngs, shape, axes, fmt: Format, act_dtype, spec: str, contract: int = 0,
                 bias: bool = False, fan_in: int | None = None, scale: float | None = None):
        self.spec, self.contract, self.act_dtype, self.w4a4 = spec, contract, act_dtype, fmt.w4a4
        self.w = param(rngs, shape, axes, fmt.element, scale=scale, fan_in=fan_in or shape[contract])
        scales = zero_points = None
        if fmt.block:  # one scale (and zero point) per block of values along the contracted axis
            s_shape = tuple(-(-d // fmt.block) if i == contract else d for i, d in enumerate(shape))
            # split like their values where the blocks divide over the axis' shards (the translator's, while the model
            # is built); kept whole where they do not (MXFP4's 2880 / 32 = 90 blocks over 8)
            s_axes = tuple(None if i == contract and s_shape[i] % ways(a or "") else a for i, a in enumerate(axes))
            scales = nnx.Param(jnp.ones(s_shape, fmt.scale), logical_axes=s_axes)
            if fmt.zero is not None:
                zero_points = nnx.Param(jnp.zeros(s_shape, fmt.zero), logical_axes=s_axes)
        self.scales, self.zeros = scales, zero_points
        out_axes = [a for i, a in enumerate(axes) if i != contract]
        out_shape = [d for i, d in enumerate(shape) if i != contract]
        self.b = zeros(out_shape, out_axes, act_dtype) if bias else None

    def blocks(self) -> tuple:
        """The block scales and zero points, as arrays (none for unscaled dtypes)."""
        return tuple(p[...] for p in (self.scales, self.zeros) if p is not None)

    def __call__(self, x):
        return self.apply(self.spec, x)

    def apply(self, spec: str, x):
        """The weight used with another einsum (MLA's absorbed decode)."""
        y = matmul(spec, x, self.w[...], self.blocks(), self.act_dtype, self.contract, w4a4=self.w4a4)
        return y if self.b is None else y + _broadcast(self.b[...], spec, spec.split("->")[1])

    def partial(self, x, parts: int):
        """x times w with w's contracted axis cut into `parts` pieces kept apart: [..., parts, out] partial sums
        that the caller adds up (after adding others to them: see models.moe). The bias is shared among them."""
        y = matmul(self.spec, x, self.w[...], self.blocks(), self.act_dtype, self.contract, self.w4a4, parts)
        out = self.spec.split("->")[1]  # the parts' axis (".", no letter of the spec) just before the last
        return y if self.b is None else y + _broadcast(self.b[...] / parts, self.spec, f"{out[:-1]}.{out[-1]}")


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


def matmul(spec: str, x, w, blocks, act_dtype, blocked: int = 0, w4a4: bool = False, parts: int = 0):
    """x (activations) times w in the way w's stored dtype runs on current accelerators:
    - bf16/f32: a plain matmul;
    - fp8 and int8 (W8A8), and NVFP4 with `w4a4` (on chips with FP4 tensor cores): activations quantized to w's
      element type, a low-precision matmul whose epilogue writes act_dtype (per-channel or 128x128 block scales are
      applied there and not modelled);
    - MXFP4, NVFP4 without FP4 tensor cores, int4 (W4A16): w converted on the fly inside a matmul in act_dtype.
    `blocks` (block scales, and int4's zero points) are read once and applied per output element, summed over
    blocks: the bytes and (negligible) FLOPs of a fused kernel, not its exact numerics. `blocked` is w's axis the
    blocks run along. With `parts`, w's contracted axis is cut into that many partial sums kept apart
    (split_contraction)."""
    letters = spec.split("->")[0].split(",")[1]  # w's, and its blocks'
    if parts:
        spec, x, w = split_contraction(spec, x, w, blocked, parts)
    if w.dtype in (jnp.float8_e4m3fn, jnp.int8):
        y = jnp.einsum(spec, x.astype(w.dtype), w, preferred_element_type=act_dtype)
    elif w4a4:  # both operands stored in FP4; written as converted back (XLA's CPU compiler rejects FP4 dot operands)
        y = jnp.einsum(spec, x.astype(w.dtype).astype(act_dtype), w.astype(act_dtype))
    else:
        y = jnp.einsum(spec, x, w.astype(act_dtype) if w.dtype != act_dtype else w)
    if not blocks:
        return y
    lhs, out = spec.split("->")
    w_letters = lhs.split(",")[1]
    factor = sum(b.astype(jnp.float32) for b in blocks)
    if letters[blocked] in out:  # the blocks run along an output axis (MLA's absorbed decode): one per block
        factor = jnp.repeat(factor, w.shape[w_letters.index(letters[blocked])] // factor.shape[blocked], axis=blocked)
    contracted = tuple(i for i, c in enumerate(letters) if c not in out)
    factor = jnp.sum(factor, axis=contracted).astype(act_dtype)
    kept = "".join(c for c in letters if c in out)
    return jnp.einsum(f"{out},{kept}->{out}", y, factor)


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
