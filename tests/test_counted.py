"""Counted right (issue 12): tensor-parallel experts reduced once, quantized checkpoints, NVFP4 and int4, the experts a
decode step reaches, each against a figure derived by hand in the test."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MOE

from meshes.strategies import get_strategy
from meshes.systems import get_system
from models.config import ModelConfig
from models.files import get_model, load_model_file
from models.moe import reached_fraction
from tracer.api import trace
from tracer.compile import Workload, compile_steps
from tracer.errors import ConfigError


@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3"])
def test_tp_moe_layer_all_reduces_once_like_a_dense_mlp(name):
    """Under tp each device combines its experts' partial outputs (router-weighted, plus the shared expert's) into
    its tokens and the layer all-reduces once: 2 (n-1)/n x tokens x hidden x 2 bytes (bf16 activations) per MoE layer,
    as a dense MLP's. Before, every slot's output was reduced: k times (top-2 Mixtral: 2x; DeepSeek: two
    reductions)."""
    cfg = get_model(name)
    work = Workload(batch=8, prompt=64, context=64)
    step = compile_steps(cfg, get_system("h200x8"), get_strategy("tp"), work, phases=("prefill",))["prefill"]
    moe_layers = cfg.n_layers - cfg.first_dense
    tokens = work.batch * work.prompt  # 512
    dense_formula = 2 * 7 / 8 * tokens * cfg.hidden * 2  # mixtral: 1.75 x 512 x 4096 x 2 = 7.34 MB per layer
    moe_wire = sum(dict(c.scopes).get("moe dispatch", 0.0) for c in step.cost.collectives)
    assert moe_wire / moe_layers == pytest.approx(dense_formula, rel=0.02)
    assert {c.op for c in step.cost.collectives if dict(c.scopes).get("moe dispatch")} == {"all-reduce"}


# --- quantized checkpoints, read from their files (shaped as the tools publish them) ---

DATA = Path(__file__).parent / "data"


def checkpoint(tmp_path, name: str, sibling: dict | None = None, **extra) -> ModelConfig:
    """A published config.json (tests/data) with `extra` keys, and ModelOpt's hf_quant_config.json beside it."""
    cfg = {**json.loads((DATA / name / "config.json").read_text()), **extra}
    if "quantization_config" in extra and extra["quantization_config"] is None:
        del cfg["quantization_config"]
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    if sibling is not None:
        (folder / "hf_quant_config.json").write_text(json.dumps(sibling))
    return load_model_file(str(folder / "config.json"))


def test_modelopt_fp8_sibling_file(tmp_path):
    """nvidia/Llama-3.1-70B-Instruct-FP8: hf_quant_config.json says FP8 weights and KV, lm_head excluded. Every layer
    matmul is 1 byte per value; embedding, LM head and norms stay bf16: 72.66 GB, not 141 GB."""
    cfg = checkpoint(tmp_path, "llama3-70b", {"producer": {"name": "modelopt", "version": "0.19.0"}, "quantization": {
        "quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}})
    attn = 2 * 8192 * 64 * 128 + 2 * 8192 * 8 * 128  # q, o and k, v: 150,994,944
    mlp = 3 * 8192 * 28672  # 704,643,072
    vocab = 2 * 128256 * 8192  # embedding and LM head
    norms = (2 * 80 + 1) * 8192
    assert cfg.weight_bytes == 80 * (attn + mlp) * 1 + (vocab + norms) * 2 == pytest.approx(72.656e9, rel=1e-4)
    assert (cfg.weights, cfg.kv) == ("float8", "float8")
    assert cfg.kv_bytes_per_token == 2 * 8 * 128 * 80 * 1 == 163_840  # half of bf16's 327,680


def test_modelopt_nvfp4_sibling_keeps_excluded_attention(tmp_path):
    """A DeepSeek-V3 NVFP4 checkpoint whose hf_quant_config.json excludes every layer's attention (wildcards) and the
    LM head: routed, shared and dense MLP weights at 4.5 bits (e2m1 + one e4m3 scale per 16), attention bf16."""
    cfg = checkpoint(tmp_path, "deepseek-v3", {"producer": {"name": "modelopt"}, "quantization": {
        "quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
        "exclude_modules": ["lm_head", "model.layers.*.self_attn*", "model.layers.61*"]}},
        quantization_config=None)
    d = 7168
    routed = 58 * 256 * 3 * d * 2048  # 58 MoE layers x 256 experts
    mlp = 58 * 3 * d * 2048 + 3 * 3 * d * 18432  # shared experts and the 3 dense layers
    attn = 61 * (d * 1536 + 1536 * 128 * 192 + d * 576 + 512 * 128 * 256 + 128 * 128 * d)  # q LoRA, kv LoRA, o
    small = 61 * (1536 + 512 + 2 * d) + d + 58 * (d + 1) * 256  # norms; routers and their selection bias (bf16)
    vocab = 2 * 129280 * d
    assert cfg.weight_bytes == pytest.approx((routed + mlp) * 4.5 / 8 + (attn + small + vocab) * 2, rel=1e-9)
    assert cfg.weight_bytes == pytest.approx(396.4e9, rel=1e-3)  # 1.34 TB in bf16
    assert (cfg.attn_weights, cfg.weights, cfg.experts, cfg.kv) == ("bfloat16", "nvfp4", "nvfp4", "bfloat16")


def test_modelopt_in_config_json_with_config_groups(tmp_path):
    """Qwen3 MoE NVFP4 as newer ModelOpt exports write it into config.json (quant_method modelopt, config_groups, an
    ignore list, kv_cache_scheme): every layer matmul at 4.5 bits, the routers (mlp.gate) bf16, KV fp8."""
    q = {"quant_method": "modelopt", "quant_algo": "NVFP4", "producer": {"name": "modelopt", "version": "0.33.1"},
         "config_groups": {"group_0": {"targets": ["Linear"],
                                       "weights": {"num_bits": 4, "type": "float", "group_size": 16},
                                       "input_activations": {"num_bits": 4, "type": "float", "group_size": 16}}},
         "ignore": ["lm_head", "model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
         "kv_cache_scheme": {"num_bits": 8, "type": "float", "dynamic": False}}
    cfg = checkpoint(tmp_path, "qwen3-30b-a3b", quantization_config=q)
    d, layers = 2048, 48
    matmul = layers * (2 * d * 32 * 128 + 2 * d * 4 * 128 + 128 * 3 * d * 768)
    rest = 2 * 151936 * d + layers * (2 * d + d * 128) + d  # vocabulary, norms, routers
    assert (cfg.attn_weights, cfg.experts, cfg.kv) == ("nvfp4", "nvfp4", "float8")
    assert cfg.weight_bytes == pytest.approx(matmul * 4.5 / 8 + rest * 2, rel=1e-9)


@pytest.mark.parametrize("scheme, want", [
    ({"weights": {"num_bits": 8, "type": "float"}, "input_activations": {"num_bits": 8, "type": "float"}}, "float8"),
    ({"weights": {"num_bits": 8, "type": "int"}, "input_activations": {"num_bits": 8, "type": "int"}}, "int8"),
    ({"weights": {"num_bits": 4, "type": "int", "group_size": 128, "strategy": "group"}}, "int4"),
])
def test_compressed_tensors_schemes(tmp_path, scheme, want):
    """llm-compressor's FP8 and INT8 W8A8 and INT4 W4A16 (groups of 128: 4 + (16 + 4) / 128 bits): every Llama
    layer matmul in that format, the vocabulary bf16."""
    q = {"quant_method": "compressed-tensors", "format": "float-quantized",
         "config_groups": {"group_0": {"targets": ["Linear"], **scheme}}, "ignore": ["lm_head"]}
    cfg = checkpoint(tmp_path, "llama3-70b", quantization_config=q)
    bits = {"float8": 8, "int8": 8, "int4": 4 + (16 + 4) / 128}[want]
    matmul = 80 * (2 * 8192 * 64 * 128 + 2 * 8192 * 8 * 128 + 3 * 8192 * 28672)
    assert cfg.weights == want
    assert cfg.weight_bytes == pytest.approx(matmul * bits / 8 + (2 * 128256 * 8192 + 161 * 8192) * 2, rel=1e-9)


def test_symmetric_int4_stores_no_zero_points(tmp_path, small):
    """compressed-tensors' symmetric INT4 groups (Kimi K2.5's routed experts: groups of 32) keep a bf16 scale and
    no zero point: 4 + 16/32 = 4.5 bits, not 4 + 20/32; and a model in that format compiles, its decode reading
    those bytes a device: 2 layers x (attention + MLP) weights x 4.5 / 8 bytes / 8 devices, the bf16 embedding and
    LM head / 8, and the 5 bf16 norms whole."""
    q = {"quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "group_size": 32, "symmetric": True}}}}
    cfg = checkpoint(tmp_path, "llama3-70b", quantization_config=q)
    assert (cfg.weights, cfg.int4_group, cfg.int4_zero_points, cfg.bits("int4")) == ("int4", 32, False, 4.5)
    sym = dataclasses.replace(small, weight_dtype="int4", int4_group=32, int4_zero_points=False)
    r = trace(sym, "h100x8", "tp", batch=8, context=64, find_max_batch=False)
    layers = small.n_layers * (small.attn_params(0) + small.dense_mlp_params)
    vocab = 2 * small.vocab_size * small.hidden * 2
    assert r.phases["decode"].step.weight_bytes == (layers * 4.5 / 8 + vocab) / 8 + 5 * small.hidden * 2


def test_awq_and_gptq_group_sizes_and_fp8_exclusions(tmp_path):
    """AWQ int4 in groups of 64 (4 + 20/64 bits); GPTQ 8-bit is refused; fp8 with self_attn not converted keeps the
    attention bf16."""
    awq = checkpoint(tmp_path, "llama3-70b", quantization_config={
        "quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True, "version": "gemm"})
    assert (awq.weights, awq.int4_group, awq.bits("int4")) == ("int4", 64, 4 + 20 / 64)
    gptq = checkpoint(tmp_path / "a", "mixtral-8x7b", quantization_config={
        "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
        "modules_to_not_convert": ["gate"]})  # the router: not a weight group the model quantizes anyway
    assert (gptq.attn_weights, gptq.experts, gptq.int4_group) == ("int4", "int4", 128)
    with pytest.raises(ConfigError, match="gptq with 8 bits is not supported") as err:
        checkpoint(tmp_path / "b", "llama3-70b", quantization_config={"quant_method": "gptq", "bits": 8})
    assert "\n" not in str(err.value)
    fp8 = checkpoint(tmp_path / "c", "qwen3-30b-a3b", quantization_config={
        "quant_method": "fp8", "weight_block_size": [128, 128], "modules_to_not_convert": ["self_attn", "lm_head"]})
    assert (fp8.attn_weights, fp8.experts) == ("bfloat16", "float8")


def test_exclusions_follow_each_architectures_module_names(tmp_path):
    """Mixtral names its experts block_sparse_moe.experts.N.w1..w3, Qwen3 MoE mlp.experts.N.gate_proj..: a pattern
    that keeps one architecture's experts unquantized matches its own names."""
    mix = checkpoint(tmp_path, "mixtral-8x7b", quantization_config={
        "quant_method": "fp8", "modules_to_not_convert": ["block_sparse_moe.experts", "lm_head"]})
    assert (mix.attn_weights, mix.experts) == ("float8", "bfloat16")
    qwen = checkpoint(tmp_path / "q", "qwen3-30b-a3b", {"quantization": {
        "quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head", "model.layers.*.mlp.experts*"]}})
    assert (qwen.attn_weights, qwen.experts) == ("nvfp4", "bfloat16")


@pytest.mark.parametrize("q, match", [
    ({"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"}, "modelopt 'W4A8_AWQ' is not supported"),
    ({"quant_method": "hqq"}, "method 'hqq' is not supported"),
    ({"quant_method": "modelopt"}, "no hf_quant_config.json beside it"),
    ({"quant_method": "mxfp4"}, "applies to experts weights, which this model does not have"),
])
def test_unknown_quantization_is_one_line_error(tmp_path, q, match):
    with pytest.raises(ConfigError, match=match) as err:
        checkpoint(tmp_path, "llama3-70b", quantization_config=q)
    assert "\n" not in str(err.value)


# --- NVFP4 and int4, and the names people type ---

def test_nvfp4_runs_at_fp4_peak_where_the_chip_has_one(small):
    """NVFP4 on B200: activations quantized to FP4 and every layer matmul at the FP4 peak (W4A4); on H100 (no FP4
    tensor cores) the same weights convert inside a bf16 matmul. Decode: 2 x 8 tokens x the layers' matmul params
    / 8 devices in FP4."""
    b200 = trace(small, "b200x8", "tp", batch=8, context=64, weights="fp4", find_max_batch=False)
    h100 = trace(small, "h100x8", "tp", batch=8, context=64, weights="fp4", find_max_batch=False)
    layer_matmuls = small.n_layers * (small.attn_params(0) + small.dense_mlp_params)
    fp4 = b200.phases["decode"].step.cost.flops_by_dtype
    assert fp4["float4"] == pytest.approx(2 * 8 * layer_matmuls / 8, rel=0.01)
    assert "float4" not in h100.phases["decode"].step.cost.flops_by_dtype
    assert any("W4A4" in n for n in b200.notes) and any("W4A16" in n for n in h100.notes)
    assert b200.model.weights == "nvfp4" and b200.model.bits("nvfp4") == 4 + 8 / 16


def test_dtype_spellings():
    cfg = get_model("llama3-8b").with_dtypes(weights="fp8", kv_cache="fp8_e4m3", activations="bf16")
    assert (cfg.weights, cfg.kv, cfg.dtype) == ("float8", "float8", "bfloat16")
    assert get_model("llama3-8b").with_dtypes(weights="fp4").weights == "nvfp4"
    assert get_model("llama3-8b").with_dtypes(weights="int4").bits("int4") == 4 + 20 / 128
    with pytest.raises(ConfigError, match="weight_dtype 'fp6' is not one of"):
        get_model("llama3-8b").with_dtypes(weights="fp6")


# --- the experts a decode step reaches ---

def test_expected_experts_reached_matches_a_seeded_simulation():
    """T tokens, each routed to k distinct experts of E uniformly at random: the expected share reached is
    1 - (1 - k/E)^T. Qwen3-Coder-480B (E = 160, k = 8) at 16 tokens: 1 - 0.95^16 = 0.5599, not min(1, 128/160) = 0.8."""
    rng = np.random.default_rng(0)
    for n_experts, k, tokens in ((160, 8, 16), (128, 8, 64), (8, 2, 3), (256, 8, 1)):
        trials = 4000
        reached = [len(np.unique(np.concatenate([rng.choice(n_experts, k, replace=False) for _ in range(tokens)])))
                   for _ in range(trials)]
        assert np.mean(reached) / n_experts == pytest.approx(reached_fraction(n_experts, k, tokens), rel=0.01)
    assert reached_fraction(160, 8, 16) == pytest.approx(1 - 0.95 ** 16) == pytest.approx(0.5599, abs=1e-4)
    assert reached_fraction(160, 8, 16, "worst") == 0.8


CODER = dataclasses.replace(get_model("qwen3-235b-a22b"), name="qwen3-coder-480b-a35b", hidden=6144, n_layers=62,
                            n_heads=96, n_kv_heads=8, n_experts=160, expert_ffn=2560)  # its config.json


def test_decode_reads_the_experts_its_tokens_reach():
    """Qwen3-Coder-480B, batch 16 on h200x8 under tp: each device holds 1/8 of every expert's hidden (62 layers x
    160 experts x 3 x 6144 x 2560 bf16 / 8 = 117.0 GB). The program reads one expert per row: 16 x 8 = 128 of 160
    (0.8 of them, 93.6 GB); uniform routing reaches 0.56 (65.5 GB), so the step reads 28.1 GB less: ~70 GB, not
    ~98 GB. --routing worst keeps the program's figure."""
    held = 62 * 160 * 3 * 6144 * 2560 * 2 / 8
    assert held == pytest.approx(117.0e9, rel=1e-3)
    uniform = trace(CODER, "h200x8", "tp", batch=16, context=1024, find_max_batch=False)
    worst = trace(CODER, "h200x8", "tp", batch=16, context=1024, find_max_batch=False, routing="worst")
    u, w = uniform.phases["decode"], worst.phases["decode"]
    assert u.step.expert_weight_bytes == pytest.approx(held, rel=1e-6)
    assert w.step.cost.expert_weight_bytes == pytest.approx(0.8 * held, rel=0.01)  # as compiled
    assert w.step.cost.hbm_bytes == w.step.cost.fused_hbm_bytes  # nothing charged beyond the fused kernels
    assert w.compiled_hbm_bytes == u.compiled_hbm_bytes
    f = 1 - 0.95 ** 16
    assert u.step.cost.expert_weight_bytes == pytest.approx(f * held, rel=1e-6)
    assert w.step.cost.hbm_bytes - u.step.cost.hbm_bytes == pytest.approx((0.8 - f) * held, rel=0.01)
    assert u.step.cost.hbm_bytes == pytest.approx(70e9, rel=0.03)
    assert u.analytic.hbm_bytes_per_device < w.analytic.hbm_bytes_per_device
    assert u.to_dict()["hbm_bytes_compiled"] == u.compiled_hbm_bytes


# --- prefill's activation traffic as serving kernels move it (tracer/read/fusion.py) ---

def prefill_on_one_gpu(cfg):
    return compile_steps(cfg, get_system("h100x1"), get_strategy("tp"), Workload(4, 256, 256),
                         phases=("prefill",))["prefill"].cost


def test_fused_dense_layers_match_a_hand_count(small):
    """Per layer, T = 4 x 256 tokens, D = 512, F = 2048, bf16 (2 bytes). The MLP runs as two kernels: gate and up
    merged with SiLU x up in their epilogue (read the normed x, the weights, write h) and down (read h, the weights,
    write its output). Against the program's own kernels the fused ones do not move: a second read of x in the first
    RMSNorm (T D); two more reads of the normed x by the k and v projections and q's write and re-read around rope
    (4 T D); the residual add's output read twice more and its norm's intermediate (2 T D); the normed x read again
    by up, and gate's and up's outputs written and read back (T D + 4 T F)."""
    t, d, f, layers = 4 * 256, small.hidden, small.ffn, small.n_layers
    cost = prefill_on_one_gpu(small)
    gate_up = (t * d + 2 * d * f + t * f) * 2
    down = (t * f + f * d + t * d) * 2
    assert cost.fused_by_scope()["mlp"].hbm_bytes == layers * (gate_up + down)  # 33,554,432
    saved = layers * (t * d + 4 * t * d + 2 * t * d + t * d + 4 * t * f) * 2  # 50,331,648
    assert cost.hbm_bytes - cost.fused_hbm_bytes == pytest.approx(saved, rel=0.01)


def test_fused_moe_matches_a_hand_count():
    """The routed experts of one MoE layer, T = 1024 tokens, k = 2 of E = 16, C = T k / E = 128 slots per expert,
    D = 512, expert hidden 1024, bf16: a fused MoE reads each token's row as it gathers it (T D), the gate and up
    weights, and writes h (E C F); the down kernel reads h and its weights and adds each slot's weighted row into its
    token (E C D writes). The dispatch buffer, the expert outputs and the zeros they are added into never reach
    HBM."""
    t, d, e, f = 1024, MOE.hidden, MOE.n_experts, MOE.expert_ffn
    c = t * MOE.n_active // e
    gate_up = (t * d + 2 * e * d * f + e * c * f) * 2
    down = (e * c * f + e * f * d + e * c * d) * 2  # 61,865,984 bytes per layer with gate_up
    cost = prefill_on_one_gpu(MOE)
    experts = cost.fused_by_scope()["experts"].hbm_bytes
    assert experts == pytest.approx((MOE.n_layers - MOE.first_dense) * (gate_up + down), rel=0.01)
    assert cost.fused_hbm_bytes < cost.hbm_bytes


def test_mixtral_prefill_is_compute_bound_on_fused_kernels():
    """Mixtral-8x7B prefill, batch 16 x 4096 on h100x8 (tp): 2 x 12.9B active x 65,536 tokens / 8 = 0.22 s of bf16
    compute; the fused kernels move far less than the 0.74 TB that would take at 3.35 TB/s. The program's own
    kernels are kept beside it (and priced with --fusion compiled)."""
    r = trace("mixtral-8x7b", "h100x8", "tp", batch=16, prompt=4096, context=4096, find_max_batch=False, ideal=True)
    pre = r.phases["prefill"]
    assert pre.time.bound == "compute"
    assert pre.time.compute_s == pytest.approx(0.22, rel=0.05)
    assert pre.step.cost.hbm_bytes < pre.compiled_hbm_bytes
    assert pre.to_dict()["hbm_bytes_compiled"] == pre.compiled_hbm_bytes
