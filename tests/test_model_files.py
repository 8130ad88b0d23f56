"""Model files: the project's TOML format and Hugging Face config.json files, loaded into ModelConfig. Pure Python."""

import dataclasses
import json
from pathlib import Path

import pytest

import models
from models.files import ARCHITECTURES, load_model_file
from models.presets import LLAMA3_8B, PRESETS
from tracer.errors import ConfigError

DATA = Path(__file__).parent / "data"
HF_MODELS = ("llama3-70b", "qwen2.5-72b", "qwen3-32b", "mistral-large-2", "mistral-nemo", "gemma2-27b",
             "gemma3-27b", "phi-4", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v2", "deepseek-v2-lite",
             "glm-4.5", "deepseek-v3", "gpt-oss-120b", "llama4-scout", "llama4-maverick",
             "minimax-m2", "kimi-k2.5", "qwen3-next-80b-a3b", "deepseek-v3.2", "qwen3.5-397b-a17b")


def hf_config(name: str) -> dict:
    return json.loads((DATA / name / "config.json").read_text())


def write_json(tmp_path: Path, cfg, folder: str = "model") -> str:
    path = tmp_path / folder / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return str(path)


def write_toml(tmp_path: Path, text: str, name: str = "model.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def fails(path: str, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as err:
        load_model_file(path)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# --- Hugging Face config.json: the published configs price exactly as the presets ---

@pytest.mark.parametrize("name", HF_MODELS)
def test_hf_config_prices_as_preset(name):
    cfg, preset = load_model_file(str(DATA / name / "config.json")), PRESETS[name]
    assert cfg.name == name
    assert cfg.total_params == preset.total_params
    assert cfg.active_params == preset.active_params
    assert cfg.kv_bytes_per_token == preset.kv_bytes_per_token
    assert cfg.weight_bytes == preset.weight_bytes


@pytest.mark.parametrize("name", HF_MODELS)
def test_hf_config_equals_preset(name):
    """Every field round-trips (notes aside, which do not take part in equality)."""
    assert load_model_file(str(DATA / name / "config.json")) == PRESETS[name]


def test_hf_features():
    ds = load_model_file(str(DATA / "deepseek-v3" / "config.json"))
    assert (ds.is_mla, ds.router, ds.weights, ds.experts, ds.first_dense) == (True, "sigmoid", "float8", "float8", 3)
    oss = load_model_file(str(DATA / "gpt-oss-120b" / "config.json"))
    assert oss.window_pattern == (128, 0) and oss.attn_sinks and oss.qkv_bias and oss.expert_bias
    assert (oss.weights, oss.experts) == ("bfloat16", "mxfp4")
    assert load_model_file(str(DATA / "qwen3-30b-a3b")).name == "qwen3-30b-a3b"  # a folder holding config.json
    v2, lite = (load_model_file(str(DATA / n)) for n in ("deepseek-v2", "deepseek-v2-lite"))
    assert (v2.router, v2.q_lora_rank, lite.q_lora_rank, lite.n_shared) == ("softmax", 1536, 0, 2)  # Lite: no q LoRA


def test_hf_defaults_and_name(tmp_path):
    cfg = hf_config("llama3-70b")
    for key in ("num_key_value_heads", "torch_dtype", "rope_theta", "rms_norm_eps", "tie_word_embeddings"):
        del cfg[key]
    cfg["dtype"] = "float16"  # anything but bfloat16 / float32 prices as bfloat16
    loaded = load_model_file(write_json(tmp_path, cfg, "My-Llama"))
    assert loaded.name == "my-llama"
    assert (loaded.n_kv_heads, loaded.head_dim, loaded.dtype) == (64, 128, "bfloat16")
    other = tmp_path / "Llama-FP32.json"
    other.write_text(json.dumps({**cfg, "dtype": "float32"}))
    assert (load_model_file(str(other)).name, load_model_file(str(other)).dtype) == ("llama-fp32", "float32")


def test_hf_gpt_oss_experts_per_token_and_null_q_lora(tmp_path):
    cfg = hf_config("gpt-oss-120b")
    del cfg["num_experts_per_tok"]
    assert load_model_file(write_json(tmp_path, cfg, "a")).n_active == 4
    ds = {**hf_config("deepseek-v3"), "q_lora_rank": None}
    assert load_model_file(write_json(tmp_path, ds, "b")).q_lora_rank == 0


# --- the project's TOML format ---

def test_toml_custom_moe():
    cfg = load_model_file(str(DATA / "my-moe.toml"))
    assert (cfg.name, cfg.n_experts, cfg.n_active, cfg.n_shared, cfg.first_dense) == ("my-moe", 16, 2, 1, 2)
    assert cfg.window_pattern == (1024, 0) and cfg.notes == ("a test fixture, not a published model",)
    assert cfg.rope_theta == 1e6 and cfg.kv == "float8"


def test_toml_base_override():
    cfg = load_model_file(str(DATA / "llama3-8b-fp8.toml"))
    assert cfg == dataclasses.replace(LLAMA3_8B, name="llama3-8b-fp8", weight_dtype="float8")
    assert cfg.weight_bytes < LLAMA3_8B.weight_bytes


def test_packaged_example_loads():
    cfg = load_model_file(str(Path(models.__file__).parent / "examples" / "custom.toml"))
    assert cfg.name == "custom-moe" and cfg.is_moe


def test_toml_name_defaults_to_stem_and_ints_become_floats(tmp_path):
    cfg = load_model_file(write_toml(tmp_path, 'base = "tiny"\nrope_theta = 10000\n', "Small-One.toml"))
    assert cfg.name == "Small-One" and cfg.rope_theta == 10000.0 and isinstance(cfg.rope_theta, float)


# --- errors: one line, naming the fix ---

def test_unknown_architecture(tmp_path):
    msg = fails(write_json(tmp_path, {**hf_config("llama3-70b"), "architectures": ["FooForCausalLM"]}),
                "architecture FooForCausalLM is not supported")
    assert all(arch in msg for arch in ARCHITECTURES)


def test_missing_hf_key(tmp_path):
    cfg = hf_config("deepseek-v3")
    del cfg["hidden_size"], cfg["kv_lora_rank"]
    fails(write_json(tmp_path, cfg), "DeepseekV3ForCausalLM config is missing hidden_size, kv_lora_rank")
    oss = hf_config("gpt-oss-120b")
    del oss["num_experts_per_tok"], oss["experts_per_token"]
    fails(write_json(tmp_path, oss, "oss"), "missing num_experts_per_tok or experts_per_token")


def test_malformed_files(tmp_path):
    fails(write_json(tmp_path, '{"architectures": ["LlamaForCausalLM"],'), "not valid JSON")
    fails(write_toml(tmp_path, "hidden = = 3\n"), "not valid TOML")
    fails(write_json(tmp_path, "[1, 2]", "list"), "JSON object")
    fails(write_json(tmp_path, {"hidden_size": 8}, "noarch"), "no architectures")


def test_missing_file_and_wrong_suffix(tmp_path):
    fails(str(tmp_path / "nowhere.toml"), "not found")
    fails(write_toml(tmp_path, "x", "model.yaml"), "must end in .toml")


def test_unknown_toml_key(tmp_path):
    msg = fails(write_toml(tmp_path, 'base = "tiny"\nn_expert = 8\n'), "unknown key 'n_expert'")
    assert "did you mean 'n_experts'" in msg and "valid keys are" in msg and "expert_ffn" in msg


def test_toml_missing_fields_bad_base_and_types(tmp_path):
    fails(write_toml(tmp_path, "vocab_size = 100\nhidden = 64\n"),
          "missing required fields n_layers, n_heads, n_kv_heads, head_dim, ffn")
    fails(write_toml(tmp_path, 'base = "llama9"\n'), "base 'llama9' is not a preset")
    fails(write_toml(tmp_path, 'base = "tiny"\nn_experts = "8"\n'), "n_experts must be an integer")
    fails(write_toml(tmp_path, 'base = "tiny"\nwindow_pattern = [4, "x"]\n'), "window_pattern must be a list of")
    fails(write_toml(tmp_path, 'base = "tiny"\nn_kv_heads = 3\n'), "not a multiple of n_kv_heads")  # __post_init__


def test_non_repeating_layer_types(tmp_path):
    cfg = hf_config("gpt-oss-120b")
    cfg["layer_types"][-1] = "sliding_attention"
    fails(write_json(tmp_path, cfg), "layer_types do not repeat")
    cfg["layer_types"] = cfg["layer_types"][:-1]
    fails(write_json(tmp_path, cfg, "short"), "35 entries but num_hidden_layers is 36")


def test_dense_families(tmp_path):
    """Qwen2 always has q/k/v biases; Qwen3 reads attention_bias; Mistral's head_dim stands apart from hidden /
    heads (Nemo: 128, not 160) and a sliding window covers every layer; Qwen's per-layer windows are refused."""
    assert load_model_file(str(DATA / "qwen2.5-72b")).qkv_bias
    assert not load_model_file(str(DATA / "qwen3-32b")).qkv_bias
    assert load_model_file(str(DATA / "mistral-nemo")).head_dim == 128
    windowed = load_model_file(write_json(tmp_path, {**hf_config("mistral-nemo"), "sliding_window": 4096}))
    assert windowed.window_pattern == (4096,)
    phi3_mini = load_model_file(write_json(tmp_path, {**hf_config("phi-4"), "sliding_window": 2047}, "p"))
    assert phi3_mini.window_pattern == (2047,)  # Phi-3-mini windows every layer
    fails(write_json(tmp_path, {**hf_config("qwen3-32b"), "use_sliding_window": True}, "q"),
          "use_sliding_window = true: Qwen's per-layer sliding window layout")


def test_gemma(tmp_path):
    """Gemma 2 alternates windowed and full layers; Gemma 3's text_config (inside Gemma3ForConditionalGeneration)
    has 5 windowed layers to a full one, transformers' defaults filling what it leaves out, and says the vision
    tower is not priced; soft-capping is read into the notes; layer_types, where given, decide."""
    g2 = load_model_file(str(DATA / "gemma2-27b"))
    assert (g2.window_pattern, g2.tie_embeddings) == ((4096, 0), True)
    assert any("soft-capping at 50.0" in n for n in g2.notes)
    g3 = load_model_file(str(DATA / "gemma3-27b"))
    assert g3.window_pattern == (1024,) * 5 + (0,) and g3.vocab_size == 262208
    assert any("vision tower is not" in n for n in g3.notes)
    cfg = hf_config("gemma2-27b")
    types_ = ["sliding_attention", "sliding_attention", "full_attention"] * 15 + ["sliding_attention"]
    assert load_model_file(write_json(tmp_path, {**cfg, "layer_types": types_})).window_pattern == (4096, 4096, 0)
    fails(write_json(tmp_path, {**hf_config("gemma3-27b"), "text_config": None}, "t"), "needs its text model's")
    g3 = hf_config("gemma3-27b")
    fails(write_json(tmp_path, {**g3, "text_config": {**g3["text_config"], "sliding_window_pattern": 0}}, "z"),
          "sliding_window_pattern must be a positive integer")


def test_llama4(tmp_path):
    """Llama 4's text_config: Scout MoE on every layer, Maverick on every second (dense MLPs of
    intermediate_size_mlp between); chunked attention on the RoPE layers, from no_rope_layers (empty: every 4th
    layer global), layer_types where given; moe_layers must be the interleaving's own list."""
    scout, maverick = (load_model_file(str(DATA / n)) for n in ("llama4-scout", "llama4-maverick"))
    assert (scout.moe_every, maverick.moe_every, maverick.ffn, maverick.expert_ffn) == (1, 2, 16384, 8192)
    assert scout.window_pattern == (8192, 8192, 8192, 0) and scout.chunked
    assert [maverick.layer_is_moe(i) for i in range(4)] == [False, True, False, True]
    assert any("vision tower is not" in n for n in scout.notes)
    cfg = hf_config("llama4-maverick")
    text = cfg["text_config"]

    def with_text(folder, **changes):
        return write_json(tmp_path, {**cfg, "text_config": {**text, **changes}}, folder)

    rope = [1, 0] * 24  # every second layer global
    assert load_model_file(with_text("a", no_rope_layers=rope)).window_pattern == (8192, 0)
    kinds = ["chunked_attention", "chunked_attention", "full_attention"] * 16
    assert load_model_file(with_text("b", layer_types=kinds)).window_pattern == (8192, 8192, 0)
    assert load_model_file(with_text("c", moe_layers=list(range(1, 48, 2)))).total_params == maverick.total_params
    fails(with_text("d", moe_layers=[1, 3]), "is not every interleave_moe_layer_step = 2-th layer")
    fails(with_text("e", layer_types=["sliding_attention"] * 48), "must give chunked_attention or full_attention")


def test_kimi_k25_wrapper(tmp_path):
    """KimiK25ForConditionalGeneration: its text_config is Kimi K2's DeepSeek-V3 layout, priced for text tokens; the
    quantization_config is read where the file keeps it, in the text_config or beside it: routed experts in symmetric
    int4 groups of 32 (4.5 bits), attention, shared experts and the dense layer bf16 (the ignore list)."""
    k25 = load_model_file(str(DATA / "kimi-k2.5"))
    assert (k25.attn_weights, k25.weights, k25.experts, k25.int4_group, k25.bits("int4")) == (
        "bfloat16", "bfloat16", "int4", 32, 4.5)
    assert any("vision tower is not" in n for n in k25.notes)
    cfg = hf_config("kimi-k2.5")
    text = dict(cfg["text_config"])
    outside = {**cfg, "quantization_config": text.pop("quantization_config"), "text_config": text}
    assert load_model_file(write_json(tmp_path, outside)).weight_bytes == k25.weight_bytes


QWEN35_TEXT = {  # Qwen/Qwen3.5-9B's text_config, as published
    "attention_bias": False, "attn_output_gate": True, "full_attention_interval": 4, "head_dim": 256,
    "hidden_size": 4096, "intermediate_size": 12288, "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 8,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
    "linear_value_head_dim": 128, "num_attention_heads": 16, "num_key_value_heads": 4, "num_hidden_layers": 32,
    "rms_norm_eps": 1e-06, "vocab_size": 248320, "mamba_ssm_dtype": "float32", "mtp_num_hidden_layers": 1,
    "rope_parameters": {"mrope_interleaved": True, "mrope_section": [11, 11, 10], "rope_type": "default",
                        "rope_theta": 10000000, "partial_rotary_factor": 0.25},
    "tie_word_embeddings": False, "model_type": "qwen3_5_text"}


def test_gated_deltanet_families(tmp_path):
    """Qwen3-Next: linear attention on 3 layers of 4 (full_attention_interval), gated attention, a gated shared
    expert, the state in float32 when the file does not say; Qwen3.5 (dense and MoE, inside their
    ...ForConditionalGeneration wrappers): layer_types and mamba_ssm_dtype decide."""
    nxt = load_model_file(str(DATA / "qwen3-next-80b-a3b"))
    assert (nxt.linear_pattern, nxt.attn_gate, nxt.shared_gate, nxt.state_dtype) == ((1, 1, 1, 0), True, True,
                                                                                      "float32")
    dense = load_model_file(write_json(tmp_path, {"architectures": ["Qwen3_5ForConditionalGeneration"],
                                                  "text_config": QWEN35_TEXT, "torch_dtype": "bfloat16"}))
    assert (dense.linear_pattern, dense.is_moe, dense.ffn, dense.kv_bytes_per_token) == (
        (1, 1, 1, 0), False, 12288, 8 * 2 * 4 * 256 * 2)  # 8 full-attention layers of 32
    assert any("vision tower is not" in n for n in dense.notes)
    moe_text = {**QWEN35_TEXT, "hidden_size": 2048, "num_hidden_layers": 40, "num_key_value_heads": 2,
                "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 10, "num_experts": 256,
                "num_experts_per_tok": 8, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
                "mamba_ssm_dtype": "bfloat16"}
    moe = load_model_file(write_json(tmp_path, {"architectures": ["Qwen3_5MoeForConditionalGeneration"],
                                                "text_config": moe_text}, "b"))
    assert (moe.n_experts, moe.n_active, moe.n_shared, moe.shared_gate, moe.state_dtype) == (256, 8, 1, True,
                                                                                             "bfloat16")
    assert moe.state_bytes_per_sequence == 30 * (32 * 128 * 128 * 2 + 8192 * 3 * 2)  # 30 linear layers, bf16
    fails(write_json(tmp_path, {**hf_config("qwen3-next-80b-a3b"), "shared_expert_intermediate_size": 768}, "c"),
          "not a multiple of moe_intermediate_size")
    fails(write_json(tmp_path, {**hf_config("qwen3-next-80b-a3b"), "mamba_ssm_dtype": "float16"}, "d"),
          "mamba_ssm_dtype 'float16' is not float32 or bfloat16")


def test_minimax_m2(tmp_path):
    """MiniMax-M2: sigmoid-routed experts of intermediate_size on every layer, fp8 blocks but for the router and
    LM head; MiniMax's linear-attention layers (attn_type_list 0, MiniMax-Text-01) and shared experts are refused."""
    m2 = load_model_file(str(DATA / "minimax-m2"))
    assert (m2.router, m2.expert_ffn, m2.weights, m2.experts, m2.vocab) == ("sigmoid", 1536, "float8", "float8",
                                                                            "bfloat16")
    cfg = hf_config("minimax-m2")
    fails(write_json(tmp_path, {**cfg, "attn_type_list": [0, 1] * 31}), "linear-attention layers are not supported")
    fails(write_json(tmp_path, {**cfg, "shared_intermediate_size": 1536}, "b"), "shared expert of another size")


def test_unsupported_layouts(tmp_path):
    fails(write_json(tmp_path, {**hf_config("qwen3-30b-a3b"), "mlp_only_layers": [3]}), "layout is not supported")
    fails(write_json(tmp_path, {**hf_config("qwen3-30b-a3b"), "decoder_sparse_step": 2}, "b"), "not supported")
    fails(write_json(tmp_path, {**hf_config("llama3-70b"), "quantization_config": {"quant_method": "bitsandbytes"}},
                     "c"), "quantization method 'bitsandbytes' is not supported")
    fails(write_json(tmp_path, {**hf_config("llama3-70b"), "hidden_size": "8192"}, "d"),
          "hidden_size must be an integer")
