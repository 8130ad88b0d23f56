"""A model's configuration: one frozen dataclass, with its parameter and KV-cache arithmetic (presets in
models.presets, stored formats in models.formats).
Features are switched by fields, never by a model's name: `n_experts > 0` (mixture of experts), `kv_lora_rank > 0`
(multi-head latent attention), `window_pattern` (sliding-window layers, or fixed chunks with `chunked`),
`moe_every` (MoE layers interleaved with dense ones), `attn_sinks`.
"""

import dataclasses
import math
from dataclasses import dataclass, field

from base.inputs import ConfigError, is_int, is_number
from models.cache_math import CacheMath
from models.formats import ACT_DTYPES, DTYPES, FORMATS, INT4_GROUP, KV_DTYPES, VOCAB_DTYPES, Format, canonical_dtype

LINEAR_DIMS = ("linear_k_heads", "linear_v_heads", "linear_k_dim", "linear_v_dim", "linear_conv")


@dataclass(frozen=True)
class ModelConfig(CacheMath):
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
    int4_zero_points: bool = True  # int4 groups store a zero point (AWQ, GPTQ); false: symmetric, a scale alone
    fp4_activations: bool = False  # NVFP4 matmuls quantize activations to FP4 (W4A4, on chips with FP4 tensor cores)
    qkv_bias: bool = False  # biases on the q, k, v and output projections (gpt-oss)
    # --- multi-head latent attention (DeepSeek-V2/V3): on when kv_lora_rank > 0 ---
    q_lora_rank: int = 0  # 0: queries projected directly from the hidden state
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # --- DeepSeek sparse attention (DeepSeek-V3.2): each query attends to the index_topk tokens an indexer picks ---
    index_heads: int = 0
    index_dim: int = 0  # index key values per token and layer (stored fp8, a float32 scale per 128)
    index_topk: int = 0  # 0: dense attention
    # --- sliding windows: layer i attends over the last window_pattern[i % len] tokens; 0 = full attention ---
    window_pattern: tuple[int, ...] = ()
    chunked: bool = False  # the windows are fixed chunks: a token attends to its own chunk's earlier tokens (Llama 4)
    attn_sinks: bool = False  # one learned logit per head that takes softmax mass (gpt-oss)
    attn_gate: bool = False  # full attention's output times a sigmoid gate projected from the input (Qwen3-Next)
    # --- linear attention (Gated DeltaNet): layer i is linear when linear_pattern[i % len] is 1 ---
    linear_pattern: tuple[int, ...] = ()
    linear_k_heads: int = 0  # query/key heads, each serving linear_v_heads / linear_k_heads value heads
    linear_v_heads: int = 0
    linear_k_dim: int = 0  # per head
    linear_v_dim: int = 0
    linear_conv: int = 0  # the causal depthwise convolution's kernel over q, k and v
    state_dtype: str = "float32"  # the recurrent state a sequence keeps (the convolution's: `dtype`)
    # --- mixture of experts: on when n_experts > 0 ---
    n_experts: int = 0  # routed experts E
    n_active: int = 0  # experts per token k
    n_shared: int = 0  # shared experts every token passes through, each of size expert_ffn
    expert_ffn: int = 0
    first_dense: int = 0  # the first layers keep a dense MLP of size `ffn`
    moe_every: int = 1  # past first_dense, layer i is MoE when (i + 1) % moe_every == 0, dense (`ffn`) otherwise
    router: str = "softmax"  # softmax top-k, or sigmoid scores with normalised top-k weights (DeepSeek-V3)
    expert_bias: bool = False  # biases on expert projections and router (gpt-oss)
    shared_gate: bool = False  # the shared experts' output times a sigmoid of one value projected from the input
    capacity_factor: float = 1.0  # expert slots per expert = ceil(tokens x k / E x factor)
    scan_layers: bool = True  # one compiled layer body per kind of layer under lax.scan, or an unrolled stack
    notes: tuple[str, ...] = field(default=(), compare=False)  # what the config leaves out (shown by `models`)

    def __post_init__(self):
        def fail(msg):
            raise ConfigError(f"{self.name}: {msg}")

        for key in ("dtype", "weight_dtype", "attn_dtype", "expert_dtype", "kv_dtype", "vocab_dtype"):
            object.__setattr__(self, key, canonical_dtype(getattr(self, key)))  # bf16, fp8, fp4, ... as typed
        for key in ("vocab_size", "hidden", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn", "int4_group",
                    "moe_every"):
            value = getattr(self, key)
            if not is_int(value) or value <= 0:
                fail(f"{key} must be a positive integer, got {value!r}")
        for key in ("n_experts", "n_active", "n_shared", "expert_ffn", "first_dense", "q_lora_rank", "kv_lora_rank",
                    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_heads", "index_dim", "index_topk",
                    *LINEAR_DIMS):
            value = getattr(self, key)
            if not is_int(value) or value < 0:
                fail(f"{key} must be an integer >= 0 (0: the feature is off), got {value!r}")
        for key in ("tie_embeddings", "qkv_bias", "attn_sinks", "expert_bias", "scan_layers", "fp4_activations",
                    "chunked", "int4_zero_points", "attn_gate", "shared_gate"):
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
        self._check_layout(fail)

    def _check_layout(self, fail):
        if any(p not in (0, 1) for p in self.linear_pattern):
            fail(f"linear_pattern entries must be 0 (softmax attention) or 1 (linear), got {self.linear_pattern}")
        if self.has_linear and (min(getattr(self, k) for k in LINEAR_DIMS) <= 0 or self.is_mla
                                or self.linear_v_heads % self.linear_k_heads):
            fail(f"linear-attention layers need {', '.join(LINEAR_DIMS)} > 0, linear_v_heads a multiple of "
                 "linear_k_heads, and no latent attention")
        if (self.index_topk or self.index_heads or self.index_dim) and not (
                self.index_topk and self.index_heads and self.index_dim and self.is_mla and self.q_lora_rank):
            fail("sparse attention needs index_topk, index_heads and index_dim > 0, on latent attention with "
                 "q_lora_rank > 0 (the indexer's queries come from the compressed query)")
        if self.state_dtype not in ("float32", "bfloat16"):
            fail(f"state_dtype {self.state_dtype!r} is not float32 or bfloat16")
        if self.moe_every > 1 and not self.is_moe:
            fail("moe_every interleaves MoE layers with dense ones: it needs n_experts > 0 (or give moe_every = 1)")
        if self.chunked and not any(self.window_pattern):
            fail("chunked attention needs a window_pattern whose non-zero entries give the chunk size")

    # --- features ---
    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def period(self) -> int:
        """Layers per repeated unit: the least common multiple of the window and linear patterns' lengths and
        moe_every (1 without any)."""
        return math.lcm(max(1, len(self.window_pattern)), max(1, len(self.linear_pattern)), self.moe_every)

    def is_linear(self, layer: int) -> bool:
        return bool(self.linear_pattern) and self.linear_pattern[layer % len(self.linear_pattern)] == 1

    @property
    def has_linear(self) -> bool:
        return any(self.linear_pattern)

    def window(self, layer: int) -> int:
        return self.window_pattern[layer % len(self.window_pattern)] if self.window_pattern else 0

    def layer_is_moe(self, layer: int) -> bool:
        return self.is_moe and layer >= self.first_dense and (layer + 1) % self.moe_every == 0

    @property
    def attention_kind(self) -> str:
        kind = "MLA" if self.is_mla else ("MHA" if self.n_kv_heads == self.n_heads else "GQA")
        windows = sorted({w for w in self.window_pattern if w})
        if windows:
            kind += f", {'chunk' if self.chunked else 'window'} {'/'.join(map(str, windows))} on " \
                    f"{sum(1 for w in self.window_pattern if w)}/{len(self.window_pattern)} layers"
        if self.index_topk:
            kind += f", sparse top {self.index_topk}"
        if self.has_linear:
            kind += f", linear on {sum(self.linear_pattern)}/{len(self.linear_pattern)} layers"
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
            return dataclasses.replace(fmt, block=self.int4_group, zero=fmt.zero if self.int4_zero_points else None)
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
    def attn_params(self, layer: int) -> int:
        """A layer's attention matmul weights (a linear-attention layer's projections, where it is one)."""
        if self.is_linear(layer):
            d, kw, vw, hv = self.hidden, self.linear_key_width, self.linear_value_width, self.linear_v_heads
            return d * (2 * kw + 2 * vw) + d * 2 * hv + vw * d  # q, k, v, output gate z; beta and decay; output
        d, n = self.hidden, self.n_heads
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (d * self.q_lora_rank + self.q_lora_rank * n * qk) if self.q_lora_rank else d * n * qk
            kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * n * (
                self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + n * self.v_head_dim * d + self.index_params
        q_and_o = (3 if self.attn_gate else 2) * d * n * self.head_dim
        k_and_v = 2 * d * self.n_kv_heads * self.head_dim
        return q_and_o + k_and_v

    def attn_small_params(self, layer: int) -> int:
        """Norms of the latent projections, biases and sinks (a linear layer's convolution, decay parameters and
        norm): vectors, not matmul weights."""
        if self.is_linear(layer):
            return self.linear_conv_channels * self.linear_conv + 2 * self.linear_v_heads + self.linear_v_dim
        small = 2 * self.index_dim  # the indexer keys' LayerNorm
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
        return self.n_shared * 3 * self.hidden * self.expert_ffn + (self.hidden if self.shared_gate else 0)

    def mlp_params(self, layer: int, active: bool = False) -> int:
        if not self.layer_is_moe(layer):
            return self.dense_mlp_params
        routed = self.n_active if active else self.n_experts
        return routed * self.expert_params + self.shared_params + self.router_params

    def layer_params(self, layer: int, active: bool = False) -> int:
        norms = 2 * self.hidden
        return self.attn_params(layer) + self.attn_small_params(layer) + self.mlp_params(layer, active) + norms

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
        attn = sum(self.attn_params(i) for i in range(self.n_layers))
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
    def index_params(self) -> int:
        """The sparse-attention indexer's projections, per layer: its queries from the compressed query, its key
        and its per-head weights from the hidden state."""
        h, k = self.index_heads, self.index_dim
        return self.q_lora_rank * h * k + self.hidden * k + self.hidden * h if self.index_topk else 0

    @property
    def latent_down_params(self) -> int:
        """MLA's down-projections into the latents (and the sparse-attention indexer), per layer: no head axis to
        split over a tensor-parallel group, so every device of the group holds and computes them whole (as it does
        the router)."""
        if not self.is_mla:
            return 0
        return self.hidden * (self.q_lora_rank + self.kv_lora_rank + self.qk_rope_head_dim) + self.index_params

    @property
    def replicated_weight_bytes(self) -> float:
        """Bytes of the weights no tensor-parallel group splits, in their stored dtypes: the latent
        down-projections (`weights`) and the routers (`dtype`)."""
        routers = sum(self.hidden * self.n_experts for i in range(self.n_layers) if self.layer_is_moe(i))
        latents = self.n_layers * self.latent_down_params
        return (latents * self.bits(self.attn_weights) + routers * self.bits(self.dtype)) / 8

# Llama 3.1 family: meta-llama/llama-models sku_list.py and the config.json files.
