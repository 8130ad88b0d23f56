"""Strategies, topologies and comparisons: the collectives each layout compiles to against the formulas, link
pricing across nodes, strategy files, and batch selection."""

import pytest
from conftest import MOE

from meshes.strategies import get_strategy
from meshes.systems import get_system
from tracer.compare import compare
from tracer.compile import Workload, compile_steps
from tracer.errors import ConfigError
from tracer.rates import rates_for
from tracer.read import Collective
from tracer.roofline import analytic, splits
from tracer.timing import collective_time, link

WORK = Workload(batch=8, prompt=32, context=64)


def collectives(cfg, strategy, phase="decode"):
    step = compile_steps(cfg, get_system("h100x8"), get_strategy(strategy), WORK, phases=(phase,))[phase]
    return step.cost.collectives


def test_tp_all_reduces_each_layer_output(small):
    """Megatron TP: one all-reduce after attention and one after the MLP per layer, plus the vocab-sharded
    embedding lookup's; each of B x D bf16 values, ring all-reduce 2 (n-1)/n x V."""
    (c,) = collectives(small, "tp")
    assert (c.op, c.group_size, c.count) == ("all-reduce", 8, 2 * small.n_layers + 1)
    volume = WORK.batch * small.hidden * 2
    assert c.wire_bytes_per_device == pytest.approx(c.count * 2 * 7 / 8 * volume, rel=0.02)


def test_fsdp_gathers_every_weight_each_step(small):
    """FSDP decode: every weight with a hidden axis is all-gathered where it is used: (n-1)/n of them per device."""
    cs = collectives(small, "fsdp")
    gathered = sum(c.wire_bytes_per_device for c in cs if c.op == "all-gather")
    layer = small.attn_params(0) + small.dense_mlp_params
    weights = (small.n_layers * layer + small.head_params) * 2  # bf16; the embedding table is looked up instead
    assert gathered == pytest.approx(7 / 8 * weights, rel=0.02)
    assert gathered > 0.99 * sum(c.wire_bytes_per_device for c in cs)


def test_ep_moves_tokens_by_all_to_all():
    """EP prefill: each MoE layer sends its tokens' slots to the experts' devices and back: two all-to-alls of the
    device's [E x capacity x D] dispatch buffer (32 tokens x 2 of 16 experts: capacity 4), nothing else."""
    cs = collectives(MOE, "ep", "prefill")
    assert {c.op for c in cs} == {"all-to-all"}
    moe_layers = MOE.n_layers - MOE.first_dense
    buffer = MOE.n_experts * 4 * MOE.hidden * 2
    assert sum(c.count for c in cs) == 2 * moe_layers
    assert sum(c.wire_bytes_per_device for c in cs) == pytest.approx(2 * moe_layers * 7 / 8 * buffer, rel=0.02)


def test_ep_decode_of_one_token_per_device_gathers_tokens():
    """EP decode with one token per device: per-device groups would round each expert's slots up to one (16 slots
    for 2 assignments, on 8 devices); the groups merge instead: the 8 tokens are gathered onto every device
    (B x D bf16), each computes its experts' slots, and the outputs are summed back (an all-reduce of B x D)."""
    cs = collectives(MOE, "ep")
    moe_layers = MOE.n_layers - MOE.first_dense
    tokens = WORK.batch * MOE.hidden * 2
    gather = next(c for c in cs if c.op == "all-gather" and c.bytes == tokens)
    assert (gather.count, gather.wire_bytes_per_device) == (moe_layers, pytest.approx(moe_layers * 7 / 8 * tokens))
    summed = next(c for c in cs if c.op == "all-reduce")
    assert summed.count == moe_layers and summed.bytes == tokens  # the empty slot's row is dropped before it


def test_tp_experts_all_reduce_like_an_mlp():
    """Tensor-parallel experts: each device combines its partial expert outputs (weighted, with the shared expert's)
    into its tokens, then one all-reduce per MoE layer of the B x D outputs, as a dense MLP's: 8 tokens x 512 bf16."""
    cs = collectives(MOE, "tp")
    assert {c.op for c in cs} == {"all-reduce"}
    moe = dict(cs[0].scopes)["moe dispatch"]
    assert moe == pytest.approx((MOE.n_layers - MOE.first_dense) * 2 * 7 / 8 * WORK.batch * MOE.hidden * 2)


def test_tp_ep_all_reduces_attention_and_combines_experts(small):
    """tp-ep on one node: attention, the dense MLP and the embedding lookup all-reduce their B x P x D outputs over
    the tensor-parallel group; each device computes its experts' slots of the (replicated) tokens and adds them,
    weighted, into its tokens together with its part of the shared expert: one all-reduce per MoE layer of the same
    B x P x D. Nothing gathers the dispatch buffer."""
    cs = collectives(MOE, "tp-ep", "prefill")
    assert {c.op for c in cs} - {"collective-permute"} == {"all-reduce"}
    assert sum(c.wire_bytes_per_device for c in cs if c.op == "collective-permute") < 100  # top-k's indices
    tokens = WORK.batch * WORK.prompt
    (reduce,) = (c for c in cs if c.op == "all-reduce")
    moe_layers = MOE.n_layers - MOE.first_dense
    assert (reduce.count, reduce.bytes) == (MOE.n_layers + MOE.first_dense + 1 + moe_layers, tokens * MOE.hidden * 2)
    assert dict(reduce.scopes)["moe dispatch"] == pytest.approx(moe_layers * 2 * 7 / 8 * reduce.bytes)


def test_sp_prefill_gathers_keys_and_values(small):
    """Context parallelism: each device keeps its stripe of the prompt (queries, MLP, cache writes) and all-gathers
    every layer's keys and values: (n-1)/n x B x P x K x H x 2 bytes each. The rest (the last position's hidden
    state for the LM head, token ids) is under 5%."""
    cs = collectives(small, "sp", "prefill")
    gathered = sum(c.wire_bytes_per_device for c in cs if c.op == "all-gather")
    kv = WORK.batch * WORK.prompt * small.n_kv_heads * small.head_dim * 2
    assert gathered == pytest.approx(small.n_layers * 2 * 7 / 8 * kv, rel=0.02)
    assert gathered > 0.95 * sum(c.wire_bytes_per_device for c in cs)


def test_sp_decode_combines_partial_attention(small):
    """Decode over a cache split along its positions (flash decoding across devices): each device attends over its
    own slots; per layer the softmax's max and sum ([B, N] f32, counted at bf16 width) and the partial outputs
    (B x N x H) are all-reduced. Weights are whole on every device, the cache is 1/8 each: bytes and FLOPs as the
    analytic estimate for that layout."""
    step = compile_steps(small, get_system("h100x8"), get_strategy("sp"), WORK, phases=("decode",))["decode"]
    cs = step.cost.collectives
    assert {c.op for c in cs} == {"all-reduce"}
    stats, out = sorted(cs, key=lambda c: c.bytes)
    heads = WORK.batch * small.n_heads
    assert (stats.count, stats.bytes) == (2 * small.n_layers, heads * 2)
    assert (out.count, out.bytes) == (small.n_layers, heads * small.head_dim * 2)
    assert out.wire_bytes_per_device == pytest.approx(small.n_layers * 2 * 7 / 8 * out.bytes)
    assert step.kv_cache_bytes == pytest.approx(WORK.batch * small.kv_bytes(WORK.context) / 8)
    want = analytic(small, WORK, "decode", splits(get_strategy("sp"), {"dp": 1, "sp": 8}))
    assert step.cost.flops == pytest.approx(want.flops_per_device, rel=0.02)
    assert step.cost.hbm_bytes == pytest.approx(want.hbm_bytes_per_device, rel=0.06)


def test_links_by_the_groups_they_span():
    system = get_system("h100x8*2")
    assert system.n_chips == 16 and system.domain_size == 8
    inside = Collective("all-reduce", 8, (tuple(range(8)), tuple(range(8, 16))), 1, 1e6, 1.75e6)
    across = Collective("all-reduce", 2, tuple((i, i + 8) for i in range(8)), 1, 1e6, 1e6)
    assert link(system, inside) == "scale-up" and link(system, across) == "scale-out"
    chip = system.chip
    assert collective_time(system, inside) == pytest.approx(1.75e6 / chip.scale_up_bw + 14 * chip.scale_up_latency)
    assert collective_time(system, across) == pytest.approx(1e6 / chip.scale_out_bw + 2 * chip.scale_out_latency)
    a2a = Collective("all-to-all", 16, (tuple(range(16)),), 1, 16e6, 15e6)  # 7 of 15 peers in the node
    want = max(7e6 / chip.scale_up_bw, 8e6 / chip.scale_out_bw) + chip.scale_out_latency
    assert collective_time(system, a2a) == pytest.approx(want)


def test_racks_join_too():
    racks = get_system("gb200-nvl72*2")
    assert (racks.n_chips, racks.domain_size, racks.node_of(71), racks.node_of(72)) == (144, 72, 0, 1)


@pytest.mark.parametrize("name, says", [("h100x8*0", "positive integer"), ("h100x1*2", "only multi-GPU nodes"),
                                        ("x100*2", "unknown system")])
def test_cluster_names(name, says):
    with pytest.raises(ConfigError, match=says):
        get_system(name)


def write(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def test_strategy_file(tmp_path):
    s = get_strategy(write(tmp_path, '[mesh]\ndp = "rest"\ntp = 4\n[rules]\nbatch = "dp"\nheads = "tp"\n'))
    assert s.name == "s" and s.mesh_shape(get_system("h100x8")) == {"dp": 2, "tp": 4}
    assert get_strategy("meshes/examples/ep.toml").rules == get_strategy("ep").rules
    s = get_strategy(write(tmp_path, 'overlap = ["all-to-all"]\n[mesh]\nep = "rest"\n[rules]\nbatch = "ep"\n'
                                     'experts = "ep"\n'))
    assert s.overlap == ("all-to-all",) and s.mesh_shape(get_system("h100x8*4")) == {"ep": 32}


@pytest.mark.parametrize("text, says", [
    ('[mesh]\ntp = "domain"\n[rules]\nbatch = "tp"\nheads = "tp"\n', "map twice onto one mesh axis"),
    ('[mesh]\ntp = 3\n[rules]\nheads = "tp"\n', "do not divide the 8 chips"),
    ('[mesh]\ntp = "domain"\n[rules]\nhedas = "tp"\n', "not a logical axis"),
    ('[mesh]\ntp = "domain"\n[rules]\nheads = "xp"\n', "names no mesh axis"),
    ('[mesh]\ntp = "half"\n[rules]\nheads = "tp"\n', "a size is a positive integer"),
    ('[rules]\nheads = "tp"\n', r"needs a non-empty \[mesh\] table and a \[rules\] table"),
    ('[mesh\n', "not valid TOML"),
    ('overlap = ["all-2-all"]\n[mesh]\ntp = "domain"\n[rules]\nheads = "tp"\n', "a list of collectives two"),
])
def test_strategy_file_errors(tmp_path, text, says):
    with pytest.raises(ConfigError, match=says):
        get_strategy(write(tmp_path, text)).mesh_shape(get_system("h100x8"))


def test_compare_batch_max_and_latency_target(small):
    (fit,) = compare(small, ["h100x8"], ["tp"], batch="max", context=4096)
    assert fit.result.work.batch == fit.max_batch > 8
    step = fit.result.phases["decode"].time.step_s
    (fast,) = compare(small, ["h100x8"], ["tp"], tpot_ms=step * 1e3 * 0.99, context=4096)
    assert fast.result.work.batch < fit.max_batch
    assert fast.result.phases["decode"].time.step_s <= step * 0.99
    err = compare(small, ["h100x8"], ["tp", "nope"], batch=8, context=4096)[1]
    assert err.result is None and "unknown strategy" in err.error


def test_wide_ep_spreads_experts_over_every_node():
    """wide-ep on two 8-GPU nodes: one expert axis of all 16 GPUs, each serving its own sequences (16 prompts of 32
    tokens, one a device). Each MoE layer's dispatch crosses the nodes (its groups span both: the scale-out
    network), and being all-to-alls, they run under two micro-batches' overlap: a step counts only what of them
    outlasts its kernels (tracer.timing), where `ep` (experts over one node, 2 replicas) counts all of its own."""
    from tracer.api import trace

    system = get_system("h100x8*2")
    assert get_strategy("wide-ep").mesh_shape(system) == {"ep": 16}
    wide = trace(MOE, "h100x8*2", "wide-ep", batch=16, prompt=32, context=64, find_max_batch=False)
    p = wide.phases["prefill"]
    a2a = [c for c in p.step.cost.collectives if c.op == "all-to-all"]
    assert a2a and all(c.group_size == 16 and link(system, c) == "scale-out" for c in a2a)
    rates = rates_for(system.chip)[0]
    hidden = sum(collective_time(system, c, rates) for c in a2a)
    rest = sum(collective_time(system, c, rates) for c in p.step.cost.collectives if c.op != "all-to-all")
    assert p.time.hidden_s == pytest.approx(hidden) and hidden > 0
    assert p.time.comms_s == pytest.approx(rest + max(hidden - p.time.kernels_s, 0.0))
