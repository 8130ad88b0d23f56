"""Architectures read from config.json beyond the first families (models.hf_config dispatches to them): Qwen3's MoE
and the hybrids built on it, Llama 4, MiniMax-M2."""

from models.file_checks import EXAMPLE
from models.hf_reader import HF, window_pattern


def qwen3_moe(hf: HF, values: dict) -> dict:
    if hf.get("mlp_only_layers", list, []) or hf.int("decoder_sparse_step", 1) != 1:
        hf.fail("dense layers among the MoE layers (mlp_only_layers non-empty or decoder_sparse_step != 1): that "
                "layout is not supported; only the first layers may be dense (first_dense), so use "
                f"mlp_only_layers = [] and decoder_sparse_step = 1, or write a .toml (see {EXAMPLE})")
    if hf.get("use_sliding_window", bool, False):
        hf.fail("use_sliding_window = true: Qwen3's per-layer sliding window layout is not supported; set it to "
                f"false, or write a .toml with window_pattern (see {EXAMPLE})")
    return dict(qkv_bias=hf.get("attention_bias", bool, False), n_experts=hf.count("num_experts"),
                n_active=hf.count("num_experts_per_tok"), expert_ffn=hf.count("moe_intermediate_size"))


def llama4(hf: HF, values: dict) -> dict:
    """Llama 4 (Scout, Maverick): a routed expert (top-1, sigmoid score) and a shared one of intermediate_size on
    every interleave_moe_layer_step-th layer, dense MLPs of intermediate_size_mlp between; chunked attention on the
    RoPE layers (layer_types, else no_rope_layers, else every no_rope_layer_interval-th layer global)."""
    n, every = values["n_layers"], hf.count("interleave_moe_layer_step")
    moe_layers = hf.get("moe_layers", list, None)
    if moe_layers is not None and moe_layers != list(range(every - 1, n, every)):
        hf.fail(f"moe_layers {moe_layers} is not every interleave_moe_layer_step = {every}-th layer; only that "
                f"layout is supported, so remove moe_layers or write a .toml (see {EXAMPLE})")
    chunk = hf.count("attention_chunk_size")
    kinds = hf.get("layer_types", list, None)
    if kinds is None:
        rope = hf.get("no_rope_layers", list, None) or [
            int((i + 1) % hf.count("no_rope_layer_interval") != 0) for i in range(n)]
        kinds = ["chunked_attention" if r else "full_attention" for r in rope]
    if len(kinds) != n or not set(kinds) <= {"chunked_attention", "full_attention"}:
        hf.fail("layer_types (or no_rope_layers) must give chunked_attention or full_attention (1 or 0) for each of "
                f"the {n} layers; correct the list")
    return dict(ffn=hf.count("intermediate_size_mlp"), expert_ffn=hf.count("intermediate_size"),
                n_experts=hf.count("num_local_experts"), n_active=hf.count("num_experts_per_tok"), n_shared=1,
                moe_every=every, router="sigmoid", chunked=True, qkv_bias=hf.get("attention_bias", bool, False),
                window_pattern=window_pattern([chunk if k == "chunked_attention" else 0 for k in kinds], hf),
                notes=("chunked layers' decode reads its ring of min(chunk, context) positions, an upper bound: an "
                       "engine reads the current chunk's tokens only (half a chunk on average past the first)",
                       "no RoPE on the global layers, L2 q/k norms and attention temperature tuning: no cost counted",
                       "the router is counted with a bias of one value an expert, which Llama 4's lacks"))


def minimax_m2(hf: HF, values: dict) -> dict:
    """MiniMax-M2 (and M2.1, M2.5): full attention on every layer (attn_type_list all 1), a MoE on every layer with
    sigmoid-scored experts of intermediate_size and a routing bias, no shared expert; q/k norms over the whole
    projection and partial RoPE cost nothing here; the multi-token-prediction modules are not served."""
    kinds = hf.get("attn_type_list", list, [1] * values["n_layers"])
    if any(k != 1 for k in kinds):
        hf.fail("attn_type_list has layers other than full softmax attention (1): MiniMax's linear-attention "
                f"layers are not supported; write a .toml (see {EXAMPLE})")
    if hf.int("shared_intermediate_size", 0):
        hf.fail("shared_intermediate_size > 0: a shared expert of another size than the routed ones is not "
                f"supported; write a .toml (see {EXAMPLE})")
    scoring = hf.cfg.get("scoring_func", "softmax")
    if scoring not in ("sigmoid", "softmax"):
        hf.fail(f"scoring_func {scoring!r} is not sigmoid or softmax; correct the value")
    notes = ["q/k RMSNorms over the whole projections (7,168 values a layer) and partial RoPE: no cost counted"]
    if hf.int("num_mtp_modules", 0):
        notes.append("the multi-token-prediction modules are not part of the served model")
    return dict(n_experts=hf.count("num_local_experts"), n_active=hf.count("num_experts_per_tok"),
                expert_ffn=values["ffn"], router=scoring, notes=tuple(notes))


def gated_deltanet(hf: HF, values: dict) -> dict:
    """Qwen3-Next and Qwen3.5 (dense and MoE): Gated DeltaNet layers with gated full attention every
    full_attention_interval-th layer (or as layer_types says); MoE layers with a sigmoid-gated shared expert."""
    n = values["n_layers"]
    kinds = hf.get("layer_types", list, None)
    if kinds is None:
        every = hf.count("full_attention_interval")
        kinds = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]
    if len(kinds) != n or not set(kinds) <= {"linear_attention", "full_attention"}:
        hf.fail(f"layer_types must give linear_attention or full_attention for each of the {n} layers; correct the "
                "list")
    state = hf.get("mamba_ssm_dtype", str, "float32")
    if state not in ("float32", "bfloat16"):
        hf.fail(f"mamba_ssm_dtype {state!r} is not float32 or bfloat16; correct the value")
    out = dict(linear_pattern=window_pattern([int(k == "linear_attention") for k in kinds], hf),
               linear_k_heads=hf.count("linear_num_key_heads"), linear_v_heads=hf.count("linear_num_value_heads"),
               linear_k_dim=hf.count("linear_key_head_dim"), linear_v_dim=hf.count("linear_value_head_dim"),
               linear_conv=hf.count("linear_conv_kernel_dim"), state_dtype=state,
               attn_gate=hf.get("attn_output_gate", bool, True), qkv_bias=hf.get("attention_bias", bool, False),
               notes=("partial RoPE and q/k norms: no cost counted; the multi-token-prediction layer is not served",
                      f"linear-attention state kept in {state}"
                      + (" (no mamba_ssm_dtype: SGLang's default, and vLLM's advice for Qwen3-Next)"
                         if "mamba_ssm_dtype" not in hf.cfg else "")))
    if hf.arch != "Qwen3_5ForCausalLM":  # Qwen3-Next and Qwen3.5's MoE
        out.update(qwen3_moe(hf, values), shared_gate=True)
        out.update(_shared_experts(hf, out["expert_ffn"]))
    return out


def _shared_experts(hf: HF, expert_ffn: int) -> dict:
    """A shared expert of shared_expert_intermediate_size, counted as that many routed experts' width."""
    size = hf.int("shared_expert_intermediate_size", 0)
    if size % expert_ffn:
        hf.fail(f"shared_expert_intermediate_size {size} is not a multiple of moe_intermediate_size {expert_ffn}; "
                f"that shared expert is not supported, write a .toml (see {EXAMPLE})")
    return dict(n_shared=size // expert_ffn)
