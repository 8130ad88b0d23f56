"""The issue's acceptance run at real size: Llama 3 70B on an 8 x H100 server, tensor parallel."""

import pytest

import tracer


@pytest.fixture(scope="module")
def llama70b():
    return tracer.trace(model="llama3-70b", system="h100x8", strategy="tp", batch=64, prompt=8192, context=8192,
                        find_max_batch=False).to_dict()


def test_decode_weights_per_device(llama70b):
    # 70.6B parameters in bf16 over 8 devices (norm scales replicated: 161 x 8192, negligible)
    assert llama70b["decode"]["memory_per_device"]["weights"] == pytest.approx(70.6e9 * 2 / 8, rel=0.01)


def test_decode_flops_follow_the_formula(llama70b):
    assert llama70b["decode"]["analytic"]["flops_ratio"] == pytest.approx(1, abs=0.03)


def test_output_tokens_cost_more_than_input(llama70b):
    assert llama70b["decode"]["bound"] == "memory" and llama70b["prefill"]["bound"] == "compute"
    assert llama70b["decode"]["usd_per_mtok"] > llama70b["prefill"]["usd_per_mtok"]


# --- the model zoo's acceptance runs: DeepSeek-V3 on a GB200 NVL72, gpt-oss-120b on an 8 x H100 server ---
@pytest.fixture(scope="module")
def deepseek():
    return tracer.trace(model="deepseek-v3", system="gb200-nvl72", strategy="tp-dp", batch=288, context=8192,
                        find_max_batch=False).to_dict()


@pytest.fixture(scope="module")
def gpt_oss():
    # experts spread over the node (tp-ep): under plain tp, MXFP4's 90 scale blocks per expert row do not split 8
    # ways and are held whole on every device (14% more bytes per decode step)
    return tracer.trace(model="gpt-oss-120b", system="h100x8", strategy="tp-ep", batch=64, context=8192,
                        find_max_batch=False).to_dict()


def test_deepseek_compiles_on_72_devices(deepseek):
    assert deepseek["devices"] == 72 and deepseek["mesh"] == {"dp": 9, "tp": 8}
    assert deepseek["total_params"] == pytest.approx(671e9, rel=0.015)
    # 61 layers: every attention layer's all-reduce runs 61 times per step, plus the 3 dense MLPs'
    assert sum(c["count"] for c in deepseek["decode"]["collectives"] if c["op"] == "all-reduce") >= 61 + 3 + 58


def test_deepseek_decode_flops_follow_active_parameters(deepseek):
    assert deepseek["decode"]["analytic"]["flops_ratio"] == pytest.approx(1, abs=0.05)
    assert deepseek["decode"]["moe"]["kernel"] == "rows"  # 32 tokens x 8 experts over 8 shards of 32 experts


def test_deepseek_weights_per_device_follow_total_parameters(deepseek):
    # fp8 matmul weights (the embedding and LM head bf16) over the 8 devices of a tensor-parallel group, except
    # what has no axis to split and sits whole on each of them: MLA's down-projections into the latents (fp8,
    # 7168 x (1536 + 512 + 64) per layer) and the routers (bf16, 7168 x 256 in the 58 MoE layers)
    cfg = tracer.get_model("deepseek-v3")
    replicated = 61 * 7168 * (1536 + 512 + 64) * 1 + 58 * 7168 * 256 * 2
    want = (cfg.weight_bytes - replicated) / 8 + replicated
    assert deepseek["decode"]["memory_per_device"]["weights"] == pytest.approx(want, rel=0.002)
    assert deepseek["decode"]["analytic"]["hbm_bytes_ratio"] == pytest.approx(1, abs=0.1)


@pytest.mark.parametrize("run", ["deepseek", "gpt_oss"])
def test_input_follows_active_output_follows_total_and_kv(run, request):
    d = request.getfixturevalue(run)
    assert d["prefill"]["analytic"]["flops_ratio"] == pytest.approx(1, abs=0.05)  # 2 x active x tokens + attention
    assert d["decode"]["analytic"]["hbm_bytes_ratio"] == pytest.approx(1, abs=0.1)  # total weights + KV cache
    assert d["decode"]["bound"] == "memory" and d["output_to_input_cost"] > 1


def test_deepseek_in_bf16_does_not_fit_an_h200_server():
    """671B parameters in bf16 over 8 GPUs: 169.6 GB each against 141 GB of HBM (fp8: 85 GB, batch 97 at 8k)."""
    d = tracer.trace(model="deepseek-v3", system="h200x8", strategy="tp", batch=8, context=8192,
                     weights="bfloat16").to_dict()
    assert d["max_batch"] == 0 and "weights alone" in d["max_batch_note"]
    assert d["decode"]["memory_per_device"]["weights"] == pytest.approx(169.6e9, rel=0.01)
