"""`tracer serving` (tracer.serving): a workload's steady state under continuous batching, against the same
arithmetic done here by hand from steps traced on their own."""

import json
import math
import re

import pytest

from tracer.api import trace
from tracer.cli import main
from tracer.serving import serving

ISL, OSL, N = 64, 64, 8


@pytest.fixture(scope="module")
def tiny():
    return serving("tiny", "h100x1", "tp", ISL, OSL, batch=N, ideal=True)


def test_steady_state_by_hand(tiny):
    """tiny on one H100, 8 sequences of 64 + 64 tokens. Their contexts spread over 64..128, mean 96: the iteration's
    decode is the decode step at batch 8 and context 96 (derived from 64 and 128; here traced at 96). 8 / 64 of a
    sequence ends each iteration, so 0.125 prompts of 64 tokens are prefilled per iteration (one device, one replica).
    The iteration is one step over both: compute added, memory added less the prefill's weight reads (decode streams
    the weights already), communication added."""
    d = trace("tiny", "h100x1", "tp", batch=N, prompt=ISL, context=96, find_max_batch=False,
              ideal=True).phases["decode"]
    p = trace("tiny", "h100x1", "tp", batch=1, prompt=ISL, context=ISL, find_max_batch=False,
              ideal=True).phases["prefill"]
    assert tiny.decode_s == pytest.approx(d.time.step_s, rel=0.005)
    f = N / OSL
    weights_s = p.step.cost.total.argument_bytes / 3.35e12  # H100 SXM HBM3: 3.35 TB/s
    extra = p.time.memory_s - weights_s
    both = max(d.time.compute_s + f * p.time.compute_s, d.time.memory_s + f * extra) + d.time.comms_s \
        + f * p.time.comms_s
    alone = max(f * p.time.compute_s, weights_s + f * extra) + f * p.time.comms_s
    assert tiny.iteration_s == pytest.approx(both, rel=0.005)
    assert tiny.prefill_s == pytest.approx(alone, rel=0.005)
    share = (d.time.step_s + both - alone) / 2  # Shapley: the average of decode's two marginal times
    assert tiny.output_share_s == pytest.approx(share, rel=0.005)
    # per iteration: 8 output tokens, 8 x 64 / 64 = 8 prompt tokens; $2.95 per chip-hour (h100x1's dated default)
    usd_per_s = 2.95 / 3600
    assert tiny.tpot_s == tiny.iteration_s
    assert tiny.output_tokens_per_s == pytest.approx(8 / both, rel=0.005)
    assert tiny.input_tokens_per_s == pytest.approx(8 / both, rel=0.005)
    assert tiny.requests_per_s == pytest.approx(8 / 64 / both, rel=0.005)
    assert tiny.usd_per_mtok_output == pytest.approx(usd_per_s * share / 8 * 1e6, rel=0.005)
    assert tiny.usd_per_mtok_input == pytest.approx(usd_per_s * (both - share) / 8 * 1e6, rel=0.005)
    assert tiny.usd_per_mtok_blended == pytest.approx(usd_per_s * both / 16 * 1e6, rel=0.005)
    # the prompt fits one chunk (8192 - 8 tokens left by the decode): its first token after one iteration
    assert tiny.ttft_s == tiny.iteration_s and tiny.e2e_s == pytest.approx(64 * tiny.iteration_s)
    # KV: 2 (K, V) x 4 layers x 8 kv heads x 32 head_dim x 2 bytes x 96 tokens a sequence
    assert tiny.kv_bytes_per_sequence_per_device == pytest.approx(2 * 4 * 8 * 32 * 2 * 96)


def test_achieved_iteration_by_hand():
    """At the achieved rates (the default), the same workload: the iteration is the kernels of decode and a prefill
    share run as one forward pass (tracer.timing.iteration_kernels_s, tested by hand in test_timing), then the
    collectives of both and one overhead, the host's of the N sequences one scheduler runs (2.3 ms + N x 5.4 us); the
    decode step alone is its own step time."""
    from meshes.systems import get_system
    from tracer.rates import rates_for
    from tracer.timing import iteration_kernels_s

    got = serving("tiny", "h100x1", "tp", ISL, OSL, batch=N)
    d = trace("tiny", "h100x1", "tp", batch=N, prompt=ISL, context=96, find_max_batch=False).phases["decode"]
    p = trace("tiny", "h100x1", "tp", batch=1, prompt=ISL, context=ISL, find_max_batch=False).phases["prefill"]
    system = get_system("h100x1")
    rates, words = rates_for(system.chip)
    f = N / OSL
    both = iteration_kernels_s(d.step, p.step, f, system, rates) + d.time.comms_s + f * p.time.comms_s \
        + rates.overhead_s + N * rates.per_sequence_s
    assert rates.overhead(N) == pytest.approx(2.3e-3 + N * 5.4e-6) and d.time.overhead_s == rates.overhead(N)
    assert d.time.model == "achieved" and got.decode_s == pytest.approx(d.time.step_s, rel=0.005)
    assert got.iteration_s == pytest.approx(both, rel=0.005)
    assert f"step times: {words}" in got.notes
    ideal = serving("tiny", "h100x1", "tp", ISL, OSL, batch=N, ideal=True)
    assert got.iteration_s > ideal.iteration_s  # nothing runs faster than its peak


def test_concurrency_from_the_budget_and_from_the_kv_pool():
    """max: the token budget caps tiny (8192 / (1 + 64/64) = 4096 a replica); the KV pool caps Llama 3 8B at 8k in,
    8k out on one H100: 0.9 x 80 GB - 16.06 GB of bf16 weights = 55.9 GB, over 2 x 32 x 8 x 128 x 2 B = 128 KiB a
    token x 12,000 tokens = 1.573 GB a sequence: 35 (fewer where temporaries take a sequence's room)."""
    small = serving("tiny", "h100x1", "tp", ISL, OSL)
    assert small.concurrency == 4096 and "token budget" in small.concurrency_note
    big = serving("llama3-8b", "h100x1", "tp", 8000, 8000)
    per_seq = 2 * 32 * 8 * 128 * 2 * 12000
    assert big.kv_bytes_per_sequence_per_device == pytest.approx(per_seq)
    assert 33 <= big.concurrency <= math.floor(big.kv_pool_bytes_per_device / per_seq) == 35
    assert "KV pool" in big.concurrency_note


def test_cli_table_json_and_bad_input(capsys):
    assert main(["serving", "--model", "tiny", "--system", "h100x1", "--isl", "64", "--osl", "64", "--batch", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["concurrency"] == 8 and {"ttft_s", "tpot_s", "usd_per_mtok_input", "usd_per_mtok_output",
                                        "output_tokens_per_s_per_chip", "compiled"} <= out.keys()
    assert main(["serving", "--model", "tiny", "--system", "h100x1", "--isl", "64", "--osl", "64", "--batch", "8"]) == 0
    assert "TTFT / TPOT" in capsys.readouterr().out
    # a given concurrency where the weights fill --kv-fraction of HBM (141 B of it): priced, and the note says so
    assert main(["serving", "--model", "tiny", "--system", "h100x1", "--isl", "64", "--osl", "64", "--batch", "8",
                 "--kv-fraction", "1e-9"]) == 0
    assert "the weights leave none in --kv-fraction 1e-09 of HBM: raise it" in capsys.readouterr().out
    for argv, says in ((["--isl", "0"], "--isl must be a positive integer"),
                       (["--kv-fraction", "1.5"], "--kv-fraction must be a number in (0, 1]"),
                       (["--max-num-tokens", "1"], "cannot hold one sequence"),
                       (["--batch", "8", "--tpot-ms", "5"], "choose the concurrency themselves"),
                       (["--ttft-ms", "-1"], "--ttft-ms must be a finite number of milliseconds > 0"),
                       (["--batch", "7", "--strategy", "tp-dp", "--system", "h100x8*2"], "does not divide"),
                       (["--kv-fraction", "1e-9"], "fits the KV pool (0.0 GB per device)"),  # 141 B, less weights
                       (["--model", "llama3-70b", "--system", "h100x1", "--batch", "8"], "exceed the H100 SXM")):
        assert main(["serving", "--model", "tiny", *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_latency_targets_choose_the_concurrency():
    """Llama 3 8B FP8 on one H200, 1000 in, 1000 out, TPOT under 20 ms: the most sequences that meet it, read off
    decode steps derived between 8 and the most the KV pool holds, then compiled at the answer; one more sequence
    (compiled on its own) misses it. TPOT grows with the sequences (each adds its KV cache to every step's reads)."""
    kw = dict(weights="float8", kv_cache="float8")
    chosen = serving("llama3-8b", "h200x1", "tp", 1000, 1000, tpot_ms=20, **kw)
    # the answer compiled may miss by a little what the derived steps read (a kernel's time is not affine in its
    # figures where it meets its floor), and says so
    assert chosen.tpot_s <= 0.020 * 1.01 and "the most that meet TPOT 20 ms; read off decode steps derived" in \
        chosen.concurrency_note
    assert chosen.tpot_s <= 0.020 or "miss by a little" in chosen.concurrency_note
    assert serving("llama3-8b", "h200x1", "tp", 1000, 1000, batch=chosen.concurrency + 1, **kw).tpot_s > 0.020
    loose = serving("llama3-8b", "h200x1", "tp", 1000, 1000, ttft_ms=10_000, **kw)  # every concurrency meets it
    assert loose.concurrency == serving("llama3-8b", "h200x1", "tp", 1000, 1000, **kw).concurrency
    tight = serving("tiny", "h100x1", "tp", ISL, OSL, tpot_ms=1e-6)
    assert tight.concurrency == 1 and tight.concurrency_note.startswith("no concurrency meets TPOT 1e-06 ms")


def test_systems_of_any_size_in_one_domain():
    """CHIPxN: N chips of one NVLink domain at the whole system's per-chip price (h100x2, b200x4, gb200x4), as
    published benchmarks run them; beyond the domain, nodes join as NODE*N."""
    from base.inputs import ConfigError
    from meshes.systems import get_system

    b = get_system("b200x4")
    assert (b.n_chips, b.domain_size, b.chip.name, b.usd_per_chip_hour) == (4, 4, "B200", 5.50)
    assert get_system("gb200x72").n_chips == 72
    for name, says in (("h100x9", "1 to 8 chips in one NVLink domain; for more, join nodes: h100x8*N"),
                       ("gb200x0", "1 to 72 chips"), ("h100x4*2", "unknown system")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            get_system(name)
    assert serving("tiny", "h100x2", "tp", ISL, OSL, batch=N).chips == 2


def test_serving_sweep_derives_and_compiles_its_fronts(monkeypatch):
    """tracer sweep --isls --osls: Llama 3 8B on two systems x 5 concurrencies of one workload. The decode steps come
    from the trace sweep's derivation (corners 16 and 64 sequences at contexts 512 and 1024, one held out); every
    point on the workload's Pareto front of tokens/s per user against USD per million output tokens is compiled
    (those a compiled neighbour's small move puts on it too); a derived point off the front agrees with
    tracer.serving compiling it itself within 3.5%. Its figures are exact (tracer.derive) and its time is linear in
    them, launches included (tracer.timing); what is left is the CPU program's count of small kernels, which is not
    linear in the batch (Llama 3 8B, decode at context 768: 842 launches a step at batch 16, 906 at 24 to 64; a
    step derived between 16 and 64 has 853 at 24, 0.16 ms short of the 9.38 ms compiled on an H100, 1.7%). The
    output price pays the Shapley share (decode alone + iteration - prefill alone) / 2 = (9.38 + 9.45 - 8.31) / 2 =
    5.26 ms, and both its decode terms are 0.16 ms short: 5.10 ms, 3.0% (the margin was 3% while the overhead was
    4.0 ms a step, which made every step 1.35 ms longer)."""
    from tracer import sweep
    from tracer.serving_sweep import compute, on_fronts, serving_grid, valid

    monkeypatch.setenv("TRACER_CACHE", "")
    points = serving_grid(model=["llama3-8b"], system=["h100x1", "h200x1"], strategy=["tp"], isl=[512], osl=[512],
                          batch=[16, 24, 32, 48, 64])
    records = sweep.run(points, max_batch=False, progress=None, compute=compute, valid=valid)
    assert all("result" in r for r in records) and len(records) == 10
    how = {(r["inputs"]["system"], r["inputs"]["batch"]): r["result"]["compiled"][0] for r in records}
    assert any("derived from" in h for h in how.values())
    front = [records[k] for k in on_fronts([(r["inputs"], r["result"]) for r in records])]
    assert front and all("derived" not in r["result"]["compiled"][0] for r in front)
    derived = next(r for r in records if "derived from" in r["result"]["compiled"][0])
    alone = serving("llama3-8b", derived["inputs"]["system"], "tp", 512, 512, batch=derived["inputs"]["batch"])
    for key in ("tpot_s", "usd_per_mtok_output", "usd_per_mtok_input", "output_tokens_per_s"):
        assert derived["result"][key] == pytest.approx(getattr(alone, key), rel=0.035)


def test_serving_sweep_cli(tmp_path, monkeypatch, capsys):
    from tracer.sweep_records import SERVING_COLUMNS

    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    flags = ["sweep", "--models", "tiny", "--systems", "h100x1", "--strategies", "tp", "--isls", "32", "--osls", "32",
             "--batches", "8,max", "--out", str(tmp_path / "out")]
    assert main(flags) == 0
    rows = (tmp_path / "out" / "sweep.csv").read_text().splitlines()
    assert rows[0] == ",".join(SERVING_COLUMNS) and len(rows) == 3
    assert main([*flags, "--overwrite"]) == 0 and "2 from the cache" in capsys.readouterr().out
    for extra, says in ((["--contexts", "64"], "a serving sweep has no axis context"),
                        (["--screen", "0.1"], "--screen screens trace sweeps")):
        assert main([*flags, *extra, "--overwrite"]) == 2
        assert says in capsys.readouterr().err
    # the report draws throughput per GPU against tokens/s per user, one line per system and strategy
    assert main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "interactivity_0.png").exists() and "tiny: 32 tokens in, 32 out" in report
    table = [line for line in report.splitlines() if line.startswith("| h100x1")]
    assert len(table) == 2  # batch 8 and max
    per_user = [float(line.split("|")[4]) for line in table]
    assert per_user[0] > per_user[1]  # fewer sequences, each faster


def test_serving_sweep_adding_a_concurrency_compiles_only_its_front(model_file, counted, tmp_path, monkeypatch):
    """A second serving sweep with one more concurrency inside the first's range: its decode steps come from the
    first sweep's cached corners; the one compile is the new point's own (on its workload's front, at its mean
    context 32 + 32 / 2 = 48)."""
    from tracer import sweep
    from tracer.serving_sweep import compute, serving_grid, valid

    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))

    def grid(batches):
        return serving_grid(model=[model_file], system=["h100x1"], strategy=["tp"], isl=[32], osl=[32], batch=batches)

    sweep.run(grid([16, 24, 32, 48, 64]), max_batch=False, progress=None, compute=compute, valid=valid)
    counted.clear()
    sweep.run(grid([16, 24, 32, 40, 48, 64]), max_batch=False, progress=None, compute=compute, valid=valid)
    assert counted == [(40, 48, "decode")]


def _decode_at(model, queries: int):
    """tiny's decode step on one H100 at batch N and context 96 (the workload's mean), `queries` positions a
    sequence, at the ideal roofline."""
    from tracer.api import price, setup
    from tracer.compile import compile_steps

    s = setup(model, "h100x1", "tp", batch=N, prompt=ISL, context=ISL + OSL // 2, queries=queries, ideal=True)
    steps = compile_steps(s.cfg, s.system, s.strategy, s.work, ("decode",))
    return price(s, steps, find_max_batch=False).phases["decode"]


def test_speculative_decoding_by_hand(tiny):
    """tiny, 8 sequences of 64 + 64 tokens, 3 tokens drafted a step by a multi-token-prediction head (one layer of
    the model's own shape, its embedding and LM head) and accepted with chance 0.7 each given those before: a step
    yields (1 - 0.7^4) / (1 - 0.7) = 2.533 tokens a sequence. The verification is a decode step of 4 positions a
    sequence (compiled so: 4 x the one-position step's matmul work, as its analytic estimate says); the draft, 3
    decode steps of the one-layer model. The iteration adds the draft's steps to the verification mixed with a
    prefill share of 8 x 2.533 / 64 prompts; TPOT is the iteration / 2.533, and the token budget holds
    N (4 + 2.533 x 64 / 64) = 52.3 tokens an iteration."""
    from models.files import get_model
    from tracer.speculation import Speculation

    e = (1 - 0.7 ** 4) / (1 - 0.7)
    assert Speculation(3, 0.7).tokens_per_step == pytest.approx(e) == pytest.approx(2.533, abs=1e-3)
    assert Speculation(3, 1.0).tokens_per_step == 4 and Speculation(3, 0.0).tokens_per_step == 1
    s = serving("tiny", "h100x1", "tp", ISL, OSL, batch=N, speculative=3, acceptance=0.7, ideal=True)
    verify, one = _decode_at("tiny", 4), _decode_at("tiny", 1)
    assert verify.tokens_per_step == 4 * N and verify.flops_ratio == pytest.approx(one.flops_ratio, rel=0.03)
    assert verify.step.cost.flops == pytest.approx(4 * one.step.cost.flops, rel=0.1)
    mtp = Speculation(3, 0.7).draft_config(get_model("tiny"))
    assert (mtp.n_layers, mtp.hidden, mtp.vocab_size) == (1, 128, 512)
    draft = _decode_at(mtp, 1)
    assert s.draft_s == pytest.approx(3 * draft.time.step_s, rel=0.005)
    assert s.decode_s == pytest.approx(verify.time.step_s + s.draft_s, rel=0.005)
    assert (s.speculative, s.acceptance, s.draft, s.tokens_per_step) == (3, 0.7, "mtp", pytest.approx(e))
    assert s.tpot_s == pytest.approx(s.iteration_s / e) and s.output_tokens_per_s == pytest.approx(N * e /
                                                                                                   s.iteration_s)
    assert s.prefill_tokens_per_iteration == pytest.approx(N * e * ISL / OSL)
    assert s.tpot_s < tiny.tpot_s  # the draft and the wider step cost less than the 1.53 more tokens they give
    assert any("Leviathan" in n for n in s.notes)


@pytest.mark.parametrize("args, says", [
    (["--speculative", "3"], "needs --acceptance"), (["--acceptance", "0.7"], "applies with --speculative"),
    (["--speculative", "3", "--acceptance", "1.5"], r"in \[0, 1\]"), (["--speculative", "99", "--acceptance", "0.5"],
                                                                      "1..16"),
    (["--disagg", "0:1"], "give P:D"), (["--disagg", "two"], "give P:D"),
    (["--speculative", "2", "--acceptance", "0.5", "--draft", "nosuch"], "unknown model 'nosuch'"),
])
def test_speculation_and_disagg_errors(args, says, capsys):
    assert main(["serving", "--model", "tiny", "--system", "h100x1", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(says, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_disaggregated_by_hand():
    """tiny, 1 prefill and 1 decode instance of one H100 each, 1024 tokens in and 256 out. A prefill instance runs
    8192 // 1024 = 8 whole prompts an iteration (a prefill share alone: its weights once, 8 x the rest); each prompt's
    cache, 4 layers x 2 x 8 heads x 32 x 2 bytes x 1024 tokens = 4.19 MB, moves over NVLink (2 of an HGX node's 8
    GPUs: 450 GB/s), 9.3 us. The decode instance runs decode alone (no prefill share: its input price is 0) at the
    most sequences its pool and budget allow. The request rate is the lesser of the two; each side's chip-hours are
    paid by its own tokens ($2.95 an H100-hour). `auto` finds no split of 1..8 each with more tokens/s per chip."""
    from tracer.disagg import MOST, disaggregated
    from tracer.serving_steps import prefill_alone, prefill_phase

    r = disaggregated("tiny", "h100x1", "tp", 1024, 256, (1, 1), ideal=True)
    kv = 4 * 2 * 8 * 32 * 2 * 1024
    assert r.kv_bytes_per_request == kv and r.kv_link == "scale-up"
    assert r.kv_transfer_s == pytest.approx(kv / 450e9) and r.prompts_per_iteration == 8
    pre, s_pre = prefill_phase("tiny", "h100x1", "tp", 1024, 1, {"ideal": True})
    assert r.prefill_iteration_s == pytest.approx(prefill_alone(pre, 8, s_pre.system, None))
    assert r.prefill_requests_per_s == pytest.approx(min(8 / r.prefill_iteration_s, 450e9 / kv))
    d = r.decode
    assert d.prefill_s == 0 and d.iteration_s == d.decode_s and d.usd_per_mtok_input == 0 and d.ttft_s == 0
    assert d.requests_per_s == pytest.approx(d.concurrency / 256 / d.iteration_s)
    rate = min(r.prefill_requests_per_s, d.requests_per_s)
    assert r.requests_per_s == pytest.approx(rate) and r.chips == 2
    assert r.output_tokens_per_s == pytest.approx(rate * 256) and r.input_tokens_per_s == pytest.approx(rate * 1024)
    usd = 2.95 / 3600  # an H100-second
    assert r.usd_per_mtok_input == pytest.approx(usd / (rate * 1024) * 1e6)
    assert r.usd_per_mtok_output == pytest.approx(usd / (rate * 256) * 1e6)
    assert r.ttft_s == pytest.approx(r.prefill_iteration_s + r.kv_transfer_s)
    auto = disaggregated("tiny", "h100x1", "tp", 1024, 256, None, ideal=True)
    best = max(min(p * r.prefill_requests_per_s, q * d.requests_per_s) * 256 / (p + q)  # NVLink: 8 GPUs
               for p in range(1, MOST + 1) for q in range(1, MOST + 1) if (p + q) <= 8)
    assert auto.output_tokens_per_s_per_chip >= best * (1 - 1e-9)
    assert auto.output_tokens_per_s_per_chip >= r.output_tokens_per_s_per_chip


def test_disagg_cli(capsys):
    assert main(["serving", "--model", "tiny", "--system", "h100x1", "--isl", "1024", "--osl", "256", "--disagg",
                 "1:2", "--json", "--ideal"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["prefill_instances"], out["decode_instances"], out["chips"]) == (1, 2, 3)
    assert out["decode"]["prefill_s"] == 0
    assert main(["serving", "--model", "tiny", "--system", "h100x1", "--isl", "1024", "--osl", "256", "--disagg",
                 "auto", "--ideal"]) == 0
    assert "disaggregated" in capsys.readouterr().out


def test_pipeline_by_hand():
    """tiny (4 layers) on 4 H100s of one node under `pp`: 4 stages of one chip and one layer each, 8 sequences in 4
    micro-batches of 2. The last stage (its layer, the embedding and the LM head) is priced as tracer.serving prices
    one chip serving 2 sequences; a round is 4 of its iterations, 3 sends of a micro-batch's activations between
    stages (2 tokens x 128 x 2 bytes = 512 B over NVLink: 512 B / 450 GB/s + 1 us a send) and, at the ideal
    roofline, no overhead. Every micro-batch advances a token a round: 8 tokens a round, TPOT = the round. With 2
    sequences, 2 micro-batches of one: 2 of the 4 stages idle each round (the bubble), 2 tokens a round."""
    from meshes.strategies import get_strategy
    from models.files import get_model
    from tracer.errors import ConfigError
    from tracer.pipeline import last_stage

    p = serving("tiny", "h100x4", "pp", ISL, OSL, batch=N, ideal=True)
    stage = last_stage(get_model("tiny"), 4)
    assert (stage.n_layers, stage.vocab_size) == (1, 512)
    st = serving(stage, "h100x1", get_strategy("pp").stage, ISL, OSL, batch=2, ideal=True)
    send = 2 * 128 * 2 / 450e9 + 1e-6
    rnd = 4 * st.iteration_s + 3 * send
    assert p.iteration_s == pytest.approx(rnd) and p.tpot_s == pytest.approx(rnd) and p.chips == 4
    assert p.output_tokens_per_s == pytest.approx(N / rnd) and p.concurrency == N
    assert p.kv_pool_bytes_per_device == pytest.approx(st.kv_pool_bytes_per_device)
    assert any("4 stages of 1 chip" in c and "4 micro-batches of 2" in c for c in p.compiled)
    two = serving("tiny", "h100x4", "pp", ISL, OSL, batch=2, ideal=True)
    assert any("2 micro-batches of 1" in c and "2 stages idle" in c for c in two.compiled)
    one = serving(stage, "h100x1", get_strategy("pp").stage, ISL, OSL, batch=1, ideal=True)
    assert two.output_tokens_per_s == pytest.approx(2 / (4 * one.iteration_s + 3 * (256 / 450e9 + 1e-6)))
    with pytest.raises(ConfigError, match="too few for 8 pipeline stages"):
        serving("tiny", "h100x8", "pp", ISL, OSL, batch=N)
    with pytest.raises(ConfigError, match="pipeline stages: `tracer serving` prices it"):
        trace("tiny", "h100x4", "pp", batch=N, context=128)


def test_serving_sweep_prices_pipelines_as_serving_does(monkeypatch):
    """A serving sweep's pipeline points go to tracer.serving whole (its last stage compiled), not through steps
    derived for the whole model, which a pipeline has none of."""
    from tracer import sweep
    from tracer.serving_sweep import compute, serving_grid, valid

    monkeypatch.setenv("TRACER_CACHE", "")
    points = serving_grid(model=["tiny"], system=["h100x4"], strategy=["pp"], isl=[ISL], osl=[OSL], batch=[N, 2 * N])
    records = sweep.run(points, max_batch=False, progress=None, compute=compute, valid=valid)
    for r in records:
        alone = serving("tiny", "h100x4", "pp", ISL, OSL, batch=r["inputs"]["batch"])
        assert r["result"]["tpot_s"] == pytest.approx(alone.tpot_s) and "pipeline: 4 stages" in r["result"][
            "compiled"][-1]


def test_pipeline_meets_a_tpot_target():
    """tiny on 4 H100s under pp, at the ideal roofline: a TPOT target half-way between what 4 and 256 sequences take
    (one micro-batch of one a stage, and four of 64). The answer meets it, one sequence more does not, and the
    answer says how it was chosen."""
    lo = serving("tiny", "h100x4", "pp", ISL, OSL, batch=4, ideal=True)
    hi = serving("tiny", "h100x4", "pp", ISL, OSL, batch=256, ideal=True)
    target = (lo.tpot_s + hi.tpot_s) / 2 * 1e3
    got = serving("tiny", "h100x4", "pp", ISL, OSL, tpot_ms=target, ideal=True)
    assert 4 < got.concurrency < 256 and got.tpot_s * 1e3 <= target
    assert serving("tiny", "h100x4", "pp", ISL, OSL, batch=got.concurrency + 1, ideal=True).tpot_s * 1e3 > target
    assert got.concurrency_note.startswith("the most that meet TPOT")


def test_a_small_prefill_share_of_an_moe_reads_the_experts_it_reaches():
    """A chunk of f of the compiled prefill's prompts, alone, reads the routed experts its tokens are expected to reach
    (uniform routing: 1 - (1 - k/E)^T of E), not all those the whole prompts reach; and neither party's share of an
    iteration is negative. By hand, the tiny MoE (E = 16, k = 2) at 2 sequences of 64 + 64 tokens on one H100:
    f = 2 / 64 of a 64-token prompt is 2 tokens, which reach 1 - (14/16)^2 = 23.4% of the experts."""
    from conftest import MOE

    from tracer.api import setup
    from tracer.serving_steps import chunk_reach, prefill_alone, prefill_phase

    pre, s_pre = prefill_phase(MOE, "h100x1", "tp", ISL, 1, {})
    f = 2 / OSL
    assert chunk_reach(s_pre, f) == pytest.approx(1 - (14 / 16) ** 2) == pytest.approx(0.234375)
    assert chunk_reach(s_pre, 1.0) is None and chunk_reach(setup("tiny", "h100x1", "tp", batch=1), f) is None
    assert prefill_alone(pre, f, s_pre.system, s_pre.rates, chunk_reach(s_pre, f)) < \
        prefill_alone(pre, f, s_pre.system, s_pre.rates)
    s = serving(MOE, "h100x1", "tp", ISL, OSL, batch=2)
    assert 0 <= s.output_share_s <= s.iteration_s and s.usd_per_mtok_input > 0 and s.usd_per_mtok_output > 0
