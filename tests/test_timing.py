"""The achieved-rate time model (tracer.timing, tracer.rates) against arithmetic done here by hand, the rates files
that ship, and `tracer calibrate` on CPU (the file's shape; a GPU run measures)."""

import dataclasses
import json
import math

import pytest

from base.inputs import ConfigError
from meshes.systems import SYSTEMS, get_system
from tracer.calibrate import _chip
from tracer.cli import main
from tracer.rates import RATES_DIR, Rates, load_rates, rates_for
from tracer.read import Collective, Cost, Kernel, ProgramCost
from tracer.step import CompiledStep, XlaMemory
from tracer.timing import collective_time, iteration_kernels_s, kernel_time, moe_row, step_time

H100 = get_system("h100x8")
RATES = Rates("H100 SXM", "a test", "-", (1.0, 100.0), {"bfloat16": (0.1, 0.8)}, 0.9, 0.6, 0.8, 4e-6,
              (1e3, 1e6), (10e-6, 40e-6), 0.9, 30e-6, 1e-3, {})


def _step(*kernels, collectives=()) -> CompiledStep:
    cost = ProgramCost(tuple(kernels), tuple(kernels), 0.0, 0.0, tuple(collectives), ())
    return CompiledStep(cost, 0.0, 0.0, 0.0, XlaMemory(0, 0, 0, 0), "cpu", 0.0)


def _gemm(m, n, k, count=1, weights=True) -> Kernel:
    w = n * k * 2.0
    moved = Cost.of({"bfloat16": 2.0 * m * n * k}, w + m * k * 2.0, m * n * 2.0, w if weights else 0.0)
    return Kernel("dot", "matmul", "mlp", count, moved, (m, n, k), ("bfloat16",))


def test_matmul_fraction_is_log_linear_in_m():
    """0.1 at M = 1, 0.8 at M = 100: at M = 10 (half-way in log) 0.45; flat outside."""
    assert RATES.matmul_fraction("bfloat16", 10) == pytest.approx(0.45)
    assert RATES.matmul_fraction("bfloat16", 0.5) == 0.1 and RATES.matmul_fraction("bfloat16", 1e6) == 0.8
    assert RATES.matmul_fraction("float8", 100) == 0.8  # no float8 row: bfloat16's


def test_a_step_by_hand():
    """Two kernels and an all-reduce on an H100 (989 TFLOP/s bf16, 3.35 TB/s, NVLink 450 GB/s):
    - a GEMM 16 x 8192 x 8192 twice: 2.147 GFLOP at 0.1 + (0.7) log(16)/log(100) = 0.5213 of peak = 4.164 us; bytes
      (8192^2 + 16 x 8192 x 2) x 2 = 134.7 MB at 0.9 x 3.35 TB/s = 44.68 us: memory-bound, 44.68 us each;
    - an elementwise kernel of 1 kB: its launch (the 4 us floor) and then 0.34 ns of bytes;
    - an all-reduce of 1 MB over 8 GPUs, once: sending 1.75 MB a device, as the table's 8-GPU all-reduce of a 1 MB
      operand does: 40 us (the table: 10 us at 1 kB, 40 us at 1 MB; half-way in log, 100 kB: 20 us);
    - the overhead, 1 ms. Ideal: max(4.34 us, 269.4 MB / 3.35 TB/s = 80.4 us) + 1.75 MB / 450 GB/s + 14 hops x 1 us."""
    gemm = _gemm(16, 8192, 8192, count=2)
    small = Kernel("add", "elementwise", "mlp", 1, Cost.of({}, 512, 512))
    ar = Collective("all-reduce", 8, (tuple(range(8)),), 1, 1e6, 1.75e6)
    step = _step(gemm, small, collectives=(ar,))
    t = step_time(step, H100, RATES, "decode")
    frac = 0.1 + 0.7 * math.log(16) / math.log(100)
    flops, moved = 2 * 16 * 8192 * 8192, (8192 * 8192 + 2 * 16 * 8192) * 2
    assert t.compute_s == pytest.approx(2 * flops / (989e12 * 0.8), rel=1e-9)  # at large GEMMs' fraction
    assert t.memory_s == pytest.approx((2 * moved + 1024) / (0.9 * 3.35e12), rel=1e-9) and t.bound == "memory"
    assert 2 * flops / (989e12 * frac) < 2 * moved / (0.9 * 3.35e12)  # each GEMM: memory-bound at its shape too
    kernels = 2 * moved / (0.9 * 3.35e12) + 4e-6 + 1024 / (0.9 * 3.35e12)
    assert t.kernels_s == pytest.approx(kernels, rel=1e-9)
    assert t.comms_s == pytest.approx(40e-6, rel=1e-9)
    assert RATES.all_reduce_s(math.sqrt(1e3 * 1e6)) == pytest.approx(20e-6) and RATES.all_reduce_s(1) == 10e-6
    assert RATES.all_reduce_s(2e6) == pytest.approx(80e-6)  # past the last point: its bandwidth
    assert t.step_s == pytest.approx(kernels + t.comms_s + 1e-3, rel=1e-9) and t.model == "achieved"
    ideal = step_time(step, H100)
    assert ideal.step_s == pytest.approx(max(2 * flops / 989e12, (2 * moved + 1024) / 3.35e12)
                                         + 1.75e6 / 450e9 + 14 * 1e-6, rel=1e-9)
    assert ideal.model == "ideal" and ideal.kernels_s is None
    assert collective_time(H100, ar, RATES) == pytest.approx(t.comms_s)
    # 10 us more a sequence its scheduler runs: 64 sequences add 0.64 ms of host work to the 1 ms
    per_seq = step_time(step, H100, dataclasses.replace(RATES, per_sequence_s=10e-6), "decode", sequences=64)
    assert per_seq.overhead_s == pytest.approx(1.64e-3) and per_seq.step_s == pytest.approx(t.step_s + 0.64e-3)


def test_a_mixed_iteration_by_hand():
    """A decode GEMM of 16 rows and its prefill partner of 1024 rows (the same 8192 x 8192 weight), f = 0.25 of the
    prefill: one GEMM of 16 + 256 = 272 rows (fraction 0.8, past the table), 2 x 272 x 8192^2 FLOPs; bytes: decode's
    plus a quarter of the prefill's activations (its weight read dropped). The prefill's attention adds a quarter of
    its time, no floor. Alone, the prefill share reads its weights once and a quarter of the rest."""
    d, p = _gemm(16, 8192, 8192), _gemm(1024, 8192, 8192)
    attn = Kernel("fa", "attention", "attention", 1, Cost.of({"bfloat16": 1e12}, 1e6, 1e6))
    both = iteration_kernels_s(_step(d), _step(p, attn), 0.25, H100, RATES)
    flops = 2 * 272 * 8192 * 8192
    moved = d.cost.hbm_bytes + 0.25 * (p.cost.hbm_bytes - p.cost.argument_bytes)
    gemm = max(flops / (989e12 * 0.8), moved / (0.9 * 3.35e12))
    attn_s = 0.25 * max(1e12 / (989e12 * 0.6), 2e6 / (0.9 * 3.35e12))
    assert both == pytest.approx(gemm + attn_s, rel=1e-9)
    alone = iteration_kernels_s(None, _step(p, attn), 0.25, H100, RATES)
    moved_alone = p.cost.argument_bytes + 0.25 * (p.cost.hbm_bytes - p.cost.argument_bytes)
    assert alone == pytest.approx(max(0.25 * 2 * 1024 * 8192**2 / (989e12 * 0.8), moved_alone / (0.9 * 3.35e12))
                                  + attn_s, rel=1e-9)
    assert iteration_kernels_s(_step(d), None, 0.0, H100, RATES) == pytest.approx(step_time(_step(d), H100, RATES)
                                                                                  .kernels_s)


def test_every_gpu_chip_has_a_sourced_rates_file():
    """The GPUs with published measurements (AIConfigurator's H100, H200, B200, GB200, B300 and GB300 data) have a
    rates file; the other newer chips (tests/test_chips.py) are priced at their peaks until one is written, and say
    so."""
    measured = ("H100 SXM", "H200 SXM", "B200", "B200 (GB200)", "B300", "B300 (GB300)")
    chips = [s.chip for s in SYSTEMS.values() if s.chip.name in measured]
    assert {c.name for c in chips} == set(measured)
    for chip in chips:
        rates, words = rates_for(chip)
        assert rates is not None and rates.chip == chip.name, chip.name
        assert all(len(rates.sources[t]) > 20 for t in rates.sources), chip.name  # every table says where from
        assert words.startswith("achieved rates")
    tpu = SYSTEMS["v5e-8"].chip
    assert rates_for(tpu)[0] is None and "ideal roofline" in rates_for(tpu)[1]
    assert rates_for(H100.chip, ideal=True) == (None, "ideal roofline: every kernel at the chip's peaks (--ideal)")


def test_bad_rates_files_say_what_to_fix(tmp_path):
    good = (RATES_DIR / "h100.toml").read_text()
    cases = {"no_table": good.replace("[memory]", "[memoryx]"),
             "bad_fraction": good.replace("[memory]\nfraction = ", "[memory]\nfraction = 7 #"),
             "not_toml": "chip = ", "short_row": good.replace("m = [", "m = [0.5, "),
             "negative_per_sequence": good.replace("[iteration]\n", "[iteration]\nper_sequence_s = -1e-6\n")}
    for name, text in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        with pytest.raises(ConfigError):
            load_rates(path)
    with pytest.raises(ConfigError, match="holds rates of the H100 SXM, not the system's B200"):
        load_rates(RATES_DIR / "h100.toml", "B200")
    with pytest.raises(ConfigError, match="leave out --calibration"):
        rates_for(H100.chip, str(RATES_DIR / "h100.toml"), ideal=True)


def test_calibrate_on_cpu_writes_a_rates_file(tmp_path, capsys):
    """--quick on CPU: every table measured or carried from the published file, and `--calibration` prices with it
    (a CPU is far slower than an H100's datasheet, so the step takes far longer)."""
    out = tmp_path / "cal.toml"
    assert main(["calibrate", "--out", str(out), "--chip", "h100", "--quick"]) == 0
    rates = load_rates(out, "H100 SXM")
    assert rates.matmul_m == (1.0, 16.0, 64.0) and "bfloat16" in rates.matmul
    assert "tracer calibrate on" in rates.origin and rates.sources["memory"].startswith("measured")
    assert "not measurable here" in rates.sources["iteration"]
    capsys.readouterr()
    main(["trace", "--model", "tiny", "--system", "h100x1", "--batch", "8", "--context", "256", "--no-max-batch",
          "--calibration", str(out), "--json"])
    calibrated = json.loads(capsys.readouterr().out)
    main(["trace", "--model", "tiny", "--system", "h100x1", "--batch", "8", "--context", "256", "--no-max-batch",
          "--json"])
    published = json.loads(capsys.readouterr().out)
    assert calibrated["time_model"].startswith("achieved rates: H100 SXM, tracer calibrate on")
    assert calibrated["decode"]["time_s"]["step"] > published["decode"]["time_s"]["step"]
    assert main(["trace", "--model", "tiny", "--system", "b200x1", "--calibration", str(out)]) == 2
    # an output that cannot be written is refused before anything is measured
    assert main(["calibrate", "--out", str(tmp_path / "missing" / "cal.toml"), "--chip", "h100", "--quick"]) == 2


def test_two_micro_batches_hide_all_to_alls_by_hand():
    """wide-ep's two micro-batches (Strategy.overlap): a GEMM of 44.68 us (memory-bound, as in test_a_step_by_hand)
    and an all-to-all whose calls take 40 us (the 8-GPU table at a 1 MB operand: 1.75 MB sent a device, once) plus an
    all-reduce of the same. Overlapped, the all-to-all hides under the GEMM: only the all-reduce's 40 us count; one of
    60 us a call (past the table's last point, its bandwidth: a 1.5 MB operand) outlasts it by 60 - 44.68 = 15.32 us.
    Ideal: the step is max(compute, memory) = 134.7 MB / 3.35 TB/s = 40.2 us at peak, under which an all-to-all of
    1.75 MB over NVLink (450 GB/s: 3.89 us, and one hop of 1 us) hides whole."""
    from meshes.strategies import STRATEGIES

    gemm = _gemm(16, 8192, 8192)
    a2a = Collective("all-to-all", 8, (tuple(range(8)),), 1, 1e6, 1.75e6)
    ar = Collective("all-reduce", 8, (tuple(range(8)),), 1, 1e6, 1.75e6)
    step = _step(gemm, collectives=(a2a, ar))
    kernel = gemm.cost.hbm_bytes / (0.9 * 3.35e12)
    t = step_time(step, H100, RATES, "decode", overlap=("all-to-all",))
    assert t.kernels_s == pytest.approx(kernel) and t.comms_s == pytest.approx(40e-6) and t.hidden_s == \
        pytest.approx(40e-6)
    assert step_time(step, H100, RATES, "decode").comms_s == pytest.approx(80e-6)  # no overlap: both count
    big = Collective("all-to-all", 8, (tuple(range(8)),), 1, 1.5e6, 2.625e6)
    t = step_time(_step(gemm, collectives=(big,)), H100, RATES, "decode", overlap=("all-to-all",))
    assert t.comms_s == pytest.approx(60e-6 - kernel, rel=1e-6)
    ideal = step_time(_step(gemm, collectives=(a2a,)), H100, overlap=("all-to-all",))
    assert ideal.comms_s == 0.0 and ideal.hidden_s == pytest.approx(1.75e6 / 450e9 + 1e-6)
    assert ideal.step_s == pytest.approx(gemm.cost.hbm_bytes / 3.35e12)
    assert STRATEGIES["wide-ep"].overlap == ("all-to-all",) and STRATEGIES["ep"].overlap == ()


def _experts(m, n, k, experts, dtypes=("bf16", "bf16"), weight_bytes=2.0) -> Kernel:
    """A routed experts' GEMM of `experts` GEMMs, m / experts tokens each, n x k weights each."""
    w = experts * n * k * weight_bytes
    moved = Cost.of({"bfloat16": 2.0 * m * n * k}, w + m * k * 2.0, m * n * 2.0, w)
    return Kernel("dot", "matmul", "experts", 1, moved, (m, n, k), dtypes, gemms=experts)


MOE_RATES = dataclasses.replace(RATES, moe_m=(1.0, 100.0), moe={"bfloat16": (0.5, 0.9), "w4a16": (0.25, 0.5)})


def test_routed_expert_gemms_by_hand():
    """128 experts of 768 x 2048, 512 rows (4 tokens each) on an H100 (989 TFLOP/s, 3.35 TB/s): roofline
    max(2 x 512 x 768 x 2048 = 1.61 GFLOP / 989e12 = 1.63 us, (128 x 768 x 2048 x 2 + 512 x 2048 x 2 + 512 x 768 x 2
    = 405.4 MB) / 3.35e12 = 121.0 us) = 121.0 us, over the [moe] fraction at 4 tokens an expert: 0.5 + 0.4 x
    log(4) / log(100) = 0.6204, so 195.1 us. As a dense GEMM (no [moe] table): the bytes at 0.9 of HBM bandwidth.
    MXFP4 experts (4-bit weights, bf16 FLOPs) take the w4a16 row; a precision the table lacks, the dense pricing."""
    k = _experts(512, 768, 2048, 128)
    roofline = max(2 * 512 * 768 * 2048 / 989e12, k.cost.hbm_bytes / 3.35e12)
    assert roofline == pytest.approx(405.4e6 / 3.35e12, rel=1e-3)
    fraction = 0.5 + 0.4 * math.log(4) / math.log(100)
    assert MOE_RATES.moe_fraction("bfloat16", 4) == pytest.approx(fraction)
    assert kernel_time(k, H100, MOE_RATES, "decode") == pytest.approx(roofline / fraction, rel=1e-9)
    assert kernel_time(k, H100, RATES, "decode") == pytest.approx(k.cost.hbm_bytes / (0.9 * 3.35e12), rel=1e-9)
    fp4 = _experts(512, 768, 2048, 128, ("f4e2m1fn", "bf16"), 0.53125)
    assert moe_row(fp4) == "w4a16" and moe_row(k) == "bfloat16" and moe_row(_gemm(512, 768, 2048)) is None
    fp4_roofline = max(2 * 512 * 768 * 2048 / 989e12, fp4.cost.hbm_bytes / 3.35e12)
    assert kernel_time(fp4, H100, MOE_RATES, "decode") == pytest.approx(
        fp4_roofline / (0.25 + 0.25 * math.log(4) / math.log(100)), rel=1e-9)
    f8 = dataclasses.replace(k, cost=Cost.of({"float8": 2.0 * 512 * 768 * 2048}, k.cost.bytes_read,
                                             k.cost.bytes_written, k.cost.argument_bytes))
    assert kernel_time(f8, H100, MOE_RATES, "decode") == kernel_time(f8, H100, RATES, "decode")
    # in a mixed iteration the decode's 4 tokens an expert and a quarter of a prefill's 32 make 12
    p = _experts(4096, 768, 2048, 128)
    both = iteration_kernels_s(_step(k), _step(p), 0.25, H100, MOE_RATES)
    moved = k.cost.hbm_bytes + 0.25 * (p.cost.hbm_bytes - p.cost.argument_bytes)
    roof = max(2 * (512 + 1024) * 768 * 2048 / 989e12, moved / 3.35e12)
    assert both == pytest.approx(roof / MOE_RATES.moe_fraction("bfloat16", 12), rel=1e-9)


def test_moe_tables_ship_and_round_trip(tmp_path):
    """Every GPU rates file has a [moe] table with bf16, fp8 and w4a16 rows (Blackwell: fp4 too), a source, and
    writes and reads back the same; a row of an unknown kind is an error that names the kinds."""
    for chip in ("h100", "h200", "b200", "gb200", "b300", "gb300"):
        rates = load_rates(RATES_DIR / f"{chip}.toml")
        assert {"bfloat16", "float8", "w4a16"} <= set(rates.moe) and len(rates.sources["moe"]) > 100, chip
        assert ("float4" in rates.moe) == chip.startswith(("b", "gb"))
        path = tmp_path / f"{chip}.toml"
        path.write_text(rates.to_toml())
        assert dataclasses.replace(load_rates(path), path=rates.path) == rates
        path.write_text(dataclasses.replace(rates, per_sequence_s=5e-6).to_toml())
        assert load_rates(path).per_sequence_s == 5e-6 and load_rates(path).overhead(100) == rates.overhead_s + 5e-4
    bad = tmp_path / "bad.toml"
    bad.write_text((RATES_DIR / "h100.toml").read_text().replace("\nw4a16 = ", "\nint3 = "))
    with pytest.raises(ConfigError, match=r"\[moe\] has a row 'int3'; rows are bfloat16, float8, float4, w4a16"):
        load_rates(bad)


def test_blackwell_ultra_rates_by_hand_from_aiconfigurator():
    """Figures of meshes/rates/b300.toml and gb300.toml redone by hand from AIConfigurator's rows (commit 095f58a5,
    TRT-LLM 1.3.0rc20; benchmarks/rates_tables.py derives the tables), at the peaks of meshes/systems.py."""
    b300, gb300 = (rates_for(SYSTEMS[name].chip)[0] for name in ("b300x8", "gb300-nvl72"))
    n = k = 8192
    # b300_sxm gemm_perf: bf16, m = 16384, n = k = 8192 in 1.3566826 ms, of 2250 TFLOP/s
    assert b300.matmul["bfloat16"][-1] == round(2 * 16384 * n * k / 1.3566826e-3 / 2250e12, 3) == 0.72
    # nvfp4, m = 1 in 0.0207693 ms, of the B300's 13 PFLOP/s (AIConfigurator's yaml says 14): 4 decimals, not 0
    assert b300.matmul["float4"][0] == round(2 * 1 * n * k / 0.0207693e-3 / 13000e12, 4) == 0.0005
    # gb300 gemm_perf: fp8 (per-tensor), m = 4096 in 0.1982098 ms, of 5000 TFLOP/s
    assert gb300.matmul["float8"][10] == round(2 * 4096 * n * k / 0.1982098e-3 / 5000e12, 3) == 0.555
    # context attention, 32 q / 8 kv heads, head dim 128, one 16384-token prompt, causal: B300 1.623381 ms
    assert b300.attention_prefill == round(4 * 16384**2 * 32 * 128 / 2 / 1.623381e-3 / 2250e12, 2) == 0.60
    # decode over 64 x 4095 cached tokens of 8 kv heads x 128 x (k, v) x 2 bytes: GB300 0.160581 ms, of 8 TB/s
    assert gb300.attention_decode == round(64 * 4095 * 8 * 128 * 2 * 2 / 0.160581e-3 / 8e12, 2) == 0.84
    # 8-GPU all-reduce of 16 MiB (8388608 bf16 elements): TRT-LLM's custom one, 0.083150 ms, faster than NCCL's 0.09755
    assert b300.all_reduce_s(16777216) == gb300.all_reduce_s(16777216) == pytest.approx(83.2e-6)


def test_gb200_rates_are_its_own_by_hand_from_aiconfigurator():
    """meshes/rates/gb200.toml's [matmul], [memory] and [attention] are the GB200's own measurements now (commit
    095f58a5, TRT-LLM 1.3.0rc20; they were the B200's), at the GB200's peaks; its 8-GPU all-reduce stays the B200's
    (AIConfigurator's GB200 all-reduces stop at 4 GPUs)."""
    b200, gb200 = (rates_for(SYSTEMS[name].chip)[0] for name in ("b200x8", "gb200-nvl72"))
    n = k = 8192
    # gb200 gemm_perf: bf16, m = 16384, n = k = 8192 in 1.388216 ms, of 2500 TFLOP/s (the B200's row had 0.615)
    assert gb200.matmul["bfloat16"][-1] == round(2 * 16384 * n * k / 1.388216e-3 / 2500e12, 3) == 0.634
    # fp8 (per-tensor), m = 4096 in 0.232519 ms, of 5000 TFLOP/s
    assert gb200.matmul["float8"][10] == round(2 * 4096 * n * k / 0.232519e-3 / 5000e12, 3) == 0.473
    # decode attention over 8 x 65535 cached tokens (2.15 GB of bf16 KV) in 0.292325 ms, of 8 TB/s
    assert gb200.memory == round(8 * 65535 * 8 * 128 * 2 * 2 / 0.292325e-3 / 8e12, 2) == 0.92
    # context attention, one 16384-token prompt, causal, in 1.637963 ms; decode over 64 x 4095 in 0.157963 ms
    assert gb200.attention_prefill == round(4 * 16384**2 * 32 * 128 / 2 / 1.637963e-3 / 2500e12, 2) == 0.54
    assert gb200.attention_decode == round(64 * 4095 * 8 * 128 * 2 * 2 / 0.157963e-3 / 8e12, 2) == 0.85
    assert gb200.matmul != b200.matmul and gb200.scale_up_s == b200.scale_up_s


@pytest.mark.parametrize("device_kind, chip", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H200", "H200 SXM"), ("NVIDIA B200", "B200"),
    ("NVIDIA GB200", "B200 (GB200)"), ("NVIDIA B300 SXM6 AC", "B300"), ("NVIDIA GB300", "B300 (GB300)"),
])
def test_calibrate_knows_the_chip_from_its_device_kind(device_kind, chip):
    """`tracer calibrate` finds the peaks from JAX's device_kind (GB200 is not taken for a B200, nor GB300 for a
    B300); another device needs --chip, which also overrides the name."""
    assert _chip(None, device_kind).name == chip
    assert _chip("h200", device_kind).name == "H200 SXM"
    with pytest.raises(ConfigError, match="name the chip whose peaks"):
        _chip(None, "NVIDIA A100-SXM4-80GB")
