"""A decoder-only transformer in Flax NNX: embedding, layers of attention (GQA or MLA, full or windowed) and a
feed-forward (dense SwiGLU or mixture of experts), final norm and LM head.

Every weight carries logical axis names (`logical_axes` metadata); activations are constrained by name through
models.sharding. Layers are grouped into segments of identical units (a dense prefix, then the rest; a unit is one
period of the window pattern and the MoE interleaving), each scanned with lax.scan (one compiled body per kind of
layer) or unrolled.

`prefill` and `decode` are plain functions of (weights, ...) so the tracer can jit them over abstract arrays.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from models import scopes
from models.attention import Step, cache_arrays, cache_capacity, cache_dtype, make_attention, striped_order
from models.config import ModelConfig
from models.formats import DTYPES
from models.layers import RMSNorm, matmul, param
from models.moe import MLP, MoE
from models.sharding import constrain, stripes

__all__ = ["KVCache", "Transformer", "abstract_model", "cache_shapes", "decode", "prefill", "segments"]


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, moe: bool, linear: bool = False):
        act = cfg.jnp_dtype
        self.attn_norm = RMSNorm(cfg.hidden, cfg.norm_eps, act)
        self.attn = make_attention(cfg, rngs, linear)
        self.mlp_norm = RMSNorm(cfg.hidden, cfg.norm_eps, act)
        self.mlp = MoE(cfg, rngs) if moe else MLP(cfg, rngs)
        self.scope = scopes.MOE if moe else scopes.MLP

    def __call__(self, x, cache: dict, layer, step: Step, window: int):
        with jax.named_scope(scopes.ATTENTION):
            o, cache = self.attn(self.attn_norm(x), cache, layer, step, window)
            x = x + o
        with jax.named_scope(self.scope):
            x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, "batch", "seq", "embed"), cache


class Unit(nnx.Module):
    """One period of the model's layers (or the layers a run ends with, short of a period): consecutive layers that
    differ only in their window, whether their feed-forward is MoE (`moe`, one flag a layer) and whether their
    attention is linear (`linear`)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, *, moe: tuple[bool, ...], linear: tuple[bool, ...]):
        self.blocks = nnx.List([Block(cfg, rngs, m, n) for m, n in zip(moe, linear, strict=True)])


def segments(cfg: ModelConfig) -> list[tuple[int, int, tuple[bool, ...], int]]:
    """(first layer, units, MoE flag of each layer of a unit, layers a unit) per run of identical units: a dense
    prefix (first_dense), then the rest, in units of the period (the window pattern's and moe_every's); a run the
    period does not tile ends in one unit of the layers left (Gemma 3 27B: 62 layers, 10 periods of 5 local and 1
    global layer, then 2 local ones). Llama 4 Maverick: 12 units of 4 layers, MoE on the second and fourth."""
    out = []
    for first, count in ((0, cfg.first_dense), (cfg.first_dense, cfg.n_layers - cfg.first_dense)):
        whole, rest = divmod(count, cfg.period)
        for start, units, width in ((first, whole, cfg.period), (first + whole * cfg.period, 1, rest)):
            if units and width:
                out.append((start, units, tuple(cfg.layer_is_moe(start + j) for j in range(width)), width))
    return out


@partial(jax.tree_util.register_dataclass, data_fields=["stacks"], meta_fields=[])
@dataclasses.dataclass
class KVCache:
    """One dict of arrays per (segment, position in the window pattern): see models.attention for their shapes."""

    stacks: tuple[dict[str, jax.Array], ...]


def cache_shapes(cfg: ModelConfig, batch: int, capacity: int) -> tuple[dict[str, tuple[tuple, tuple]], ...]:
    """Per stack: name -> (shape, logical axes). Windowed layers hold min(window, capacity) positions."""
    return tuple(cache_arrays(cfg, units, batch, cache_capacity(cfg, first + j, capacity), cfg.is_linear(first + j))
                 for first, units, _, width in segments(cfg) for j in range(width))


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        act = cfg.jnp_dtype
        vocab = DTYPES[cfg.vocab]
        self.embed = param(rngs, (cfg.vocab_size, cfg.hidden), ("vocab", "embed"), vocab, scale=1.0)
        stacks = []
        for first, units, moe, width in segments(cfg):
            linear = tuple(cfg.is_linear(first + j) for j in range(width))
            if cfg.scan_layers:  # one Unit whose weights carry a leading layer axis
                make = nnx.vmap(partial(Unit, cfg, moe=moe, linear=linear), in_axes=0, out_axes=0)
                stacks.append(nnx.split_rngs(splits=units)(make)(rngs))
            else:
                stacks.append(nnx.List([Unit(cfg, rngs, moe=moe, linear=linear) for _ in range(units)]))
        self.segments = nnx.List(stacks)
        self.final_norm = RMSNorm(cfg.hidden, cfg.norm_eps, act)
        if not cfg.tie_embeddings:
            self.lm_head = param(rngs, (cfg.hidden, cfg.vocab_size), ("embed", "vocab"), vocab)

    def logits(self, x):
        """x [B, D] -> [B, V]."""
        with jax.named_scope(scopes.LM_HEAD):
            x = self.final_norm(x)
            w = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
            return constrain(matmul("bd,dv->bv", x, w, None, self.cfg.jnp_dtype), "batch", "vocab")

    def run_layers(self, x, cache: KVCache, step: Step):
        cfg, out = self.cfg, []
        for (first, _, _, width), stack in zip(segments(cfg), self.segments, strict=True):
            windows = [cfg.window(first + j) for j in range(width)]

            def unit_fn(unit, x, caches, i, windows=windows):
                caches = list(caches)
                for j, block in enumerate(unit.blocks):
                    x, caches[j] = block(x, caches[j], i, step, windows[j])
                return x, tuple(caches)

            caches = cache.stacks[len(out):len(out) + width]
            if cfg.scan_layers:
                graphdef, stacked = nnx.split(stack)

                def body(carry, xs, graphdef=graphdef, unit_fn=unit_fn):
                    weights, i = xs
                    return unit_fn(nnx.merge(graphdef, weights), *carry, i), None

                units = jax.tree.leaves(stacked)[0].shape[0]
                (x, caches), _ = jax.lax.scan(body, (x, caches), (stacked, jnp.arange(units)))
            else:
                for i, unit in enumerate(stack):
                    x, caches = unit_fn(unit, x, caches, i)
            out.extend(caches)
        return x, KVCache(tuple(out))


def empty_cache(cfg: ModelConfig, batch: int, capacity: int) -> KVCache:
    return KVCache(tuple({name: constrain(jnp.zeros(shape, cache_dtype(cfg, name)), *axes)
                          for name, (shape, axes) in stack.items()} for stack in cache_shapes(cfg, batch, capacity)))


def prefill(weights: nnx.State, tokens, *, graphdef: nnx.GraphDef, capacity: int):
    """tokens [B, P] -> (logits of the last position [B, V], KV cache with capacity C >= P)."""
    model: Transformer = nnx.merge(graphdef, weights)
    batch, prompt = tokens.shape
    order = striped_order(prompt, stripes("seq", prompt))  # the prompt in the order its devices hold it
    positions = jnp.broadcast_to(order, (batch, prompt))
    x = constrain(model.embed[...][tokens[:, order]].astype(model.cfg.jnp_dtype), "batch", "seq", "embed")
    x, cache = model.run_layers(x, empty_cache(model.cfg, batch, capacity), Step(False, positions))
    return model.logits(x[:, -1]), cache  # the last position is last in either order


def decode(weights: nnx.State, cache: KVCache, tokens, positions, *, graphdef: nnx.GraphDef):
    """tokens [B], positions [B] (where each token goes in the cache) -> (logits [B, V], updated cache); or tokens
    and positions [B, T], T positions a sequence (speculative decoding's verification of T - 1 drafted tokens),
    each attending to the cache and the positions before it -> (logits [B T, V], updated cache)."""
    model: Transformer = nnx.merge(graphdef, weights)
    if tokens.ndim == 2:
        x = constrain(model.embed[...][tokens].astype(model.cfg.jnp_dtype), "batch", "seq", "embed")
        x, cache = model.run_layers(x, cache, Step(True, positions))
        return model.logits(x.reshape(-1, x.shape[-1])), cache
    x = constrain(model.embed[...][tokens][:, None].astype(model.cfg.jnp_dtype), "batch", "seq", "embed")
    x, cache = model.run_layers(x, cache, Step(True, positions[:, None]))
    return model.logits(x[:, 0]), cache


def abstract_model(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's graph and its weights as ShapeDtypeStructs: nothing is allocated."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
