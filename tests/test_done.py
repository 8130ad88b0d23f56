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
