"""DeepSeek Sparse Attention (DeepSeek-V3.2): a lightning indexer picks, for each query, the `index_topk` cached
tokens its MLA attention reads.

The indexer keeps its own small key per token and layer (index_dim values in fp8 with one float32 scale per 128,
DeepSeek's layout), computed from the hidden state by wk and a LayerNorm. A query's index heads come from its
compressed query (q_lora) by wq; a per-head weight from the hidden state. Scores over every cached token:
    I(t, s) = sum over index heads h of w(t, h) relu(q(t, h) . k(s))
and the top index_topk of them are attended. Its projections have no head axis to split: like MLA's latent
down-projections, every device of a tensor-parallel group holds and computes them whole.

Decode gathers the chosen tokens' latent rows (index_topk of them, however long the context) and attends over
those alone. Prefill scores every causal (query, key) pair and attends under a mask of the chosen keys: where the
prompt is longer than index_topk, its attention FLOPs are those of the dense causal pairs, an upper bound on the
sparse kernel's (each query's index_topk keys); the notes say so.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import ModelConfig
from models.layers import Linear, param
from models.scopes import ATTN_CORE, CHOSEN_ROWS
from models.sharding import constrain

INDEX_AXES = {"index": ("layers", "batch", "cache_seq", None), "index_scale": ("layers", "batch", "cache_seq", None)}
SCALE_BLOCK = 128  # index key values per float32 scale


def index_cache_arrays(cfg: ModelConfig, layers: int, batch: int, capacity: int) -> dict[str, tuple[tuple, tuple]]:
    scales = -(-cfg.index_dim // SCALE_BLOCK)
    return {"index": ((layers, batch, capacity, cfg.index_dim), INDEX_AXES["index"]),
            "index_scale": ((layers, batch, capacity, scales), INDEX_AXES["index_scale"])}


class Indexer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, h, k, act = cfg.hidden, cfg.index_heads, cfg.index_dim, cfg.jnp_dtype
        kw = dict(fmt=cfg.format(cfg.attn_weights), act_dtype=act)
        self.cfg = cfg
        self.wq = Linear(rngs, (cfg.q_lora_rank, h, k), ("q_lora", None, None), spec="btr,rhk->bthk", **kw)
        self.wk = Linear(rngs, (d, k), ("embed", None), spec="btd,dk->btk", **kw)
        self.k_norm_scale = param(rngs, (k,), (None,), act, scale=1.0)
        self.k_norm_bias = param(rngs, (k,), (None,), act, scale=0.0)
        self.weights = Linear(rngs, (d, h), ("embed", None), spec="btd,dh->bth", **kw)

    def keys(self, x):
        """x [B, T, D] -> (index keys [B, T, index_dim], their scales [B, T, index_dim / 128]): LayerNorm(wk x)."""
        k = self.wk(x).astype(jnp.float32)
        k = (k - k.mean(-1, keepdims=True)) * jax.lax.rsqrt(k.var(-1, keepdims=True) + 1e-6)
        k = k * self.k_norm_scale[...].astype(jnp.float32) + self.k_norm_bias[...].astype(jnp.float32)
        scales = jnp.ones((*k.shape[:2], -(-k.shape[-1] // SCALE_BLOCK)), jnp.float32)
        return k.astype(x.dtype), scales

    def scores(self, x, q_latent, keys, scales):
        """I(t, s) for the step's queries [B, T] against keys [B, S, index_dim] (scales [B, S, n]) -> [B, T, S]. The
        head-weighted sum runs in the scoring kernel (DeepGEMM's fp8 MQA logits): per-head logits stay on chip."""
        q = self.wq(q_latent)  # [B, T, H, K]
        w = self.weights(x).astype(jnp.float32) * self.cfg.index_heads ** -0.5
        with jax.named_scope(ATTN_CORE):
            return self._scores(q, w, keys, scales)

    def _scores(self, q, w, keys, scales):
        blocks = scales.shape[-1]  # the keys' scales applied to the dot products, as the fp8 kernel does
        qb = q.reshape(*q.shape[:3], blocks, -1)
        kb = keys.reshape(*keys.shape[:2], blocks, -1).astype(q.dtype)
        logits = jnp.einsum("bthnk,bsnk->bthsn", qb, kb, preferred_element_type=jnp.float32)
        logits = jnp.sum(logits * scales[:, None, None], axis=-1)
        return jnp.einsum("bths,bth->bts", jax.nn.relu(logits) / math.sqrt(self.cfg.index_dim), w)


def _ranked(scores, visible):
    """Each query's keys best first (ties to the earlier key), the invisible last: [B, T, S] positions."""
    masked = jnp.where(visible, scores, -jnp.inf)
    iota = jax.lax.broadcasted_iota(jnp.int32, masked.shape, masked.ndim - 1)
    return jax.lax.sort((-masked, iota), dimension=masked.ndim - 1, num_keys=1)[1]


def kth_largest(scores, visible, k: int):
    """[B, T, S] scores, [B, T, S] visible -> [B, T, S] the visible keys among each query's k best (all of them where
    fewer than k are visible); exactly k where more are, ties to the earlier key, as decode's gather picks them."""
    with jax.named_scope(ATTN_CORE):
        return _chosen(scores, visible, k)


def _chosen(scores, visible, k: int):
    order = _ranked(scores, visible)
    iota = jax.lax.broadcasted_iota(jnp.int32, order.shape, order.ndim - 1)
    rank = jax.lax.sort((order, iota), dimension=order.ndim - 1, num_keys=1)[1]  # each key's place in the order
    return visible & (rank < k)


def gather_chosen(latent, scores, visible, k: int):
    """Decode's sparse read: latent [B, C, R] and scores, visible [B, T, C] -> (the chosen rows [B, T, k, R],
    whether each is visible [B, T, k])."""
    with jax.named_scope(ATTN_CORE):  # a top-k kernel: the scores read once, the indices kept
        idx = _ranked(scores, visible)[..., :k]  # [B, T, k]
    with jax.named_scope(CHOSEN_ROWS):  # read in place by the attention kernel, as the sparse kernel loads them
        rows = jax.vmap(lambda lat, i: lat[i])(latent, idx)  # [B, T, k, R]
    chosen = jnp.take_along_axis(visible, idx, axis=-1)
    return constrain(rows, "batch", None, None, None), chosen
