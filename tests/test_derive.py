"""Compile once, answer many (tracer.derive, tracer.sweep_derive): steps derived from the corners of a (batch,
context) rectangle against the steps compiled there, for a dense, an MoE and an MLA model; structure changes
detected; a sweep's derived points, their provenance, the fallback when a held-out point misses, and a later sweep
that compiles nothing new."""

import dataclasses
import json

import pytest
from conftest import MLA, MOE, WINDOWED

import tracer.api
import tracer.compile
from meshes.strategies import get_strategy
from meshes.systems import get_system
from tracer import sweep, sweep_derive
from tracer.derive import (
    HELD_OUT_TOLERANCE,
    StepModel,
    StructureChanged,
    canonical,
    step_from_json,
    step_to_json,
    structure_key,
    worst_error,
)
from tracer.step import Workload

SYSTEM, STRATEGY = get_system("h100x8"), get_strategy("tp")
MESH = STRATEGY.mesh_shape(SYSTEM)
PROMPT = 16


def compiled(cfg, batch: int, context: int, phase: str):
    work = Workload(batch, PROMPT, context)
    return tracer.compile.compile_steps(cfg, SYSTEM, STRATEGY, work, phases=(phase,))[phase]


def same_structure(cfg, batches, phase="decode"):
    """The batches among `batches` whose steps have the first one's structure (models.moe: MoE dispatch)."""
    key = lambda b: structure_key(cfg, STRATEGY, MESH, Workload(b, PROMPT, 64), phase)[2:]  # noqa: E731
    return [b for b in batches if key(b) == key(batches[0])]


@pytest.mark.parametrize("which", ["dense", "moe", "mla"])
def test_derived_steps_match_compiled_on_a_grid(which, small):
    """Every point of a 3 x 3 grid derived from its four corners: each figure the held-out check compares (FLOPs,
    HBM bytes as compiled and fused, wire bytes, weights, KV cache, memory per device) within 0.5% of the step
    compiled at that point, matmul for matmul (other work summed per part and kind: tracer.derive.canonical). The
    corners themselves come back exactly."""
    cfg = {"dense": small, "moe": MOE, "mla": MLA}[which]
    batches = same_structure(cfg, [16, 24, 32, 48, 64])[:3]
    contexts = [64, 128, 256]
    assert len(batches) == 3
    steps = {(b, c): compiled(cfg, b, c, "decode") for b in batches for c in contexts}
    corners = {at: s for at, s in steps.items() if at[0] in (batches[0], batches[-1]) and at[1] in (64, 256)}
    model = StepModel.fit("decode", corners)
    for (b, c), step in steps.items():
        derived = model.at(b, c, step.compiler)
        miss, figure = worst_error(derived, step, "decode")
        assert miss <= HELD_OUT_TOLERANCE, f"{which} ({b}, {c}): {figure} off by {miss:.3%}"
        assert derived.provenance.how == "derived" and derived.provenance.anchors == tuple(sorted(corners))
        assert len(derived.cost.kernels) == len(canonical(step, model.layout).cost.kernels)
        if (b, c) in corners:
            assert miss == 0.0
    # decode's KV cache is exactly bilinear: 2 (K and V) x layers x kv heads x head_dim x 2 bytes x B x C, per device
    if which == "dense":
        b, c = batches[1], 128
        per_token = 2 * small.n_layers * small.n_kv_heads * small.head_dim * 2 / 8  # tp splits kv heads 8 ways
        assert model.at(b, c, "cpu").kv_cache_bytes == pytest.approx(b * c * per_token)


def test_prefill_of_a_prompt_is_derived_along_batch_and_context(small):
    """Prefill of one prompt into caches of several sizes: the same structure (the prompt fixes the query blocks)."""
    steps = {(b, c): compiled(small, b, c, "prefill") for b in (8, 16, 32) for c in (64, 128)}
    model = StepModel.fit("prefill", {at: s for at, s in steps.items() if at[0] != 16})
    for (b, c), step in steps.items():
        assert worst_error(model.at(b, c, "cpu"), step, "prefill")[0] <= HELD_OUT_TOLERANCE


def test_structure_changes_are_detected():
    """MoE decode at 8 and 64 sequences plans different dispatch kernels (models.moe: rows, then one bin per
    expert): their structure keys differ, and their compiled steps do not line up kernel for kernel."""
    key = lambda b: structure_key(MOE, STRATEGY, MESH, Workload(b, PROMPT, 64), "decode")  # noqa: E731
    assert key(8)[2][0] != key(64)[2][0]
    with pytest.raises(StructureChanged, match="do not line up"):
        StepModel.fit("decode", {(8, 64): compiled(MOE, 8, 64, "decode"), (64, 64): compiled(MOE, 64, 64, "decode")})
    # a sliding window the context reaches is another structure; a prompt is one of its own for prefill
    windowed = dataclasses.replace(WINDOWED, window_pattern=(128, 0))
    wkey = lambda c, p=PROMPT, phase="decode": structure_key(windowed, STRATEGY, MESH, Workload(32, p, c), phase)  # noqa: E731
    assert wkey(64) != wkey(256) and wkey(256) == wkey(512)
    assert wkey(256, 16, "prefill") != wkey(256, 32, "prefill")


def test_steps_round_trip_through_json(small):
    step = compiled(small, 8, 64, "decode")
    assert step_from_json(step_to_json(step)) == step
    with pytest.raises((ValueError, KeyError, TypeError)):
        step_from_json(json.dumps({"type": "Nonsense"}))


# --- sweeps ---
def grid(model, batches=(16, 24, 32, 48), contexts=(64, 128, 256)):
    return sweep.grid(model=[model], system=["h100x8"], strategy=["tp"], batch=list(batches), context=list(contexts),
                      prompt=[PROMPT])


def test_sweep_derives_inside_each_structure(model_file, counted, tmp_path, monkeypatch, capsys):
    """A 4 x 3 grid: each phase compiled at its 4 corners and one held-out point (the same point for both), the
    other 7 derived, within 0.5% of the same sweep compiled point by point; the JSON says which, from where."""
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    points = grid(model_file)
    records = sweep.run(points, progress=None)
    assert len(counted) == 2 * 5  # both phases at 4 corners and the held-out point, and nothing for the search
    derived = [r for r in records if r["result"]["decode"]["provenance"]["how"] == "derived"]
    assert len(derived) == 12 - 5
    provenance = derived[0]["result"]["decode"]["provenance"]
    assert sorted(map(tuple, provenance["from"])) == [(16, 64), (16, 256), (48, 64), (48, 256)]
    assert provenance["held_out"]["worst_miss"] <= HELD_OUT_TOLERANCE
    counted.clear()
    monkeypatch.setenv("TRACER_CACHE", "")
    plain = sweep.run(points, progress=None, derive=False)
    assert len([c for c in counted if c[0] <= 48]) == 2 * 12  # and the decode step at each search's upper bound
    for d, p in zip(records, plain, strict=True):
        for phase in ("prefill", "decode"):
            a, b = d["result"][phase], p["result"][phase]
            for key in ("flops_per_device", "hbm_bytes_per_device", "comm_bytes_per_device"):
                assert a[key] == pytest.approx(b[key], rel=HELD_OUT_TOLERANCE)
            assert a["memory_per_device"]["total"] == pytest.approx(b["memory_per_device"]["total"],
                                                                    rel=HELD_OUT_TOLERANCE)
        assert d["result"]["max_batch"] == pytest.approx(p["result"]["max_batch"], rel=HELD_OUT_TOLERANCE)


def test_a_sweep_adding_a_batch_inside_compiles_nothing_new(model_file, counted, tmp_path, monkeypatch):
    """The compiled steps are kept per point and phase: a second sweep with one more batch inside the first's
    rectangle derives it from the same corners, checked by the same held-out point, without compiling."""
    monkeypatch.setenv("TRACER_CACHE", str(tmp_path / "cache"))
    sweep.run(grid(model_file), progress=None)
    counted.clear()
    records = sweep.run(grid(model_file, batches=(16, 24, 32, 40, 48)), progress=None)
    assert counted == []
    new = [r for r in records if r["inputs"]["batch"] == 40]
    assert len(new) == 3 and all(r["result"]["decode"]["provenance"]["how"] == "derived" for r in new)


def test_a_held_out_point_that_misses_compiles_every_point(model_file, counted, monkeypatch, capsys):
    """A derivation whose held-out point misses by more than 0.5% (here made to) is not used: every point of that
    structure is compiled, and the sweep says why."""
    monkeypatch.setenv("TRACER_CACHE", "")
    monkeypatch.setattr(sweep_derive, "worst_error", lambda derived, compiled, phase: (0.02, "FLOPs"))
    records = sweep.run(grid(model_file), progress=__import__("sys").stderr)
    assert len([c for c in counted if c[0] <= 48]) == 2 * 12  # besides the searches for the largest batch
    assert all(r["result"][p]["provenance"]["how"] == "compiled" for r in records for p in ("prefill", "decode"))
    err = capsys.readouterr().err
    assert "misses its compiled FLOPs by 2.00%: every point compiled" in err


def test_a_structure_change_inside_a_group_falls_back(counted, monkeypatch, capsys):
    """tiny on the CPU compiler fuses its decode step differently at batch 8 than at 64 (a structure the model's
    plan does not show): a corner does 2% of its work in kinds of kernels the others lack, so every point is
    compiled, and the sweep says so."""
    monkeypatch.setenv("TRACER_CACHE", "")
    records = sweep.run(grid("tiny", batches=(8, 16, 32, 64)), progress=__import__("sys").stderr)
    assert all(r["result"]["decode"]["provenance"]["how"] == "compiled" for r in records)
    assert "another program structure: every point compiled" in capsys.readouterr().err


def test_latency_target_search_reads_the_answer_off_derived_steps(monkeypatch):
    """The largest batch whose decode step meets a target, Llama 3 8B on an H100 server (tp, 4k context): with the
    decode steps derived between two traces, the search reads the answer off them and stops (the next batch misses
    by the derived steps); tracing guess after guess finds the same batch with a trace more."""
    from tracer.api import trace_choosing_batch

    kw = dict(context=4096, prompt=512, ideal=True)  # the times this test's target sits between: at the peaks
    target_ms = 11.0  # between batch 1 (about 10 ms) and the largest that fits
    traced = []
    real = tracer.api.trace

    def counting(*args, **kwargs):
        traced.append(kwargs.get("batch"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tracer.api, "trace", counting)
    derived = trace_choosing_batch("llama3-8b", "h100x8", "tp", "max", target_ms, **kw)
    with_derivation = list(traced)
    traced.clear()
    def unfit(*args):
        raise StructureChanged("made to")

    monkeypatch.setattr(tracer.api.StepModel, "fit", staticmethod(unfit))  # no derivation: guesses traced
    plain = trace_choosing_batch("llama3-8b", "h100x8", "tp", "max", target_ms, **kw)
    assert derived.result.phases["decode"].time.step_s <= target_ms / 1e3
    assert derived.result.work.batch == plain.result.work.batch
    assert "derived" in derived.note and "derived" not in plain.note
    assert len(with_derivation) < len(traced)  # the probe, the largest that fits, the answer; plain: one more
