"""The built-in models, figures from their published config.json files (../shared/reference/models.md)."""

from models.config import ModelConfig

LLAMA3_8B = ModelConfig("llama3-8b", vocab_size=128256, hidden=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                        head_dim=128, ffn=14336)
LLAMA3_70B = ModelConfig("llama3-70b", vocab_size=128256, hidden=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                         head_dim=128, ffn=28672)
LLAMA3_405B = ModelConfig("llama3-405b", vocab_size=128256, hidden=16384, n_layers=126, n_heads=128, n_kv_heads=8,
                          head_dim=128, ffn=53248)
# Qwen/Qwen2.5-72B-Instruct config.json: biases on q, k and v (qkv_bias also puts one on the output projection:
# 8192 values a layer); Qwen/Qwen3-32B config.json (q/k RMSNorms of 128 values ignored).
QWEN25_72B = ModelConfig("qwen2.5-72b", vocab_size=152064, hidden=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                         head_dim=128, ffn=29568, rope_theta=1e6, norm_eps=1e-6, qkv_bias=True)
QWEN3_32B = ModelConfig("qwen3-32b", vocab_size=151936, hidden=5120, n_layers=64, n_heads=64, n_kv_heads=8,
                        head_dim=128, ffn=25600, rope_theta=1e6, norm_eps=1e-6)
# mistralai/Mistral-Large-Instruct-2411 and Mistral-Nemo-Instruct-2407 config.json (Nemo: head_dim 128, not
# 5120 / 32 = 160).
MISTRAL_LARGE_2 = ModelConfig("mistral-large-2", vocab_size=32768, hidden=12288, n_layers=88, n_heads=96,
                              n_kv_heads=8, head_dim=128, ffn=28672, rope_theta=1e6)
MISTRAL_NEMO = ModelConfig("mistral-nemo", vocab_size=131072, hidden=5120, n_layers=40, n_heads=32, n_kv_heads=8,
                           head_dim=128, ffn=14336, rope_theta=1e6)
# google/gemma-2-27b-it config.json: layers alternate a 4096-token window and full attention; tied embeddings;
# google/gemma-3-27b-it config.json's text_config: 5 layers of a 1024-token window, then a full one (62 layers: 10
# periods and 2 windowed layers more); vocab_size and rope_theta from transformers' Gemma3TextConfig defaults. GeGLU
# MLPs, extra norms and soft-capping add no matmul.
GEMMA2_27B = ModelConfig("gemma2-27b", vocab_size=256000, hidden=4608, n_layers=46, n_heads=32, n_kv_heads=16,
                         head_dim=128, ffn=36864, rope_theta=10_000.0, norm_eps=1e-6, tie_embeddings=True,
                         window_pattern=(4096, 0))
GEMMA3_27B = ModelConfig("gemma3-27b", vocab_size=262208, hidden=5376, n_layers=62, n_heads=32, n_kv_heads=16,
                         head_dim=128, ffn=21504, rope_theta=1e6, norm_eps=1e-6, tie_embeddings=True,
                         window_pattern=(1024, 1024, 1024, 1024, 1024, 0))
# microsoft/phi-4 config.json (Phi3ForCausalLM: fused qkv and gate/up projections, the same weights).
PHI_4 = ModelConfig("phi-4", vocab_size=100352, hidden=5120, n_layers=40, n_heads=40, n_kv_heads=10, head_dim=128,
                    ffn=17920, rope_theta=250_000.0)
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
# deepseek-ai/DeepSeek-V3.2 config.json: DeepSeek-V3's model and a lightning indexer on every layer (64 heads of 128,
# top 2048 tokens a query): DeepSeek Sparse Attention.
DEEPSEEK_V32 = ModelConfig("deepseek-v3.2", vocab_size=129280, n_heads=128, n_experts=256, first_dense=3,
                           index_heads=64, index_dim=128, index_topk=2048, **{**_DEEPSEEK, "n_kv_heads": 128})
KIMI_K2 = ModelConfig("kimi-k2", vocab_size=163840, n_heads=64, n_experts=384, first_dense=1,
                      **{**_DEEPSEEK, "rope_theta": 50_000.0, "n_kv_heads": 64})
# moonshotai/Kimi-K2.5 config.json (KimiK25ForConditionalGeneration; its text_config is Kimi K2's): routed experts in
# symmetric int4 groups of 32 (compressed-tensors W4A16, quantization-aware trained), the rest bf16.
KIMI_K25 = ModelConfig("kimi-k2.5", vocab_size=163840, n_heads=64, n_experts=384, first_dense=1,
                       **{**_DEEPSEEK, "rope_theta": 50_000.0, "n_kv_heads": 64, "weight_dtype": None,
                          "expert_dtype": "int4", "int4_group": 32, "int4_zero_points": False,
                          "notes": ("the vision tower is not priced: text tokens only",)})
# deepseek-ai/DeepSeek-V2 and DeepSeek-V2-Lite config.json: MLA (V2-Lite without query compression), softmax
# routing (V2: group-limited, the same number of experts), 2 shared experts, the first layer dense; bf16 weights.
_DEEPSEEK_V2 = dict(vocab_size=102400, n_kv_heads=0, head_dim=192, rope_theta=10_000.0, norm_eps=1e-6,
                    kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, n_active=6,
                    n_shared=2, first_dense=1)
DEEPSEEK_V2 = ModelConfig("deepseek-v2", hidden=5120, n_layers=60, n_heads=128, ffn=12288, q_lora_rank=1536,
                          n_experts=160, expert_ffn=1536, **{**_DEEPSEEK_V2, "n_kv_heads": 128},
                          notes=("group-limited routing (n_group, topk_group) picks the same number of experts",))
DEEPSEEK_V2_LITE = ModelConfig("deepseek-v2-lite", hidden=2048, n_layers=27, n_heads=16, ffn=10944, n_experts=64,
                               expert_ffn=1408, **{**_DEEPSEEK_V2, "n_kv_heads": 16})
# zai-org/GLM-4.5 config.json: GQA with q/k/v biases, 160 routed experts (top 8, sigmoid) and 1 shared, the first 3
# layers dense; partial RoPE and q/k norms cost nothing here; its MTP layer is not served.
GLM_45 = ModelConfig("glm-4.5", vocab_size=151552, hidden=5120, n_layers=92, n_heads=96, n_kv_heads=8, head_dim=128,
                     ffn=12288, rope_theta=1e6, qkv_bias=True, n_experts=160, n_active=8, n_shared=1,
                     expert_ffn=1536, first_dense=3, router="sigmoid")
# meta-llama/Llama-4-Scout-17B-16E-Instruct and Llama-4-Maverick-17B-128E-Instruct config.json (text_config): a
# routed expert (top 1, sigmoid) and a shared one of 8192 on every MoE layer (Scout: every layer; Maverick: every
# second, dense MLPs of 16384 between); chunked attention (8192-token chunks) on 3 layers of 4, the 4th global.
_LLAMA4 = dict(vocab_size=202048, hidden=5120, n_layers=48, n_heads=40, n_kv_heads=8, head_dim=128, ffn=16384,
               n_active=1, n_shared=1, expert_ffn=8192, router="sigmoid", window_pattern=(8192, 8192, 8192, 0),
               chunked=True,
               notes=("chunked layers' decode reads its ring of min(chunk, context) positions, an upper bound: an "
                      "engine reads the current chunk's tokens only (half a chunk on average past the first)",))
LLAMA4_SCOUT = ModelConfig("llama4-scout", n_experts=16, **_LLAMA4)
LLAMA4_MAVERICK = ModelConfig("llama4-maverick", n_experts=128, moe_every=2, **_LLAMA4)
# MiniMaxAI/MiniMax-M2 config.json: full attention on all 62 layers, 256 experts (top 8, sigmoid with a routing
# bias), no shared expert; fp8 e4m3 weights in 128x128 blocks, router, embedding and LM head bf16.
MINIMAX_M2 = ModelConfig("minimax-m2", vocab_size=200064, hidden=3072, n_layers=62, n_heads=48, n_kv_heads=8,
                         head_dim=128, ffn=1536, rope_theta=5e6, norm_eps=1e-6, n_experts=256, n_active=8,
                         expert_ffn=1536, router="sigmoid", weight_dtype="float8",
                         notes=("the multi-token-prediction modules are not part of the served model",))
# Qwen/Qwen3-Next-80B-A3B-Instruct config.json: Gated DeltaNet on 3 layers of 4 (16 key and 32 value heads of 128),
# gated full attention on the 4th (16 heads of 256, 2 kv heads); 512 experts (top 10) of 512 and a gated shared one.
QWEN3_NEXT_80B = ModelConfig("qwen3-next-80b-a3b", vocab_size=151936, hidden=2048, n_layers=48, n_heads=16,
                             n_kv_heads=2, head_dim=256, ffn=5120, rope_theta=1e7, norm_eps=1e-6, attn_gate=True,
                             linear_pattern=(1, 1, 1, 0), linear_k_heads=16, linear_v_heads=32, linear_k_dim=128,
                             linear_v_dim=128, linear_conv=4, n_experts=512, n_active=10, n_shared=1,
                             expert_ffn=512, shared_gate=True,
                             notes=("linear-attention state kept in float32 (SGLang's default, and vLLM's advice "
                                    "for Qwen3-Next)",))
# Qwen/Qwen3.5-397B-A17B config.json's text_config (Qwen3_5MoeForConditionalGeneration; copy used:
# amd/Qwen3.5-397B-A17B-MXFP4's, its quantization_config dropped): Qwen3-Next's layout at 4096 wide, 60 layers, Gated
# DeltaNet with 64 value heads, gated attention of 32 heads (2 kv heads) of 256; 512 experts (top 10) of 1024 and a
# gated shared one. No dense layer: its config has no intermediate_size, so ffn takes the experts' width (unused).
QWEN35_397B = ModelConfig("qwen3.5-397b-a17b", vocab_size=248320, hidden=4096, n_layers=60, n_heads=32, n_kv_heads=2,
                          head_dim=256, ffn=1024, rope_theta=1e7, norm_eps=1e-6, attn_gate=True,
                          linear_pattern=(1, 1, 1, 0), linear_k_heads=16, linear_v_heads=64, linear_k_dim=128,
                          linear_v_dim=128, linear_conv=4, n_experts=512, n_active=10, n_shared=1, expert_ffn=1024,
                          shared_gate=True,
                          notes=("partial RoPE and q/k norms: no cost counted; the multi-token-prediction layer is "
                                 "not served", "linear-attention state kept in float32 (mamba_ssm_dtype)",
                                 "the vision tower is not priced: text tokens only"))
# A tiny config for tests: head_dim deliberately not hidden // n_heads.
TINY = ModelConfig("tiny", vocab_size=512, hidden=128, n_layers=4, n_heads=8, n_kv_heads=8, head_dim=32, ffn=256)

PRESETS = {m.name: m for m in (
    LLAMA3_8B, LLAMA3_70B, LLAMA3_405B, QWEN25_72B, QWEN3_32B, MISTRAL_LARGE_2, MISTRAL_NEMO, GEMMA2_27B, GEMMA3_27B,
    PHI_4, MIXTRAL_8X7B, QWEN3_30B_A3B, QWEN3_235B_A22B, GLM_45, GPT_OSS_20B, GPT_OSS_120B, DEEPSEEK_V2,
    DEEPSEEK_V2_LITE, DEEPSEEK_V3, DEEPSEEK_V32, KIMI_K2, KIMI_K25, LLAMA4_SCOUT, LLAMA4_MAVERICK, MINIMAX_M2,
    QWEN3_NEXT_80B, QWEN35_397B, TINY)}
