"""The real compilers: the same steps compiled for CPU, GPU (XLA GPU, compile-only) and TPU (libtpu, compile-only),
and the reader on each compiler's program. The fixtures in tests/data/hlo are decode programs of the `small` model
(tp on 8 devices, batch 8, context 64) saved from each compiler, so the reader is tested without the extras."""

import dataclasses
import gzip
from pathlib import Path

import pytest

from meshes.strategies import get_strategy
from meshes.systems import get_system
from models.presets import TINY
from models.scopes import SCOPES
from tracer.cli import main
from tracer.compile import Workload, choose_compiler, compile_steps, missing_extra
from tracer.errors import ConfigError
from tracer.quirks import QUIRKS
from tracer.read import read_program
from tracer.read.hlo import parse_module, trip_count
from tracer.roofline import analytic, splits

HLO = Path(__file__).parent / "data" / "hlo"
WORK = Workload(batch=8, prompt=32, context=64)
TP8 = splits(get_strategy("tp"), {"dp": 1, "tp": 8})
# matmul-heavy enough that the compilers' different elementwise work stays under 1% of the FLOPs
WIDE = dataclasses.replace(TINY, name="wide", vocab_size=1024, hidden=1024, n_layers=2, n_heads=8, n_kv_heads=8,
                           head_dim=128, ffn=4096)
SETTINGS = {name: dict(f32_as=q.f32_as("bfloat16"), on_chip=q.on_chip) for name, q in QUIRKS.items()}  # bf16 fixtures


def needs(compiler: str):
    reason = missing_extra(compiler)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.mark.parametrize("compiler", ["cpu", "gpu", "tpu"])
def test_each_compilers_program_reads_the_same(small, compiler):
    """Async all-reduce-start/-done (GPU), TPU tiled layouts, VMEM buffers and convolutions, the mesh-axes
    replica-group notation, and the layer loop's trip count (GPU and CPU: backend_config; TPU: its condition)."""
    module = parse_module(gzip.decompress((HLO / f"{compiler}-decode.hlo.gz").read_bytes()).decode())
    loops = [i for c in module.computations.values() for i in c.instrs if i.opcode == "while"]
    assert [trip_count(module, loop) for loop in loops] == [small.n_layers]
    cost = read_program(module, scopes=SCOPES, **SETTINGS[compiler])
    (c,) = cost.collectives  # attention and MLP outputs per layer, and the vocab-sharded embedding lookup
    assert (c.op, c.group_size, c.count, c.bytes) == ("all-reduce", 8, 2 * small.n_layers + 1, 8 * small.hidden * 2)
    want = analytic(small, WORK, "decode", TP8)
    assert cost.flops == pytest.approx(want.flops_per_device, rel=0.02)
    assert set(cost.flops_by_dtype) <= {"bfloat16", "float32"}


@needs("gpu")
@needs("tpu")
def test_three_compilers_agree_on_flops_and_state():
    """One model and strategy compiled by all three: FLOPs within 2% of each other and of the analytic count, the
    same weights and KV cache per device, the same collectives. What differs (fused bytes, temporaries) is each
    compiler's own program and is reported as it is."""
    strategy = get_strategy("tp")
    steps = {"cpu": compile_steps(WIDE, get_system("h100x8"), strategy, WORK),
             "gpu": compile_steps(WIDE, get_system("h100x8"), strategy, WORK, compiler="gpu"),
             "tpu": compile_steps(WIDE, get_system("v5e-8"), strategy, WORK, compiler="tpu")}
    for phase in ("prefill", "decode"):
        want = analytic(WIDE, WORK, phase, TP8).flops_per_device
        got = {name: s[phase] for name, s in steps.items()}
        for step in got.values():
            assert step.cost.flops == pytest.approx(want, rel=0.02)
            assert step.weight_bytes == got["cpu"].weight_bytes and step.kv_cache_bytes == got["cpu"].kv_cache_bytes
            assert [(c.op, c.count, c.bytes) for c in step.cost.collectives] == [
                (c.op, c.count, c.bytes) for c in got["cpu"].cost.collectives]
        assert {name: step.compiler for name, step in got.items()} == {"cpu": "cpu", "gpu": "gpu", "tpu": "tpu"}
        # reported as each compiler wrote it: the CPU upcasts its all-reduces to f32, the GPU and TPU keep bf16
        assert {name: {c.dtype for c in step.cost.collectives} for name, step in got.items()} == {
            "cpu": {"f32"}, "gpu": {"bf16"}, "tpu": {"bf16"}}


def test_choosing_a_compiler(monkeypatch):
    assert choose_compiler("cpu", get_system("v5e-8")) == ("cpu", "chosen")
    with pytest.raises(ConfigError, match="cannot target h100x8"):
        choose_compiler("tpu", get_system("h100x8"))
    with pytest.raises(ConfigError, match="unknown compiler"):
        choose_compiler("npu", get_system("h100x8"))
    monkeypatch.setattr("tracer.compile.missing_extra", lambda c: None if c == "cpu" else "not installed (pip ...)")
    compiler, why = choose_compiler("auto", get_system("h100x8"))
    assert compiler == "cpu" and "gpu compiler is unavailable" in why
    with pytest.raises(ConfigError, match="not installed"):
        choose_compiler("gpu", get_system("h100x8"))


@needs("gpu")
def test_auto_takes_the_systems_own_compiler():
    assert choose_compiler("auto", get_system("gb200-nvl72"))[0] == "gpu"


@needs("gpu")
def test_compare_compilers_side_by_side(capsys):
    argv = ["compare", "--model", "tiny", "--system", "h100x8", "--strategy", "tp", "--batch", "8", "--context", "64",
            "--compilers", "cpu,gpu"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(" cpu " in line for line in lines[2:4]) and any(" gpu " in line for line in lines[2:4])


def test_unknown_compiler_in_compare(capsys):
    assert main(["compare", "--model", "tiny", "--compilers", "cpu,npu"]) == 2
    assert "unknown compiler 'npu'" in capsys.readouterr().err


def test_breakdown_by_part_of_the_model(small, capsys):
    """--breakdown: FLOPs, bytes and wire bytes per named scope add up to the step's, and each part holds what the
    model puts there: the MLP's matmuls (2 x B x 3 x D x F/8 per layer), one all-reduce per layer each for attention
    and the MLP, the embedding lookup's own."""
    step = compile_steps(small, get_system("h100x8"), get_strategy("tp"), WORK, phases=("decode",))["decode"]
    parts = {part: {"flops": c.flops, "hbm_bytes": c.hbm_bytes} for part, c in step.cost.by_scope().items()}
    assert sum(p["flops"] for p in parts.values()) == pytest.approx(step.cost.flops)
    assert sum(p["hbm_bytes"] for p in parts.values()) == pytest.approx(step.cost.hbm_bytes)
    mlp = small.n_layers * 2 * WORK.batch * 3 * small.hidden * small.ffn / 8
    assert parts["mlp"]["flops"] == pytest.approx(mlp, rel=0.02)
    # the attention core: q.k and p.v over every cached position (plus the softmax's elementwise work), reading the
    # KV cache of the device's heads
    core = small.n_layers * WORK.batch * WORK.context * small.attn_pair_flops(decode=True) / 8
    assert core <= parts["attention core"]["flops"] <= 1.1 * core
    assert parts["attention core"]["hbm_bytes"] == pytest.approx(small.kv_bytes(WORK.context) * WORK.batch / 8,
                                                                 rel=0.05)
    (c,) = step.cost.collectives
    per_call = c.wire_bytes_per_device / c.count
    assert dict(c.scopes) == pytest.approx({"attention": small.n_layers * per_call, "mlp": small.n_layers * per_call,
                                            "embedding, other": per_call})
    assert main(["trace", "--model", "tiny", "--batch", "8", "--context", "64", "--no-max-batch", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "decode by part of the model" in out and "cache update" in out


def test_library_gemm_flops_from_its_shapes():
    """A cuBLAS gemm custom call (cost_analysis: -1): 2 x output elements x the contracted size."""
    text = """HloModule m, num_partitions=1

ENTRY %main (p0: bf16[64,4096], p1: bf16[4096,1024]) -> bf16[64,1024] {
  %p0 = bf16[64,4096]{1,0} parameter(0)
  %p1 = bf16[4096,1024]{1,0} parameter(1)
  %gemm = (bf16[64,1024]{1,0}, s8[4194304]{0}) custom-call(%p0, %p1), custom_call_target="__cublas$gemm", \
backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"]}}}
  ROOT %r = bf16[64,1024]{1,0} get-tuple-element(%gemm), index=0
}
"""
    cost = read_program(parse_module(text), f32_as=None, scopes=SCOPES)
    assert cost.flops_by_dtype == {"bfloat16": 2 * 64 * 1024 * 4096}
