"""Hugging Face config.json files: dispatched on `architectures[0]` (ARCHITECTURES) and mapped onto ModelConfig's
fields. Anything that would change the cost but has no field here (an unusual layer layout, an unknown
quantization) is refused with a ConfigError rather than priced wrongly."""

from pathlib import Path

from base.inputs import ConfigError
from models.config import ModelConfig
from models.file_checks import EXAMPLE, build
from models.hf_reader import HF, MISSING, window_pattern
from models.hf_recent import gated_deltanet, llama4, minimax_m2, qwen3_moe
from models.quantization import module_names, read_quantization

_COMMON = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_LINEAR_KEYS = ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
                "linear_conv_kernel_dim", ("layer_types", "full_attention_interval"))
# Keys each architecture needs beyond _COMMON; a tuple inside is a set of alternatives.
_REQUIRED = {
    "LlamaForCausalLM": (),
    "Qwen2ForCausalLM": (),
    "Qwen3ForCausalLM": (),
    "MistralForCausalLM": (),
    "Phi3ForCausalLM": (),
    "Gemma2ForCausalLM": ("sliding_window",),
    "Gemma3ForCausalLM": ("sliding_window",),
    "MixtralForCausalLM": ("num_local_experts", "num_experts_per_tok"),
    "Qwen3MoeForCausalLM": ("num_experts", "num_experts_per_tok", "moe_intermediate_size"),
    "DeepseekV3ForCausalLM": ("n_routed_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size",
                              "first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                              "qk_rope_head_dim", "v_head_dim"),
    "DeepseekV2ForCausalLM": ("n_routed_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size",
                              "first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                              "qk_rope_head_dim", "v_head_dim"),
    "DeepseekV32ForCausalLM": ("n_routed_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size",
                              "first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                              "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim", "index_topk"),
    "Glm4MoeForCausalLM": ("n_routed_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size",
                           "first_k_dense_replace"),
    "GptOssForCausalLM": ("num_local_experts", ("num_experts_per_tok", "experts_per_token"), "layer_types"),
    "Llama4ForCausalLM": ("num_local_experts", "num_experts_per_tok", "intermediate_size_mlp"),
    "MiniMaxM2ForCausalLM": ("num_local_experts", "num_experts_per_tok"),
    "Qwen3NextForCausalLM": _LINEAR_KEYS + ("num_experts", "num_experts_per_tok", "moe_intermediate_size"),
    "Qwen3_5ForCausalLM": _LINEAR_KEYS,
    "Qwen3_5MoeForCausalLM": _LINEAR_KEYS + ("num_experts", "num_experts_per_tok", "moe_intermediate_size"),
}
# Keys a published config.json may leave out because transformers' config class supplies them (Gemma3TextConfig's
# defaults; google/gemma-3-27b-it's text_config gives neither vocab_size nor rope_theta).
_DEFAULTS = {"Gemma3ForCausalLM": {"vocab_size": 262208, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
                                   "sliding_window_pattern": 6},
             "Llama4ForCausalLM": {"attention_chunk_size": 8192, "interleave_moe_layer_step": 1,
                                   "no_rope_layer_interval": 4}}  # Llama4TextConfig's
# Architectures with a MoE on every layer whose config class has no intermediate_size (transformers'
# Qwen3_5MoeTextConfig, so Qwen3.5's MoE config.json files give none): ffn, which no layer then uses, takes the key
# named here, the experts' width.
_FFN_FROM = {"Qwen3_5MoeForCausalLM": "moe_intermediate_size"}
# Multimodal wrappers whose text model is one of the architectures here: (its config's key, the architecture).
_WRAPPERS = {"Gemma3ForConditionalGeneration": ("text_config", "Gemma3ForCausalLM"),
             "Llama4ForConditionalGeneration": ("text_config", "Llama4ForCausalLM"),
             "KimiK25ForConditionalGeneration": ("text_config", "DeepseekV3ForCausalLM"),
             "Qwen3_5ForConditionalGeneration": ("text_config", "Qwen3_5ForCausalLM"),
             "Qwen3_5MoeForConditionalGeneration": ("text_config", "Qwen3_5MoeForCausalLM")}
_NULLABLE = {"q_lora_rank", "n_shared_experts"}  # null means none (DeepSeek-V2-Lite has no query compression)


def from_hf(cfg, where: str, name: str, path: Path) -> ModelConfig:
    supported = ", ".join((*_REQUIRED, *_WRAPPERS))
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: a Hugging Face config.json holds a JSON object, not a {type(cfg).__name__}; "
                          "give the model's config.json")
    archs = cfg.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise ConfigError(f"{where}: no architectures list, so the model type is unknown; add e.g. "
                          f'"architectures": ["LlamaForCausalLM"] (supported: {supported})')
    arch, outer, wrapped = archs[0], cfg, ()
    if arch in _WRAPPERS:
        key, arch = _WRAPPERS[arch]
        if not isinstance(cfg.get(key), dict):
            raise ConfigError(f"{where}: {archs[0]} needs its text model's {key}; download the model's config.json "
                              "again")
        cfg = {"torch_dtype": outer.get("torch_dtype"), **cfg[key]}
        wrapped = (f"{archs[0]}: the text model ({arch}) priced, text tokens only; the vision tower is not",)
    if arch not in _REQUIRED:
        raise ConfigError(f"{where}: architecture {arch} is not supported; supported: {supported} (or describe "
                          f"the model in a .toml file, see {EXAMPLE})")
    cfg = {**_DEFAULTS.get(arch, {}), **{k: v for k, v in cfg.items() if v is not None or k in _NULLABLE}}
    if arch in _FFN_FROM and "intermediate_size" not in cfg and _FFN_FROM[arch] in cfg:
        cfg["intermediate_size"] = cfg[_FFN_FROM[arch]]
    hf = HF(cfg, arch, where)
    missing = []
    for key in (*_COMMON, *_REQUIRED[arch]):
        keys = key if isinstance(key, tuple) else (key,)
        if not any(k in cfg and (cfg[k] is not None or k in _NULLABLE) for k in keys):
            missing.append(" or ".join(keys))
    if missing:
        hf.missing(missing)
    values = _hf_common(hf)
    values.update(_ARCH_FIELDS[arch](hf, values))
    moe = values.get("n_experts", 0) > 0
    every = values.get("moe_every", 1)
    layers = ["moe" if moe and i >= values.get("first_dense", 0) and (i + 1) % every == 0 else "dense"
              for i in range(values["n_layers"])]
    names = module_names(arch, values.get("kv_lora_rank", 0) > 0, values.get("q_lora_rank", 0) > 0)
    quantized = outer if outer.get("quantization_config") is not None else cfg  # a wrapper's, or its text model's
    quant, notes = read_quantization(quantized, path, layers, names, values["dtype"], where)
    values.update(quant, notes=(*wrapped, *values.get("notes", ()), *notes))
    return build(lambda: ModelConfig(name=name, **values), where)


def _hf_common(hf: HF) -> dict:
    hidden, n_heads = hf.int("hidden_size"), hf.int("num_attention_heads")
    values = dict(vocab_size=hf.int("vocab_size"), hidden=hidden, n_layers=hf.int("num_hidden_layers"),
                  n_heads=n_heads, n_kv_heads=hf.int("num_key_value_heads", n_heads),
                  head_dim=hf.int("head_dim", hidden // n_heads if n_heads > 0 else 0),
                  ffn=hf.int("intermediate_size"), tie_embeddings=hf.get("tie_word_embeddings", bool, False))
    rope = hf.cfg.get("rope_parameters")  # newer transformers keep rope_theta there
    theta = hf.get("rope_theta", float, None)
    if theta is None and isinstance(rope, dict) and rope.get("rope_theta") is not None:
        theta = HF(rope, hf.arch, hf.where).get("rope_theta", float)
    if theta is not None:
        values["rope_theta"] = theta
    if (eps := hf.get("rms_norm_eps", float, None)) is not None:
        values["norm_eps"] = eps
    dtype = hf.cfg.get("torch_dtype") or hf.cfg.get("dtype") or "bfloat16"
    if dtype not in ("bfloat16", "float16", "float32"):
        hf.fail(f"torch_dtype {dtype!r} is not bfloat16, float16 or float32; give the model's activation dtype")
    values["dtype"] = "float32" if dtype == "float32" else "bfloat16"  # float16: the same bytes and peak as bf16
    return values


def _llama(hf: HF, values: dict) -> dict:
    return dict(qkv_bias=hf.get("attention_bias", bool, False))


def _no_sliding_window(hf: HF):
    if hf.get("use_sliding_window", bool, False):
        hf.fail("use_sliding_window = true: Qwen's per-layer sliding window layout (max_window_layers) is not "
                f"supported; set it to false (the published models' setting), or write a .toml with window_pattern "
                f"(see {EXAMPLE})")


def _qwen2(hf: HF, values: dict) -> dict:
    """Qwen2 and Qwen2.5: biases on the q, k and v projections (priced with one on the output projection too, as
    qkv_bias has it: `hidden` values a layer)."""
    _no_sliding_window(hf)
    return dict(qkv_bias=True, notes=("the output projection's bias counted with q, k and v's (hidden values a "
                                      "layer, < 0.001% of the weights)",))


def _qwen3(hf: HF, values: dict) -> dict:
    _no_sliding_window(hf)
    return dict(qkv_bias=hf.get("attention_bias", bool, False),
                notes=("q/k RMSNorms over head_dim values not priced (a few FLOPs a head)",))


def _mistral(hf: HF, values: dict) -> dict:
    """Mistral, Mistral-Nemo, Mistral Large: head_dim apart from hidden / heads (read in _hf_common), an optional
    sliding window on every layer."""
    window = hf.int("sliding_window", None)
    return dict(window_pattern=(window,)) if window else {}


def _mixtral(hf: HF, values: dict) -> dict:
    extra = dict(n_experts=hf.count("num_local_experts"), n_active=hf.count("num_experts_per_tok"),
                 expert_ffn=values["ffn"])
    if (window := hf.int("sliding_window", None)) is not None:  # Mistral-style: every layer windowed
        extra["window_pattern"] = (window,)
    return extra


def _deepseek_v3(hf: HF, values: dict, scoring: str = "sigmoid") -> dict:
    """DeepSeek-V3 and V2 (V2 and V2-Lite: `scoring`'s softmax where the file gives no scoring_func; V2-Lite has no
    query compression, q_lora_rank null)."""
    if hf.int("moe_layer_freq", 1) != 1:
        hf.fail("moe_layer_freq != 1 (dense layers among the MoE layers) is not supported; only the first "
                "first_k_dense_replace layers may be dense, so set moe_layer_freq = 1 or write a .toml "
                f"(see {EXAMPLE})")
    nope, rope = hf.count("qk_nope_head_dim"), hf.count("qk_rope_head_dim")
    scoring = hf.cfg.get("scoring_func", scoring)  # transformers' own DeepseekV3 (no key) scores with a sigmoid
    if scoring not in ("sigmoid", "softmax"):
        hf.fail(f"scoring_func {scoring!r} is not sigmoid or softmax; correct the value")
    notes = []
    if hf.int("num_nextn_predict_layers", 0):
        notes.append("the multi-token-prediction module is not part of the served model")
    if hf.int("n_group", 1) > 1:
        notes.append("group-limited routing (n_group, topk_group) picks the same number of experts")
    return dict(n_kv_heads=values["n_heads"], head_dim=nope + rope, q_lora_rank=hf.int("q_lora_rank", 0),
                kv_lora_rank=hf.count("kv_lora_rank"), qk_nope_head_dim=nope, qk_rope_head_dim=rope,
                v_head_dim=hf.count("v_head_dim"), n_experts=hf.count("n_routed_experts"),
                n_active=hf.count("num_experts_per_tok"), n_shared=hf.int("n_shared_experts", 0),
                expert_ffn=hf.count("moe_intermediate_size"), first_dense=hf.int("first_k_dense_replace"),
                router=scoring, notes=tuple(notes))


def _indexer(hf: HF) -> dict:
    """DeepSeek-V3.2's lightning indexer (DeepSeek Sparse Attention)."""
    return dict(index_heads=hf.count("index_n_heads"), index_dim=hf.count("index_head_dim"),
                index_topk=hf.count("index_topk"))


def _glm4_moe(hf: HF, values: dict) -> dict:
    """GLM-4.5/4.6/4.7: GQA attention with q, k and v biases (priced with an output bias too: `hidden` values a
    layer), partial RoPE and q/k norms (no cost), sigmoid-scored routed experts and shared ones, the first layers
    dense; the multi-token-prediction layer is not served."""
    notes = ["partial rotary embedding and q/k RMSNorms: no cost counted"]
    if hf.int("num_nextn_predict_layers", 0):
        notes.append("the multi-token-prediction layer is not part of the served model")
    return dict(qkv_bias=hf.get("attention_bias", bool, False), n_experts=hf.count("n_routed_experts"),
                n_active=hf.count("num_experts_per_tok"), n_shared=hf.int("n_shared_experts"),
                expert_ffn=hf.count("moe_intermediate_size"), first_dense=hf.int("first_k_dense_replace"),
                router="sigmoid", notes=tuple(notes))


def _layer_windows(hf: HF, n_layers: int, every: int = 0) -> tuple[int, ...]:
    """The window pattern from `layer_types` (sliding_attention or full_attention per layer), or, without it, every
    `every`-th layer full and the rest sliding (Gemma's layout: layer i full when (i + 1) % every == 0)."""
    layer_types = hf.get("layer_types", list, None if every else MISSING)
    if layer_types is None:
        window = hf.count("sliding_window")
        return window_pattern([0 if (i + 1) % every == 0 else window for i in range(n_layers)], hf)
    if len(layer_types) != n_layers:
        hf.fail(f"layer_types has {len(layer_types)} entries but num_hidden_layers is {n_layers}; give one entry "
                "per layer")
    windows = []
    for kind in layer_types:
        if kind == "sliding_attention":
            windows.append(hf.int("sliding_window"))
        elif kind == "full_attention":
            windows.append(0)
        else:
            hf.fail(f"layer type {kind!r} is not supported; layer_types entries must be sliding_attention or "
                    "full_attention")
    return window_pattern(windows, hf)


def _gpt_oss(hf: HF, values: dict) -> dict:
    per_token = "num_experts_per_tok" if hf.cfg.get("num_experts_per_tok") is not None else "experts_per_token"
    return dict(window_pattern=_layer_windows(hf, values["n_layers"]),
                qkv_bias=hf.get("attention_bias", bool, False), attn_sinks=True,
                n_experts=hf.count("num_local_experts"), n_active=hf.count(per_token), expert_ffn=values["ffn"],
                expert_bias=True, notes=("YaRN rope scaling and the SwiGLU clamp do not change the cost",))


def _phi3(hf: HF, values: dict) -> dict:
    """Phi-3 and Phi-4: q, k and v in one fused projection and gate and up in another (the same weights, priced as
    the separate matmuls they hold); an optional sliding window on every layer (Phi-3-mini's 2047)."""
    notes = ("fused qkv_proj and gate_up_proj: the same weights and FLOPs as separate projections",)
    if hf.get("partial_rotary_factor", float, 1.0) != 1.0:
        notes += ("partial rotary embedding: no cost counted",)
    return {**_mistral(hf, values), "qkv_bias": hf.get("attention_bias", bool, False), "notes": notes}


def _gemma(hf: HF, values: dict, every: int) -> dict:
    """Gemma 2 and 3: local (sliding window) and global layers, tied embeddings by default, GeGLU MLPs (the same
    three matmuls as SwiGLU), norms before and after attention and the MLP, logit soft-capping: the last two are
    elementwise work on a few values a token, read and not priced."""
    caps = [f"{key.split('_')[0]} logit soft-capping at {hf.get(key, float)}" for key in
            ("attn_logit_softcapping", "final_logit_softcapping") if hf.get(key, float, None) is not None]
    return dict(window_pattern=_layer_windows(hf, values["n_layers"], every),
                tie_embeddings=hf.get("tie_word_embeddings", bool, True),
                qkv_bias=hf.get("attention_bias", bool, False),
                notes=("GeGLU MLP priced as its three matmuls; the extra norms and embedding scaling not priced",
                       *(f"{c}: not priced (a tanh a logit)" for c in caps)))


_ARCH_FIELDS = {"LlamaForCausalLM": _llama, "Qwen2ForCausalLM": _qwen2, "Qwen3ForCausalLM": _qwen3,
                "MistralForCausalLM": _mistral, "Phi3ForCausalLM": _phi3,
                "Gemma2ForCausalLM": lambda hf, v: _gemma(hf, v, 2),
                "Gemma3ForCausalLM": lambda hf, v: _gemma(hf, v, hf.count("sliding_window_pattern")),
                "MixtralForCausalLM": _mixtral, "Qwen3MoeForCausalLM": qwen3_moe,
                "DeepseekV3ForCausalLM": _deepseek_v3,
                "DeepseekV2ForCausalLM": lambda hf, v: _deepseek_v3(hf, v, "softmax"),
                "DeepseekV32ForCausalLM": lambda hf, v: {**_deepseek_v3(hf, v), **_indexer(hf)},
                "Glm4MoeForCausalLM": _glm4_moe,
                "GptOssForCausalLM": _gpt_oss, "Llama4ForCausalLM": llama4, "MiniMaxM2ForCausalLM": minimax_m2,
                "Qwen3NextForCausalLM": gated_deltanet, "Qwen3_5ForCausalLM": gated_deltanet,
                "Qwen3_5MoeForCausalLM": gated_deltanet}
ARCHITECTURES = tuple(_ARCH_FIELDS)
