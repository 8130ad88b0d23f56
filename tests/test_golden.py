"""Golden figures (issue 14): what the reader makes of today's programs, recorded before the reader is reshaped, so
that a change of structure that moves a figure is caught. The three compilers' decode fixtures, and programs compiled
here for the tiny MoE, MLA and windowed models and the small dense one.

A change that is meant to move figures records them again, and says why in its commit:
    TRACER_RECORD_GOLDEN=1 python -m pytest tests/test_golden.py
"""

import gzip
import json
import math
import os
from pathlib import Path

import pytest
from conftest import MLA, MOE, WINDOWED

from meshes.strategies import get_strategy
from meshes.systems import get_system
from models.scopes import SCOPES
from tracer.compile import Workload, compile_steps
from tracer.quirks import QUIRKS
from tracer.read import ProgramCost, parse_module, read_program

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden.json"
SETTINGS = {name: dict(f32_as=q.f32_as("bfloat16"), on_chip=q.on_chip) for name, q in QUIRKS.items()}  # bf16 fixtures
COMPILED = {"moe-tp": (MOE, "tp"), "mla-ep": (MLA, "ep"), "windowed-tp-ep": (WINDOWED, "tp-ep"),
            "small-tp": (None, "tp")}


def figures(cost: ProgramCost) -> dict:
    return {"flops": cost.flops, "flops_by_dtype": cost.flops_by_dtype, "hbm_bytes": cost.hbm_bytes,
            "fused_hbm_bytes": cost.fused_hbm_bytes, "expert_weight_bytes": cost.expert_weight_bytes,
            "peak_live_bytes": cost.peak_live_bytes, "output_bytes": cost.output_bytes,
            "collectives": [[c.op, c.group_size, c.count, c.bytes, c.wire_bytes_per_device, c.dtype]
                            for c in cost.collectives],
            "by_scope": {part: {"flops": c.flops, "hbm_bytes": c.hbm_bytes} for part, c in cost.by_scope().items()},
            "fused_by_scope": {part: c.hbm_bytes for part, c in cost.fused_by_scope().items() if c.hbm_bytes}}


def current(name: str, small) -> dict:
    if name in SETTINGS:
        module = parse_module(gzip.decompress((DATA / "hlo" / f"{name}-decode.hlo.gz").read_bytes()).decode())
        return {"decode": figures(read_program(module, scopes=SCOPES, **SETTINGS[name]))}
    cfg, strategy = COMPILED[name]
    steps = compile_steps(cfg or small, get_system("h100x8"), get_strategy(strategy), Workload(8, 32, 64))
    return {phase: figures(step.cost) for phase, step in steps.items()}


def close(got, want, where: str):
    """Equal structure, numbers within 1e-9 relative (JSON round trip)."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            close(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, f"{where}[{i}]")
    elif isinstance(want, float | int) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), where
    else:
        assert got == want, where


@pytest.mark.parametrize("name", [*SETTINGS, *COMPILED])
def test_reader_figures_unchanged(small, name):
    got = json.loads(json.dumps(current(name, small)))
    if os.environ.get("TRACER_RECORD_GOLDEN"):
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        golden[name] = got
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    close(got, json.loads(GOLDEN.read_text())[name], name)


@pytest.mark.parametrize("name", [*SETTINGS])
def test_a_step_is_the_sum_of_its_kernels(name):
    """The step's figures, its parts' and its fused kernels' are sums of the same kernel records: they cannot
    disagree. Fusing kernels moves no FLOPs (the same work, run in fewer kernels) and only lowers the bytes."""
    module = parse_module(gzip.decompress((DATA / "hlo" / f"{name}-decode.hlo.gz").read_bytes()).decode())
    cost = read_program(module, scopes=SCOPES, **SETTINGS[name])
    kernels = [k.total for k in cost.kernels]
    assert cost.flops == pytest.approx(sum(k.flops for k in kernels), rel=1e-12)
    assert cost.hbm_bytes == pytest.approx(sum(k.hbm_bytes for k in kernels), rel=1e-12)
    assert sum(c.hbm_bytes for c in cost.by_scope().values()) == pytest.approx(cost.hbm_bytes, rel=1e-12)
    assert sum(c.flops for c in cost.fused_by_scope().values()) == pytest.approx(cost.flops, rel=1e-12)
    assert cost.fused_hbm_bytes <= cost.hbm_bytes
    matmuls = [k for k in cost.kernels if k.kind == "matmul"]
    # a matmul's FLOPs are 2 M N K, plus any elementwise epilogue fused with it, less a convolution's padded taps
    assert matmuls and all(0.9 * k.total.flops <= 2 * math.prod(k.shape) * k.count <= k.total.flops * (1 + 1e-9)
                           for k in matmuls if not k.name.startswith("convolution"))
