"""The trace's JSON object is a public format (`tracer trace --json`, sweep records and their cache): the typed
result writes exactly these keys, in this order, with the figures its attributes hold."""

import json

import pytest
from conftest import MOE

from tracer.api import trace

TOP = ["model", "system", "strategy", "compiler", "compiler_note", "devices", "mesh", "batch", "prompt", "context",
       "dtype", "weights_dtype", "experts_dtype", "vocab_dtype", "kv_cache_dtype", "total_params", "active_params",
       "routing", "fusion", "usd_per_chip_hour", "price_note", "time_model", "prefill", "decode", "max_batch",
       "max_batch_note", "output_to_input_cost", "notes"]
PHASE = ["flops_per_device", "flops_by_dtype", "hbm_bytes_per_device", "hbm_bytes_compiled",
         "expert_weight_bytes_read", "comm_bytes_per_device", "collectives", "memory_per_device",
         "kv_cache_read_per_device", "xla_memory_analysis", "time_s", "bound", "tokens_per_step",
         "tokens_per_s_per_chip", "usd_per_mtok", "analytic", "compile_s", "provenance", "moe",
         "breakdown"]  # "moe" only for a mixture-of-experts model
MEMORY = ["weights", "kv_cache", "outputs", "temp", "capacity", "total", "fits"]
TIME = ["compute", "memory", "comms", "kernels", "overhead", "step", "model"]  # kernels, overhead: achieved only
ANALYTIC = ["flops_per_device", "hbm_bytes_per_device", "flops_ratio", "hbm_bytes_ratio"]
COLLECTIVE = ["op", "dtype", "group_size", "count", "wire_bytes_per_device", "link", "time_s"]
PART = ["flops", "hbm_bytes", "wire_bytes", "comms_s", "compute_s", "memory_s"]
MOE_PLAN = ["kernel", "expert_slots", "replicated_experts", "token_groups", "tokens_per_group", "expert_shards",
            "groups_merged_across_expert_devices", "capacity_factor", "bins", "slots_per_bin",
            "slots_over_assignments", "expected_drop_fraction_uniform_routing"]


@pytest.mark.parametrize("model", ["tiny", MOE], ids=["dense", "moe"])
def test_to_dict_keys(model):
    r = trace(model, "h100x8", "tp", batch=8, prompt=64, context=128, find_max_batch=False)
    d = json.loads(json.dumps(r.to_dict()))  # plain JSON all the way down
    assert list(d) == TOP
    moe = model is MOE
    for name in ("prefill", "decode"):
        p = d[name]
        assert list(p) == [k for k in PHASE if moe or k != "moe"]
        assert list(p["memory_per_device"]) == MEMORY and list(p["time_s"]) == TIME
        assert list(p["analytic"]) == ANALYTIC
        assert p["collectives"] and all(list(c) == COLLECTIVE for c in p["collectives"])
        assert p["breakdown"] and all(list(v) == PART for v in p["breakdown"].values())
        if moe:
            assert list(p["moe"]) == MOE_PLAN


def test_to_dict_holds_the_typed_figures(small):
    r = trace(small, "h100x8", "tp", batch=8, context=64, find_max_batch=False)
    d = r.to_dict()
    dec = r.phases["decode"]
    assert d["devices"] == r.devices == 8
    assert d["output_to_input_cost"] == r.output_to_input_cost == dec.usd_per_mtok / r.phases["prefill"].usd_per_mtok
    assert d["decode"]["analytic"]["flops_ratio"] == dec.flops_ratio
    assert dec.flops_ratio == dec.step.cost.flops / dec.analytic.flops_per_device
    assert d["decode"]["collectives"][0]["time_s"] == dec.collectives[0].time_s
    assert d["decode"]["breakdown"] == {b.part: b.to_dict() for b in dec.breakdown}
    assert sum(b.flops for b in dec.breakdown) == pytest.approx(dec.step.cost.flops)
