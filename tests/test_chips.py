"""The chips a buyer compares (issue 17): their figures against the published ones, how each is compiled and timed,
and a comparison across vendors that says when its rows are not priced alike."""

import pytest

from base.inputs import ConfigError
from meshes.systems import SYSTEMS, get_system
from tracer.cli import main
from tracer.compile import choose_compiler
from tracer.rates import rates_for


@pytest.mark.parametrize("name, bf16, fp8, hbm_gb, hbm_tb_s, up_gb_s", [
    ("mi300x8", 1307.4, 2614.9, 192, 5.3, 448),  # AMD ROCm MI300 page: 2048 FLOPs/clock/CU x 304 CUs x 2.1 GHz
    ("mi325x8", 1307.4, 2614.9, 256, 6.0, 448),  # the MI300X's die with 256 GB HBM3E at 6 TB/s
    ("mi355x8", 2516.6, 5033.2, 288, 8.0, 537.6),  # 8192 FLOPs/clock/CU x 256 CUs x 2.4 GHz fp8; 7 x 153.6 / 2
    ("h800x8", 989, 1979, 80, 3.35, 200),  # the H100's GPU; NVLink 400 GB/s both ways
    ("h20x8", 148, 296, 96, 4.0, 450),  # 900 GB/s NVLink both ways
    ("b300x8", 2250, 4500, 288, 8.0, 900),  # dense: half the sparse 36 and 72 PFLOP/s of 8 GPUs
    ("gb300-nvl72", 2500, 5000, 279, 8.0, 900),
    ("v7x-8", 2307, 4614, 206, 7.37, 600),  # 192 GiB = 206 GB; ICI 1.2 TB/s both ways
])
def test_new_chips_carry_their_published_dense_figures(name, bf16, fp8, hbm_gb, hbm_tb_s, up_gb_s):
    chip = SYSTEMS[name].chip
    assert chip.peak_flops["bfloat16"] == pytest.approx(bf16 * 1e12)
    assert chip.peak_flops["float8"] == pytest.approx(fp8 * 1e12)
    assert (chip.hbm_bytes, chip.hbm_bw, chip.scale_up_bw) == pytest.approx((hbm_gb * 1e9, hbm_tb_s * 1e12,
                                                                             up_gb_s * 1e9))
    assert len(chip.source) > 20 and SYSTEMS[name].price_note


def test_blackwell_ultra_and_mi355x_fp4():
    """NVFP4 15 PFLOP/s dense a GB300 GPU (NVIDIA's Blackwell Ultra blog), 13 a B300 in HGX; MI355X MXFP4 ~10; and
    Blackwell Ultra's INT8 cut to ~0.15 POPS."""
    assert SYSTEMS["gb300-nvl72"].chip.flops_for("float4") == 15e15
    assert SYSTEMS["b300x8"].chip.flops_for("float4") == 13e15
    assert SYSTEMS["mi355x8"].chip.flops_for("float4") == pytest.approx(10.0664e15)
    assert SYSTEMS["b300x8"].chip.flops_for("int8") == 150e12


def test_chips_no_compiler_targets_compile_on_cpu_and_say_so():
    for name in ("mi300x8", "v7x-8"):
        compiler, why = choose_compiler("auto", SYSTEMS[name])
        assert compiler == "cpu" and "no compiler here targets" in why
        with pytest.raises(ConfigError, match="cannot target"):
            choose_compiler("gpu", SYSTEMS[name])
    assert get_system("mi300x8*2").n_chips == 16 and get_system("b300x4").n_chips == 4


def test_chips_without_measured_rates_are_priced_at_their_peaks_and_say_so():
    for name in ("mi300x8", "h20x8", "h800x8", "v7x-8"):  # B300 and GB300 have AIConfigurator's (test_timing)
        rates, words = rates_for(SYSTEMS[name].chip)
        assert rates is None and words.startswith("ideal roofline: no achieved-rate data")


def test_compare_across_vendors_flags_rows_not_priced_alike(capsys):
    """h200x8 at its achieved rates beside mi300x8 at its peaks: the table says so; with --ideal it does not."""
    args = ["compare", "--model", "tiny", "--systems", "h200x8,mi300x8", "--strategy", "tp", "--batch", "8",
            "--context", "256"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NOT LIKE FOR LIKE" in out and "mi300x8: ideal roofline" in out
    assert main([*args, "--ideal"]) == 0
    assert "NOT LIKE FOR LIKE" not in capsys.readouterr().out


def test_systems_lists_every_chip_with_its_sources(capsys):
    assert main(["systems"]) == 0
    out = capsys.readouterr().out
    for chip in ("AMD Instinct MI300X", "H20", "B300 (GB300)", "TPU v7x (Ironwood)"):
        assert f"- {chip}: " in out
