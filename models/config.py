"""Model configurations: one frozen dataclass, presets as constants, parameter and KV-cache arithmetic.

Figures for the presets come from the models' published config.json files (../shared/reference/models.md).
Features are switched by fields, never by a model's name: `n_experts > 0` (mixture of experts), `kv_lora_rank > 0`
(multi-head latent attention), `window_pattern` (sliding-window layers), `attn_sinks`.
"""

import dataclasses
import os
from dataclasses import dataclass, field

import jax.numpy as jnp

from base.inputs import ConfigError, is_int, is_number


@dataclass(frozen=True)
class Format:
    """How a stored dtype holds its values: the element type, and block scales (with zero points) along a matmul
    weight's contracted axis, applied inside the matmul."""

    element: object  # jnp dtype of the values
    block: int = 0  # values per block scale (0: none, or per-channel/128x128 scales too small to count)
    scale: object = None  # jnp dtype of the block scales
    zero: object = None  # jnp dtype of per-block zero points (asymmetric int4)
    w4a4: bool = False  # activations quantized to the element type too (NVFP4 on chips with FP4 tensor cores)

    @property
    def bits(self) -> float:
        """Stored bits per value, block scales and zero points included."""
        extra = sum(dtype_bits(d) for d in (self.scale, self.zero) if d is not None)
        return dtype_bits(self.element) + (extra / self.block if self.block else 0)


def dtype_bits(dtype) -> int:
    """Bits a value of a jnp dtype takes in HBM (numpy keeps 4-bit types in a byte each; the chip packs two)."""
    dtype = jnp.dtype(dtype)
    return 4 if dtype in (jnp.float4_e2m1fn, jnp.int4, jnp.uint4) else 8 * dtype.itemsize

INT4_GROUP = 128  # AWQ and GPTQ's usual group size; a checkpoint's own is read from its file (ModelConfig.int4_group)
# Stored dtypes a tensor group may use (sources: OCP MX spec for MXFP4; NVIDIA's NVFP4 blog and ModelOpt; AutoAWQ and
# GPTQ checkpoint layouts for int4):
# - mxfp4: 4-bit e2m1 values plus one 8-bit power-of-two scale (e8m0) per 32 values: 4.25 bits;
# - nvfp4: e2m1 values plus one e4m3 scale per 16 values (and a per-tensor f32 scale, negligible): 4.5 bits;
# - int4: 4-bit integers plus one 16-bit scale and one 4-bit zero point per group of 128 (W4A16): 4.16 bits.
FORMATS = {"bfloat16": Format(jnp.bfloat16), "float32": Format(jnp.float32), "float8": Format(jnp.float8_e4m3fn),
           "int8": Format(jnp.int8), "mxfp4": Format(jnp.float4_e2m1fn, 32, jnp.float8_e8m0fnu),
           "nvfp4": Format(jnp.float4_e2m1fn, 16, jnp.float8_e4m3fn),
           "int4": Format(jnp.int4, INT4_GROUP, jnp.bfloat16, jnp.int4)}
DTYPES = {name: f.element for name, f in FORMATS.items()}
ACT_DTYPES = ("bfloat16", "float32")  # activations, embeddings, norms, router
KV_DTYPES = ("bfloat16", "float32", "float8")
VOCAB_DTYPES = ("bfloat16", "float32", "float8", "int8")  # embedding table and LM head (no block scales)
# The spellings people type (and checkpoints write), each to its canonical name.
ALIASES = {"bf16": "bfloat16", "fp16": "bfloat16", "float16": "bfloat16", "fp32": "float32", "f32": "float32",
           "fp8": "float8", "fp8_e4m3": "float8", "float8_e4m3fn": "float8", "fp4": "nvfp4"}


def canonical_dtype(name: str) -> str:
    """A dtype's canonical name from any spelling in ALIASES (fp16 is priced as bf16: the same 16 bits and peak)."""
    if not isinstance(name, str):
        return name
    key = name.strip().lower()
    return key if key in FORMATS else ALIASES.get(key, name)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    vocab_size: int
    hidden: int  # model dimension D
    n_layers: int
    n_heads: int  # query heads N
    n_kv_heads: int  # key/value heads K (GQA group size N / K); MLA: equal to n_heads
    head_dim: int  # H, explicit: never hidden // n_heads (MLA: qk_nope_head_dim + qk_rope_head_dim)
    ffn: int  # SwiGLU intermediate size F of dense layers (and of each shared expert: `expert_ffn`)
    tie_embeddings: bool = False
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-5
    dtype: str = "bfloat16"  # activations, embedding, LM head, norms, router
    weight_dtype: str | None = None  # attention, dense MLP and shared-expert matmul weights (None: `dtype`)
    attn_dtype: str | None = None  # attention's matmul weights, where a checkpoint keeps them apart (None: weights)
    expert_dtype: str | None = None  # routed-expert weights (None: `weight_dtype`)
    kv_dtype: str | None = None  # KV cache (None: `dtype`)
    vocab_dtype: str | None = None  # embedding table and LM head (None: `dtype`)
    int4_group: int = INT4_GROUP  # values per int4 scale and zero point (a checkpoint's group_size)
    fp4_activations: bool = False  # NVFP4 matmuls quantize activations to FP4 (W4A4, on chips with FP4 tensor cores)
    qkv_bias: bool = False  # biases on the q, k, v and output projections (gpt-oss)
    # --- multi-head latent attention (DeepSeek-V2/V3): on when kv_lora_rank > 0 ---
    q_lora_rank: int = 0  # 0: queries projected directly from the hidden state
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # --- sliding windows: layer i attends over the last window_pattern[i % len] tokens; 0 = full attention ---
    window_pattern: tuple[int, ...] = ()
    attn_sinks: bool = False  # one learned logit per head that takes softmax mass (gpt-oss)
    # --- mixture of experts: on when n_experts > 0 ---
    n_experts: int = 0  # routed experts E
    n_active: int = 0  # experts per token k
    n_shared: int = 0  # shared experts every token passes through, each of size expert_ffn
    expert_ffn: int = 0
    first_dense: int = 0  # the first layers keep a dense MLP of size `ffn`
    router: str = "softmax"  # softmax top-k, or sigmoid scores with normalised top-k weights (DeepSeek-V3)
    expert_bias: bool = False  # biases on expert projections and router (gpt-oss)
    capacity_factor: float = 1.0  # expert slots per expert = ceil(tokens x k / E x factor)
    scan_layers: bool = True  # one compiled layer body per kind of layer under lax.scan, or an unrolled stack
    notes: tuple[str, ...] = field(default=(), compare=False)  # what the config leaves out (shown by `models`)

    def __post_init__(self):
        def fail(msg):
            raise ConfigError(f"{self.name}: {msg}")

        for key in ("dtype", "weight_dtype", "attn_dtype", "expert_dtype", "kv_dtype", "vocab_dtype"):
            object.__setattr__(self, key, canonical_dtype(getattr(self, key)))  # bf16, fp8, fp4, ... as typed
        for key in ("vocab_size", "hidden", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn", "int4_group"):
            value = getattr(self, key)
            if not is_int(value) or value <= 0:
                fail(f"{key} must be a positive integer, got {value!r}")
        for key in ("n_experts", "n_active", "n_shared", "expert_ffn", "first_dense", "q_lora_rank", "kv_lora_rank",
                    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            value = getattr(self, key)
            if not is_int(value) or value < 0:
                fail(f"{key} must be an integer >= 0 (0: the feature is off), got {value!r}")
        for key in ("tie_embeddings", "qkv_bias", "attn_sinks", "expert_bias", "scan_layers", "fp4_activations"):
            if not isinstance(getattr(self, key), bool):
                fail(f"{key} must be true or false, got {getattr(self, key)!r}")
        for key in ("rope_theta", "norm_eps", "capacity_factor"):
            value, positive = getattr(self, key), key != "norm_eps"
            if not is_number(value) or value < 0 or (positive and value == 0):
                fail(f"{key} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
        if not self.is_moe and (self.n_active or self.n_shared or self.expert_ffn or self.first_dense):
            fail("n_active, n_shared, expert_ffn and first_dense describe experts: they need n_experts > 0")
        if not self.is_mla and (self.q_lora_rank or self.qk_nope_head_dim or self.v_head_dim):
            fail("q_lora_rank, qk_nope_head_dim and v_head_dim describe latent attention: they need kv_lora_rank > 0")
        if self.n_heads % self.n_kv_heads:
            fail(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.dtype not in ACT_DTYPES:
            fail(f"dtype {self.dtype!r} is not one of {', '.join(ACT_DTYPES)}")
        for key in ("weight_dtype", "attn_dtype", "expert_dtype"):
            if getattr(self, key) not in (None, *DTYPES):
                fail(f"{key} {getattr(self, key)!r} is not one of {', '.join(DTYPES)}")
        if self.kv_dtype not in (None, *KV_DTYPES):
            fail(f"kv_dtype {self.kv_dtype!r} is not one of {', '.join(KV_DTYPES)}")
        if self.vocab_dtype not in (None, *VOCAB_DTYPES):
            fail(f"vocab_dtype {self.vocab_dtype!r} is not one of {', '.join(VOCAB_DTYPES)}")
        if self.is_mla and (self.qk_rope_head_dim <= 0 or self.qk_nope_head_dim <= 0 or self.v_head_dim <= 0):
            fail("latent attention needs qk_nope_head_dim, qk_rope_head_dim and v_head_dim > 0")
        if self.is_mla and self.head_dim != self.qk_nope_head_dim + self.qk_rope_head_dim:
            fail(f"head_dim must be qk_nope_head_dim + qk_rope_head_dim = "
                 f"{self.qk_nope_head_dim + self.qk_rope_head_dim}, got {self.head_dim}")
        if any(w < 0 for w in self.window_pattern):
            fail(f"window_pattern entries must be >= 0 (0: full attention), got {self.window_pattern}")
        if self.is_moe:
            if not 0 < self.n_active <= self.n_experts or self.expert_ffn <= 0:
                fail(f"experts need 0 < n_active <= n_experts and expert_ffn > 0, got n_active={self.n_active}, "
                     f"n_experts={self.n_experts}, expert_ffn={self.expert_ffn}")
            if self.router not in ("softmax", "sigmoid"):
                fail(f"router {self.router!r} is not softmax or sigmoid")
            if self.capacity_factor > self.n_experts:  # beyond E, one expert could already take every assignment
                fail(f"capacity_factor {self.capacity_factor:g} exceeds n_experts={self.n_experts} (at E, one "
                     "expert's slots hold every assignment); give a factor between 0 and that")
        if not 0 <= self.first_dense <= self.n_layers:
            fail(f"first_dense={self.first_dense} must be within 0..n_layers={self.n_layers}")
        period = self.period
        if self.first_dense % period or (self.n_layers - self.first_dense) % period:
            fail(f"the window pattern (period {period}) must tile the dense ({self.first_dense}) and "
                 f"MoE ({self.n_layers - self.first_dense}) layer runs")

    # --- features ---
    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def period(self) -> int:
        """Layers per repeated unit: the window pattern's length (1 without one)."""
        return max(1, len(self.window_pattern))

    def window(self, layer: int) -> int:
        return self.window_pattern[layer % self.period] if self.window_pattern else 0

    def layer_is_moe(self, layer: int) -> bool:
        return self.is_moe and layer >= self.first_dense

    @property
    def attention_kind(self) -> str:
        kind = "MLA" if self.is_mla else ("MHA" if self.n_kv_heads == self.n_heads else "GQA")
        windows = sorted({w for w in self.window_pattern if w})
        if windows:
            kind += f", window {'/'.join(map(str, windows))} on {sum(1 for w in self.window_pattern if w)}" \
                    f"/{self.period} layers"
        return kind + (", sinks" if self.attn_sinks else "")

    # --- dtypes ---
    @property
    def jnp_dtype(self):
        return DTYPES[self.dtype]

    @property
    def weights(self) -> str:
        return self.weight_dtype or self.dtype

    @property
    def attn_weights(self) -> str:
        return self.attn_dtype or self.weights

    @property
    def experts(self) -> str:
        return self.expert_dtype or self.weights

    def format(self, dtype: str) -> Format:
        """A stored dtype's layout, with this model's int4 group size and, for NVFP4, its activations' precision."""
        fmt = FORMATS[dtype]
        if dtype == "int4":
            return dataclasses.replace(fmt, block=self.int4_group)
        return dataclasses.replace(fmt, w4a4=self.fp4_activations) if dtype == "nvfp4" else fmt

    def bits(self, dtype: str) -> float:
        return self.format(dtype).bits

    @property
    def kv(self) -> str:
        return self.kv_dtype or self.dtype

    @property
    def vocab(self) -> str:
        return self.vocab_dtype or self.dtype

    @property
    def bytes_per_value(self) -> int:
        """Activations."""
        return int(self.bits(self.dtype)) // 8

    # --- parameter counts (the oracle for the presets, and the analytic FLOP/byte estimates) ---
    @property
    def attn_params_per_layer(self) -> int:
        d, n = self.hidden, self.n_heads
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (d * self.q_lora_rank + self.q_lora_rank * n * qk) if self.q_lora_rank else d * n * qk
            kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * n * (
                self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + n * self.v_head_dim * d
        q_and_o = 2 * d * n * self.head_dim
        k_and_v = 2 * d * self.n_kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def attn_small_params_per_layer(self) -> int:
        """Norms of the latent projections, biases and sinks: vectors, not matmul weights."""
        small = 0
        if self.is_mla:
            small += self.q_lora_rank + self.kv_lora_rank
        if self.qkv_bias:
            small += (self.n_heads + 2 * self.n_kv_heads) * self.head_dim + self.hidden
        if self.attn_sinks:
            small += self.n_heads
        return small

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden * self.ffn  # gate, up, down

    @property
    def expert_params(self) -> int:
        """One routed expert's weights (and biases)."""
        bias = 2 * self.expert_ffn + self.hidden if self.expert_bias else 0  # gate_up and down biases
        return 3 * self.hidden * self.expert_ffn + bias

    @property
    def router_params(self) -> int:
        return self.hidden * self.n_experts + (self.n_experts if self.expert_bias or self.router == "sigmoid" else 0)

    @property
    def shared_params(self) -> int:
        return self.n_shared * 3 * self.hidden * self.expert_ffn

    def mlp_params(self, layer: int, active: bool = False) -> int:
        if not self.layer_is_moe(layer):
            return self.dense_mlp_params
        routed = self.n_active if active else self.n_experts
        return routed * self.expert_params + self.shared_params + self.router_params

    def layer_params(self, layer: int, active: bool = False) -> int:
        norms = 2 * self.hidden
        return self.attn_params_per_layer + self.attn_small_params_per_layer + self.mlp_params(layer, active) + norms

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden

    @property
    def head_params(self) -> int:
        """LM head weights that exist apart from the embedding (0 when tied)."""
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden

    @property
    def total_params(self) -> int:
        layers = sum(self.layer_params(i) for i in range(self.n_layers))
        return self.embed_params + layers + self.hidden + self.head_params

    @property
    def active_params(self) -> int:
        """Parameters one token multiplies by: inactive routed experts and the embedding table (a lookup) excluded.
        The LM head counts even when tied. (Publishers differ: Qwen and Mistral also count the embedding.)"""
        layers = sum(self.layer_params(i, active=True) for i in range(self.n_layers))
        return layers + self.hidden + self.vocab_size * self.hidden

    @property
    def active_params_with_embedding(self) -> int:
        """The convention of Qwen's and Mistral's model cards: the embedding table counted as active too."""
        return self.active_params + (self.embed_params if not self.tie_embeddings else 0)

    def with_dtypes(self, weights: str | None = None, kv_cache: str | None = None,
                    activations: str | None = None) -> "ModelConfig":
        """The same model with its stored dtypes overridden (`--weights`, `--kv-cache`, `--dtype`): weights set
        every matmul weight, routed experts, the LM head and the embedding table tied or not (MXFP4: the layers'
        weights only)."""
        changes = {}
        weights, kv_cache, activations = (canonical_dtype(d) if d else d for d in (weights, kv_cache, activations))
        if weights:
            changes.update(weight_dtype=weights, attn_dtype=weights, expert_dtype=weights,
                           vocab_dtype=weights if weights in VOCAB_DTYPES else self.vocab_dtype)
        if kv_cache:
            changes["kv_dtype"] = kv_cache
        if activations:
            changes["dtype"] = activations
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def routed_expert_params(self) -> int:
        return sum(self.n_experts * self.expert_params for i in range(self.n_layers) if self.layer_is_moe(i))

    @property
    def weight_bytes(self) -> float:
        """Stored bytes: routed experts in `experts`, attention's matmul weights in `attn_weights`, other matmul
        weights in `weights`, the embedding table and LM head in `vocab`, the rest in `dtype`."""
        routed = self.routed_expert_params
        attn = self.n_layers * self.attn_params_per_layer
        matmul = sum(self.shared_params if self.layer_is_moe(i) else self.dense_mlp_params
                     for i in range(self.n_layers))
        vocab = self.embed_params + self.head_params
        rest = self.total_params - routed - attn - matmul - vocab
        bits = (routed * self.bits(self.experts) + attn * self.bits(self.attn_weights)
                + matmul * self.bits(self.weights) + vocab * self.bits(self.vocab) + rest * self.bits(self.dtype))
        return bits / 8

    def attn_pair_flops(self, decode: bool) -> int:
        """Attention FLOPs per layer for one (query, key) pair: scores and the weighted sum of values. MLA decode
        runs in the absorbed form, over the latent (kv_lora_rank + rope dims for scores, kv_lora_rank for values)."""
        if self.is_mla and decode:
            return 2 * self.n_heads * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        if self.is_mla:
            return 2 * self.n_heads * (self.head_dim + self.v_head_dim)
        return 4 * self.n_heads * self.head_dim

    @property
    def latent_down_params(self) -> int:
        """MLA's down-projections into the latents, per layer: no head axis to split over a tensor-parallel group,
        so every device of the group holds and computes them whole (as it does the router)."""
        return self.hidden * (self.q_lora_rank + self.kv_lora_rank + self.qk_rope_head_dim) if self.is_mla else 0

    @property
    def replicated_weight_bytes(self) -> float:
        """Bytes of the weights no tensor-parallel group splits, in their stored dtypes: the latent
        down-projections (`weights`) and the routers (`dtype`)."""
        routers = sum(self.hidden * self.n_experts for i in range(self.n_layers) if self.layer_is_moe(i))
        latents = self.n_layers * self.latent_down_params
        return (latents * self.bits(self.attn_weights) + routers * self.bits(self.dtype)) / 8

    def kv_copies(self, shards: int) -> int:
        """Copies of each kv head when a group of `shards` devices splits the heads and there are fewer kv heads
        than devices: each is repeated so that every device holds the one its query heads read, as serving
        engines do."""
        if self.is_mla or shards <= self.n_kv_heads or shards % self.n_kv_heads:
            return 1
        return shards // self.n_kv_heads

    # --- KV cache ---
    @property
    def kv_values_per_layer(self) -> int:
        """Cached values per token and layer: K and V per kv head, or MLA's latent plus its rotary key."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.n_kv_heads * self.head_dim

    @property
    def kv_bytes_per_value(self) -> float:
        return self.bits(self.kv) / 8

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes per token of context, over the full-attention layers (windowed layers stop growing: see
        kv_window_bytes_per_sequence)."""
        full = sum(1 for i in range(self.n_layers) if not self.window(i))
        return self.kv_values_per_layer * full * self.kv_bytes_per_value

    def kv_bytes(self, context: int) -> float:
        """Bytes of one sequence's cache at `context` tokens."""
        per_layer = self.kv_values_per_layer * self.kv_bytes_per_value
        return sum(per_layer * (min(self.window(i), context) if self.window(i) else context)
                   for i in range(self.n_layers))

    @property
    def kv_window_bytes_per_sequence(self) -> float:
        """The cap of the windowed layers' cache, per sequence."""
        per_layer = self.kv_values_per_layer * self.kv_bytes_per_value
        return sum(per_layer * self.window(i) for i in range(self.n_layers) if self.window(i))


# Llama 3.1 family: meta-llama/llama-models sku_list.py and the config.json files.
LLAMA3_8B = ModelConfig("llama3-8b", vocab_size=128256, hidden=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                        head_dim=128, ffn=14336)
LLAMA3_70B = ModelConfig("llama3-70b", vocab_size=128256, hidden=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                         head_dim=128, ffn=28672)
LLAMA3_405B = ModelConfig("llama3-405b", vocab_size=128256, hidden=16384, n_layers=126, n_heads=128, n_kv_heads=8,
                          head_dim=128, ffn=53248)
# mistralai/Mixtral-8x7B-v0.1 config.json
MIXTRAL_8X7B = ModelConfig("mixtral-8x7b", vocab_size=32000, hidden=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                           head_dim=128, ffn=14336, rope_theta=1e6, n_experts=8, n_active=2, expert_ffn=14336)
# Qwen/Qwen3-30B-A3B and Qwen3-235B-A22B config.json (norm_topk_prob true; q/k RMSNorms of 128 values ignored)
QWEN3_30B_A3B = ModelConfig("qwen3-30b-a3b", vocab_size=151936, hidden=2048, n_layers=48, n_heads=32, n_kv_heads=4,
                            head_dim=128, ffn=6144, rope_theta=1e6, norm_eps=1e-6, n_experts=128, n_active=8,
                            expert_ffn=768)
QWEN3_235B_A22B = ModelConfig("qwen3-235b-a22b", vocab_size=151936, hidden=4096, n_layers=94, n_heads=64,
                              n_kv_heads=4, head_dim=128, ffn=12288, rope_theta=1e6, norm_eps=1e-6, n_experts=128,
                              n_active=8, expert_ffn=1536)
# openai/gpt-oss-20b and gpt-oss-120b config.json: even layers a 128-token window, odd layers full; learned sinks;
# MoE weights in MXFP4, the rest bf16 (model card).
_GPT_OSS = dict(vocab_size=201088, hidden=2880, n_heads=64, n_kv_heads=8, head_dim=64, ffn=2880, rope_theta=150_000.0,
                qkv_bias=True, window_pattern=(128, 0), attn_sinks=True, n_active=4, expert_ffn=2880,
                expert_bias=True, expert_dtype="mxfp4",
                notes=("YaRN rope scaling and the SwiGLU clamp do not change the cost",))
GPT_OSS_20B = ModelConfig("gpt-oss-20b", n_layers=24, n_experts=32, **_GPT_OSS)
GPT_OSS_120B = ModelConfig("gpt-oss-120b", n_layers=36, n_experts=128, **_GPT_OSS)
# deepseek-ai/DeepSeek-V3 inference/configs/config_671B.json; moonshotai/Kimi-K2-Instruct config.json. Weights fp8
# e4m3 (128x128 block scales, 1/16384 of the bytes, not modelled); embedding, LM head, norms and router bf16.
_DEEPSEEK = dict(hidden=7168, n_layers=61, n_kv_heads=0, head_dim=192, ffn=18432, rope_theta=10_000.0, norm_eps=1e-6,
                 q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                 n_active=8, n_shared=1, expert_ffn=2048, router="sigmoid", weight_dtype="float8",
                 notes=("the multi-token-prediction module (14B) is not part of the served model",
                        "group-limited routing (n_group, topk_group) picks the same number of experts"))
DEEPSEEK_V3 = ModelConfig("deepseek-v3", vocab_size=129280, n_heads=128, n_experts=256, first_dense=3,
                          **{**_DEEPSEEK, "n_kv_heads": 128})
KIMI_K2 = ModelConfig("kimi-k2", vocab_size=163840, n_heads=64, n_experts=384, first_dense=1,
                      **{**_DEEPSEEK, "rope_theta": 50_000.0, "n_kv_heads": 64})
# A tiny config for tests: head_dim deliberately not hidden // n_heads.
TINY = ModelConfig("tiny", vocab_size=512, hidden=128, n_layers=4, n_heads=8, n_kv_heads=8, head_dim=32, ffn=256)

PRESETS = {m.name: m for m in (LLAMA3_8B, LLAMA3_70B, LLAMA3_405B, MIXTRAL_8X7B, QWEN3_30B_A3B, QWEN3_235B_A22B,
                               GPT_OSS_20B, GPT_OSS_120B, DEEPSEEK_V3, KIMI_K2, TINY)}


def get_model(name) -> ModelConfig:
    """A preset by name, or a model file (a path, or a pathlib.Path): a .toml in the project's format or a Hugging
    Face config.json."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise ConfigError(f"model must be a preset's name or a model file's path, got {name!r} (see `tracer models`)")
    if name.endswith((".toml", ".json")) or "/" in name or os.sep in name:
        from models.files import load_model_file

        return load_model_file(name)
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(PRESETS)}, or a model file "
                          "(.toml or a Hugging Face config.json) (see `tracer models`)")
    return PRESETS[name]
