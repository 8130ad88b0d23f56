"""Counted right (issue 12): tensor-parallel experts reduced once, quantized checkpoints, NVFP4 and int4, the experts a
decode step reaches, each against a figure derived by hand in the test."""

import pytest

from meshes.strategies import get_strategy
from meshes.systems import get_system
from models.config import get_model
from tracer.compile import Workload, compile_steps


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
