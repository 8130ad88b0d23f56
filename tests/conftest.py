import dataclasses

import pytest

import tracer.compile  # noqa: F401  (sets the emulated CPU device count before jax starts)
from models.presets import TINY


@pytest.fixture(scope="session")
def small():
    """Large enough that matmuls dominate elementwise work; every sharded axis divides 8."""
    return dataclasses.replace(TINY, name="small", vocab_size=1024, hidden=512, n_layers=2, n_heads=8, n_kv_heads=8,
                               head_dim=64, ffn=2048)


# Small variants of each feature, used unsharded (numerics, f32) and compiled on 8 devices (FLOPs and bytes).
MOE = dataclasses.replace(TINY, name="tiny-moe", vocab_size=1024, hidden=512, n_layers=3, n_heads=8, n_kv_heads=8,
                          head_dim=64, ffn=1024, n_experts=16, n_active=2, expert_ffn=1024, n_shared=1, first_dense=1)
MLA = dataclasses.replace(MOE, name="tiny-mla", n_kv_heads=8, head_dim=48, q_lora_rank=128, kv_lora_rank=64,
                          qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, router="sigmoid")
# DeepSeek-V3.2's sparse attention: an indexer of 2 heads picks each query's 4 best cached tokens (its work a pair
# a tenth of attention's, as in V3.2 where it is a fifth: the 256-token prompt fits one 1024-query block, whose
# whole square the program scores, twice the causal pairs the estimate counts).
SPARSE = dataclasses.replace(MLA, name="tiny-sparse", index_heads=2, index_dim=32, index_topk=4)
WINDOWED = dataclasses.replace(MOE, name="tiny-windowed", n_layers=4, n_kv_heads=4, first_dense=0, n_shared=0,
                               window_pattern=(4, 0), attn_sinks=True, qkv_bias=True, expert_bias=True)
# Llama 4's layout: chunked attention on 3 layers of 4, MoE (a routed expert and a shared one) on every second layer.
CHUNKED = dataclasses.replace(MOE, name="tiny-chunked", n_layers=4, n_kv_heads=4, first_dense=0,
                              window_pattern=(4, 4, 4, 0), chunked=True, moe_every=2, router="sigmoid")
# Qwen3-Next's layout: Gated DeltaNet on 3 layers of 4 (8 key heads, 16 value heads), gated full attention on the 4th,
# a gated shared expert.
HYBRID = dataclasses.replace(MOE, name="tiny-hybrid", n_layers=4, n_kv_heads=2, first_dense=0, attn_gate=True,
                             shared_gate=True, linear_pattern=(1, 1, 1, 0), linear_k_heads=8, linear_v_heads=16,
                             linear_k_dim=32, linear_v_dim=32, linear_conv=4)


SMALL_TOML = """name = "sweep-small"
vocab_size = 1024
hidden = 512
n_layers = 2
n_heads = 8
n_kv_heads = 8
head_dim = 64
ffn = 2048
"""


@pytest.fixture
def model_file(tmp_path):
    """The `small` model as a model file (sweep points name their models)."""
    path = tmp_path / "sweep-small.toml"
    path.write_text(SMALL_TOML)
    return str(path)


@pytest.fixture
def counted(monkeypatch):
    """The (batch, context, phase) of every step compiled while a test runs."""
    import tracer.api

    calls = []
    real = tracer.compile.compile_steps

    def counting(cfg, system, strategy, work, phases=("prefill", "decode"), compiler="cpu"):
        calls.extend((work.batch, work.context, p) for p in phases)
        return real(cfg, system, strategy, work, phases=phases, compiler=compiler)

    monkeypatch.setattr(tracer.compile, "compile_steps", counting)
    monkeypatch.setattr(tracer.api, "compile_steps", counting)
    return calls
