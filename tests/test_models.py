import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CHUNKED, HYBRID, MLA, MOE, SPARSE, WINDOWED
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

import models.attention as attention
import models.linear_attention as linear_attention
import models.transformer as tf
from meshes.strategies import get_strategy, virtual_mesh
from meshes.systems import get_system
from models.files import get_model
from models.presets import PRESETS, TINY
from tracer.compile import translator
from tracer.errors import ConfigError


@pytest.mark.parametrize("name, published", [("llama3-8b", 8.03e9), ("llama3-70b", 70.6e9),
                                             ("llama3-405b", 405.9e9)])
def test_preset_params_match_published(name, published):
    assert abs(PRESETS[name].total_params / published - 1) < 0.005


def test_kv_bytes_per_token():
    # llama3-70b: 2 (K and V) x 8 kv heads x 128 head_dim x 2 bytes x 80 layers
    assert get_model("llama3-70b").kv_bytes_per_token == 2 * 8 * 128 * 2 * 80 == 327_680


def test_head_dim_is_explicit():
    assert TINY.head_dim != TINY.hidden // TINY.n_heads


def test_unknown_model():
    with pytest.raises(ConfigError, match="choose one of"):
        get_model("gpt-5")


@functools.cache
def built(cfg):
    """(graphdef, weights) of a model with random weights: built once per config (eager init is slow on CPU)."""
    return nnx.split(tf.Transformer(cfg, nnx.Rngs(0)))


def check_decode_continues_prefill(cfg, logits_atol):
    """Prefill of P tokens then one decode step equals a prefill of P + 1 tokens, logits and cache."""
    graphdef, weights = built(cfg)
    tokens = jnp.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [5, 4, 3, 2, 1, 9, 8, 7, 6, 5]])
    prefill = jax.jit(lambda w, t: tf.prefill(w, t, graphdef=graphdef, capacity=16))
    _, cache = prefill(weights, tokens[:, :-1])
    want, want_cache = prefill(weights, tokens)
    got, got_cache = jax.jit(lambda w, c, t, p: tf.decode(w, c, t, p, graphdef=graphdef))(
        weights, cache, tokens[:, -1], jnp.array([9, 9]))
    np.testing.assert_allclose(got, want, atol=logits_atol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), got_cache, want_cache)


@pytest.mark.parametrize("scan", [True, False])
def test_decode_continues_prefill(monkeypatch, scan):
    """Query blocks of 4 exercise the causal block skipping."""
    monkeypatch.setattr(attention, "PREFILL_QUERY_BLOCK", 4)
    check_decode_continues_prefill(dataclasses.replace(TINY, dtype="float32", scan_layers=scan), 1e-4)


@pytest.mark.parametrize("cfg", [MOE, MLA, WINDOWED, CHUNKED, HYBRID, SPARSE], ids=lambda c: c.name)
def test_decode_continues_prefill_every_feature(monkeypatch, cfg):
    """MoE dispatch (no token dropped: capacity for every assignment), MLA's absorbed decode against its expanded
    prefill, ring-buffer windows with sinks, chunks of 4 (the decoded position 9 in the chunk of 8-11, the
    prefill of 10 folding two whole chunks and a partial one), and Gated DeltaNet's recurrent decode against its
    chunked prefill (chunks of 4: two whole and a padded one; the state and convolution inputs in the cache), and
    sparse attention's decode over the 4 rows it gathers against its prefill's mask of each query's 4 best keys,
    all give the logits of a longer prefill."""
    monkeypatch.setattr(attention, "PREFILL_QUERY_BLOCK", 4)
    monkeypatch.setattr(linear_attention, "CHUNK", 4)
    check_decode_continues_prefill(dataclasses.replace(cfg, dtype="float32", capacity_factor=float(cfg.n_experts)),
                                   2e-4)


@pytest.mark.parametrize("cfg", [MLA, dataclasses.replace(WINDOWED, window_pattern=(8, 0)),
                                 dataclasses.replace(CHUNKED, window_pattern=(8, 8, 8, 0))], ids=lambda c: c.name)
def test_context_parallel_equals_unsharded(monkeypatch, cfg):
    """Run (not just compiled) on 8 emulated devices under `sp`: the prompt striped over them, each device's
    cache holding every 8th position (MLA's latent gathered in prefill), a window of 8 as a striped ring, MoE
    groups per stripe. Three decode steps after the prefill (writes landing on three devices) give the
    logits of one longer prefill."""
    monkeypatch.setattr(attention, "PREFILL_QUERY_BLOCK", 8)  # a device's 2 queries in two blocks
    cfg = dataclasses.replace(cfg, dtype="float32", capacity_factor=float(cfg.n_experts or 1))
    graphdef, weights = built(cfg)
    tokens = jnp.array(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 19)))
    prefill = functools.partial(tf.prefill, graphdef=graphdef, capacity=32)
    want, _ = jax.jit(prefill)(weights, tokens)
    strategy = get_strategy("sp")
    mesh = virtual_mesh(get_system("h100x8"), strategy)

    def put(x):
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))

    with translator(mesh, strategy):
        _, cache = jax.jit(prefill)(put(weights), put(tokens[:, :16]))
        step = jax.jit(functools.partial(tf.decode, graphdef=graphdef))
        for p in (16, 17, 18):
            got, cache = step(put(weights), cache, put(tokens[:, p]), put(jnp.array([p, p])))
    np.testing.assert_allclose(got, want, atol=2e-4)
