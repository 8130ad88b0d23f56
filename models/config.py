"""Model configurations: one frozen dataclass, presets as constants, parameter and KV-cache arithmetic.

Figures for the presets come from the models' published config.json files (../shared/reference/models.md).
"""

from dataclasses import dataclass

import jax.numpy as jnp

from tracer.errors import ConfigError

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    vocab_size: int
    hidden: int  # model dimension D
    n_layers: int
    n_heads: int  # query heads N
    n_kv_heads: int  # key/value heads K (GQA group size N / K)
    head_dim: int  # H, explicit: never hidden // n_heads
    ffn: int  # SwiGLU intermediate size F
    tie_embeddings: bool = False
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-5
    dtype: str = "bfloat16"  # weights, activations and KV cache
    scan_layers: bool = True  # one compiled layer body under lax.scan (fast compiles) or an unrolled stack

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"{self.name}: n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"{self.name}: dtype {self.dtype!r} is not one of {sorted(DTYPES)}")

    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    @property
    def bytes_per_value(self) -> int:
        return jnp.dtype(self.jnp_dtype).itemsize

    # --- parameter counts (the oracle for the presets, and the analytic FLOP/byte estimates) ---
    @property
    def attn_params_per_layer(self) -> int:
        q_and_o = 2 * self.hidden * self.n_heads * self.head_dim
        k_and_v = 2 * self.hidden * self.n_kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def mlp_params_per_layer(self) -> int:
        return 3 * self.hidden * self.ffn  # gate, up, down

    @property
    def layer_params(self) -> int:
        return self.attn_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden  # + two RMSNorm scales

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden

    @property
    def head_params(self) -> int:
        """LM head weights that exist apart from the embedding (0 when tied)."""
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden

    @property
    def total_params(self) -> int:
        return self.embed_params + self.n_layers * self.layer_params + self.hidden + self.head_params

    @property
    def weight_bytes(self) -> int:
        return self.total_params * self.bytes_per_value

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer: 2 x n_kv_heads x head_dim values per layer."""
        return 2 * self.n_kv_heads * self.head_dim * self.n_layers * self.bytes_per_value


# Llama 3.1 family: meta-llama/llama-models sku_list.py and the config.json files.
LLAMA3_8B = ModelConfig("llama3-8b", vocab_size=128256, hidden=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                        head_dim=128, ffn=14336)
LLAMA3_70B = ModelConfig("llama3-70b", vocab_size=128256, hidden=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                         head_dim=128, ffn=28672)
LLAMA3_405B = ModelConfig("llama3-405b", vocab_size=128256, hidden=16384, n_layers=126, n_heads=128, n_kv_heads=8,
                          head_dim=128, ffn=53248)
# A tiny config for tests: head_dim deliberately not hidden // n_heads.
TINY = ModelConfig("tiny", vocab_size=512, hidden=128, n_layers=4, n_heads=8, n_kv_heads=8, head_dim=32, ffn=256)

PRESETS = {m.name: m for m in (LLAMA3_8B, LLAMA3_70B, LLAMA3_405B, TINY)}


def get_model(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(PRESETS)} (see `tracer models`)")
    return PRESETS[name]

