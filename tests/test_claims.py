"""`tracer report claims`: each claim's verdict is computed from the data, so data where a claim fails reads
"does not hold"; the report writes its tables and plots."""

import dataclasses
import json
import math

import pytest

from tracer.cli import main
from tracer.reports import claims
from tracer.reports.claims import CONTEXTS, LARGE, MID, RACK, SERVER, ClaimRow
from tracer.reports.stats import ranks, spearman

# (model, active, total, d_model, KV bytes per token): the shape of the zoo, made up
MODELS = [("a", 3e9, 30e9, 2048, 50e3), ("b", 4e9, 120e9, 2880, 60e3), ("c", 8e9, 8e9, 4096, 130e3),
          ("d", 20e9, 230e9, 4096, 190e3), ("e", 35e9, 1000e9, 7168, 250e3), ("f", 70e9, 70e9, 8192, 330e3)]


def claim_row(**figures) -> ClaimRow:
    """A claims row with the given figures; the ones no verdict reads set to anything."""
    return ClaimRow(**{"prompt": 4096, "weights_dtype": "bfloat16", "kv_cache_dtype": "bfloat16", "compiler": "cpu",
                       "usd_per_chip_hour": 4.0, "usd_in": math.inf, **figures})


def rows(cost_in, cost_out, **extra) -> list[ClaimRow]:
    """Server rows at every context with input and output costs from the given functions of (active, total,
    context, d_model, kv)."""
    out = []
    for name, active, total, hidden, kv in MODELS:
        for context in CONTEXTS:
            out.append(claim_row(model=name, system=SERVER, context=context, active_params=active,
                                 total_params=total, hidden=hidden, kv_bytes_per_token=kv,
                                 usd_in=cost_in(active, total, context, hidden, kv),
                                 usd_out=cost_out(active, total, context, hidden, kv),
                                 max_batch=1000 * 8192 // context, kv_share=0.8, **extra))
    return out


def rack(ratio: float, kv_share: float, server_capped: bool = True) -> list[ClaimRow]:
    out = []
    for model, scale in ((MID, 1.0), (LARGE, ratio)):
        for context in CONTEXTS:
            base = {"model": model, "context": context, "active_params": 30e9, "total_params": 1e12,
                    "hidden": 7168, "kv_bytes_per_token": 70e3}
            out.append(claim_row(**base, system=RACK, usd_out=scale * context / 1e4, max_batch=500,
                                 kv_share=kv_share))
            grows = context / min(CONTEXTS) if server_capped else 1.0
            out.append(claim_row(**base, system=SERVER, usd_out=grows, kv_share=0.3, max_batch=int(400 / grows)))
    return out


def test_claims_hold_on_data_shaped_like_the_argument():
    data = rows(lambda a, t, c, d, kv: a / 1e9, lambda a, t, c, d, kv: t / 1e9 * c / 1e4)
    assert claims.claim_1(data).holds
    assert claims.claim_2(data).holds
    assert claims.claim_3(rack(ratio=1.1, kv_share=0.8)).holds
    assert claims.claim_4(rows(lambda *_: 1.0, lambda a, t, c, d, kv: kv * c)).holds


def test_claims_do_not_hold_on_data_where_they_fail():
    backwards = rows(lambda a, t, c, d, kv: t / 1e9, lambda a, t, c, d, kv: a / 1e9)  # input follows total
    v1, v2 = claims.claim_1(backwards), claims.claim_2(backwards)
    assert not v1.holds and v1.text == "does not hold" and "0 of" in v1.summary
    assert not v2.holds and "context^0.00" in "\n".join(v2.checks)  # output cost flat in context
    assert not claims.claim_3(rack(ratio=3.0, kv_share=0.8)).holds  # the 1T model costs 3x on the rack
    assert not claims.claim_3(rack(ratio=1.0, kv_share=0.3)).holds  # weights, not KV, dominate the bytes
    assert not claims.claim_3(rack(ratio=1.0, kv_share=0.8, server_capped=False)).holds
    shrinking = [dataclasses.replace(r, kv_bytes_per_token=1e6 / r.active_params)
                 for r in rows(lambda *_: 1.0, lambda a, *_: 1e10 / a)]
    v4 = claims.claim_4(shrinking)
    assert not v4.holds and "KV bytes per token -1.00" in v4.summary and "output cost -1.00" in v4.summary


def test_pairs_shown_beside_the_verdicts():
    """The hybrid pair (full against linear attention) under claim 2 and the sparse pair under claim 3: the second
    model's output cost over the first's at each context, by hand: 8k: 0.5 / 1.0 = x0.50, 128k: 1.0 / 4.0 = x0.25."""
    base, hybrid = claims.HYBRID_PAIR
    cost = {8192: (1.0, 0.5), 32768: (2.0, 0.75), 131072: (4.0, 1.0)}
    shapes = ((base, 30e9, 98e3, 0.9), (hybrid, 80e9, 25e3, 0.6))
    pair = [claim_row(model=m, system=SERVER, context=c, active_params=3e9, total_params=t, hidden=2048,
                      kv_bytes_per_token=kv, usd_out=cost[c][i], max_batch=100, kv_share=share)
            for c in CONTEXTS for i, (m, t, kv, share) in enumerate(shapes)]
    data = rows(lambda a, t, c, d, kv: a / 1e9, lambda a, t, c, d, kv: t / 1e9 * c / 1e4) + pair
    shown = [c for c in claims.claim_2(data).checks if "not part of the verdict" in c]
    assert len(shown) == 3 and f"{hybrid} / {base} output cost x0.50" in shown[0] and "x0.25" in shown[2]
    assert "KV share of decode bytes 60% against 90%" in shown[0]
    dense, sparse = claims.SPARSE_PAIR
    on_rack = [dataclasses.replace(r, model=m, system=RACK, usd_out=r.usd_out * f)
               for r in rack(ratio=1.1, kv_share=0.8) if r.model == MID and r.system == RACK
               for m, f in ((dense, 1.0), (sparse, 0.7))]
    three = claims.claim_3(rack(ratio=1.1, kv_share=0.8) + on_rack)
    assert three.holds and sum(f"{sparse} / {dense} output cost x0.70" in c for c in three.checks) == 3


def test_spearman_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert ranks([5, 1, 5, 2]) == [3.5, 1.0, 3.5, 2.0]


def _phase(usd: float, fits: bool = True) -> dict:
    """A stored phase: the given cost and fit, 60 of its 100 bytes KV cache, the rest set to anything."""
    return {"usd_per_mtok": usd, "time_s": {"step": 0.01, "compute": 0.001, "memory": 0.01, "comms": 0.0},
            "bound": "memory", "tokens_per_s_per_chip": 100.0, "hbm_bytes_per_device": 100.0,
            "comm_bytes_per_device": 0.0, "memory_per_device": {"fits": fits, "kv_cache": 60.0}}


def _record(model, system, strategy, context, usd_in, usd_out, max_batch, fits=True):
    return {"inputs": {"model": model, "system": system, "strategy": strategy, "batch": "max", "context": context},
            "cached": False,
            "result": {"model": model, "system": system, "strategy": strategy, "context": context, "prompt": 4096,
                       "total_params": 1e9, "active_params": 1e9, "weights_dtype": "bfloat16",
                       "kv_cache_dtype": "bfloat16", "compiler": "cpu", "usd_per_chip_hour": 4.0,
                       "max_batch": max_batch, "max_batch_note": "confirmed", "batch": max_batch,
                       "output_to_input_cost": usd_out / usd_in, "prefill": _phase(usd_in),
                       "decode": _phase(usd_out, fits)}}


def test_rows_keep_the_cheapest_strategy_that_fits():
    recs = [_record("llama3-8b", SERVER, "tp", 8192, 0.05, 0.5, 100),
            _record("llama3-8b", SERVER, "ep", 8192, 0.04, 0.1, 0, fits=False),  # cheaper, but nothing fits
            _record("llama3-8b", SERVER, "tp-dp", 8192, 0.06, 0.4, 120), {"inputs": {}, "error": "bad"}]
    (row,) = claims.claim_rows(recs)
    assert (row.strategy_in, row.usd_in) == ("ep", 0.04)
    assert (row.strategy_out, row.usd_out, row.max_batch, row.kv_share) == ("tp-dp", 0.4, 120, 0.6)
    assert row.hidden == 4096 and row.kv_bytes_per_token == 131072
    (nothing,) = claims.claim_rows([_record("llama3-8b", SERVER, "ep", 8192, 0.04, 0.1, 0, fits=False)])
    assert math.isinf(nothing.usd_out)


def test_report_from_a_sweeps_results(tmp_path, capsys):
    recs = []
    for model, usd in (("llama3-8b", 0.1), ("llama3-70b", 0.9), ("qwen3-30b-a3b", 0.05), ("gpt-oss-120b", 0.08)):
        for context in CONTEXTS:
            recs.append(_record(model, SERVER, "tp", context, usd, usd * context / 8192, 800 * 8192 // context))
    for model in (LARGE, MID):
        for context in CONTEXTS:
            recs.append(_record(model, RACK, "tp-ep", context, 0.3, context / 8192, 500))
            recs.append(_record(model, SERVER, "tp", context, 0.3, 4 * context / 8192, 64 * 8192 // context))
    data = tmp_path / "sweep.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert main(["report", "claims", "--from", str(data), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "claim 1:" in out and "claim 4:" in out
    text = (tmp_path / "out" / "claims.md").read_text()
    for n in range(1, 5):
        assert f"## Claim {n}:" in text and f"](claim-{n}.png)" in text
        assert (tmp_path / "out" / f"claim-{n}.png").read_bytes()[:4] == b"\x89PNG"
    assert "**Verdict:" in text and "prices" in text


def test_from_applies_to_claims_only(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--from", str(tmp_path)]) == 2
    assert "--from applies to `tracer report claims`" in capsys.readouterr().err
