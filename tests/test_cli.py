import json

import pytest

import tracer
from tracer.cli import main

ARGS = ["trace", "--model", "tiny", "--batch", "8", "--prompt", "16", "--context", "32"]


@pytest.mark.parametrize("argv, says", [
    (["trace", "--model", "nope"], "unknown model"),
    (["trace", "--system", "nope"], "unknown system"),
    (["trace", "--strategy", "nope"], "unknown strategy"),
    (["trace", "--batch", "0"], "--batch must be a positive integer"),
    (["trace", "--context", "-4"], "--context must be a positive integer"),
    (["trace", "--batch", "x"], "invalid batch"),
    (["trace", "--system", "gb200-nvl72", "--strategy", "tp"], "does not divide over tp=72"),
    (["trace", "--system", "gb200-nvl72", "--strategy", "tp-dp", "--batch", "64"],
     "nearest batches that work: 63 or 72"),
    (["trace", "--prompt", "100", "--context", "50"], "raise --context"),
    (["trace", "--model", "nowhere/config.json"], "not found"),
    (["trace", "--weights", "float3"], "is not one of"),
    (["models", "--model", "tests/data/nope.toml"], "not found"),
    (["trace", "--capacity-factor", "1.25"], "applies to mixture-of-experts models"),
    (["trace", "--model", "mixtral-8x7b", "--capacity-factor", "0"], "capacity_factor must be a finite number > 0"),
])
def test_errors_are_one_line_exit_2(capsys, argv, says):
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(main(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_json_has_every_key(capsys):
    assert main([*ARGS, "--json", "--no-max-batch"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("model", "system", "strategy", "compiler", "devices", "batch", "prompt", "context"):
        assert key in d
    for phase in ("prefill", "decode"):
        p = d[phase]
        for key in ("flops_per_device", "hbm_bytes_per_device", "comm_bytes_per_device", "collectives",
                    "memory_per_device", "time_s", "bound", "tokens_per_s_per_chip", "usd_per_mtok", "analytic"):
            assert key in p
        assert set(p["memory_per_device"]) >= {"weights", "kv_cache", "temp", "total", "capacity", "fits"}
        assert set(p["time_s"]) == {"compute", "memory", "comms", "kernels", "overhead", "step", "model"}
        assert set(p["analytic"]) >= {"flops_per_device", "hbm_bytes_per_device"}
        for c in p["collectives"]:
            assert set(c) >= {"op", "group_size", "count", "wire_bytes_per_device"}
    # USD per Mtok = price per chip-second / tokens per chip-second
    decode = d["decode"]
    per_chip_s = d["usd_per_chip_hour"] / 3600
    assert decode["usd_per_mtok"] == pytest.approx(per_chip_s / decode["tokens_per_s_per_chip"] * 1e6)
    assert decode["tokens_per_s_per_chip"] == pytest.approx(8 / decode["time_s"]["step"] / 8)


def test_listings(capsys):
    assert main(["models", "--json"]) == 0
    assert {m["name"] for m in json.loads(capsys.readouterr().out)} >= {"llama3-8b", "llama3-70b", "llama3-405b"}
    assert main(["systems"]) == 0
    assert "gb200-nvl72" in capsys.readouterr().out


def test_largest_batch(small):
    """At a 1M-token context each sequence holds K and V of 2 layers x 2^20 positions x one kv head (of 8) x 64 x
    2 bytes = 512 MiB per device, so the batch is capped near (80 GB - weights) / 512 MiB."""
    result = tracer.trace(model=small, system="h100x8", strategy="tp", batch=8, prompt=16, context=2**20)
    per_seq = 2 * 2 * 2**20 * 1 * 64 * 2
    ceiling = int((80e9 - result.phases["decode"].memory.weights) // per_seq)
    assert 0.9 * ceiling <= result.max_batch <= ceiling
    assert result.max_batch_note.startswith("from the decode step compiled at batch 8")
    # the estimate, compiled: it fits, and the next batch does not (what --confirm checks, and more)
    confirmed = tracer.trace(model=small, system="h100x8", strategy="tp", batch=8, prompt=16, context=2**20,
                             confirm=True)
    assert confirmed.max_batch == result.max_batch
    assert confirmed.max_batch_note.endswith("confirmed by compiling the decode step at this batch")
    over = tracer.trace(model=small, system="h100x8", strategy="tp", batch=result.max_batch + 1, prompt=16,
                        context=2**20, find_max_batch=False)
    assert not over.phases["decode"].memory.fits


def test_models_json_has_the_zoo(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"deepseek-v3", "kimi-k2", "gpt-oss-120b", "mixtral-8x7b", "qwen3-235b-a22b"} <= rows.keys()
    ds = rows["deepseek-v3"]
    assert ds["experts"] == "256/8/1" and ds["attention"] == "MLA" and ds["kv_bytes_per_token"] == 70_272
    assert {"total_params", "active_params", "weight_bytes", "kv_bytes_per_token"} <= ds.keys()
    assert rows["gpt-oss-120b"]["kv_window_cap_bytes"] == 4_718_592


def test_dtype_flags_on_every_command(capsys):
    assert main(["models", "--json", "--weights", "float8", "--kv-cache", "float8"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["llama3-70b"]["kv_bytes_per_token"] == 327_680 / 2
    assert main([*ARGS, "--json", "--no-max-batch", "--weights", "float8", "--kv-cache", "float8"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["weights_dtype"], d["kv_cache_dtype"]) == ("float8", "float8")
    assert d["decode"]["flops_by_dtype"]["float8"] > d["decode"]["flops_by_dtype"].get("bfloat16", 0)
    assert any("W8A8" in n for n in d["notes"])


def test_model_file(capsys):
    assert main(["trace", "--model", "tests/data/my-moe.toml", "--batch", "8", "--context", "64", "--json",
                 "--no-max-batch"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "my-moe" and d["decode"]["moe"]["kernel"] in ("rows", "grouped")

