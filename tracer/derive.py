"""Compile once, answer many: a step's figures at other batches and contexts, derived from a few compiled steps of
the same program structure, and checked against a compiled step that was not used to derive them.

Within one (model, system, strategy, compiler, dtypes) and one program structure, every per-device figure of a
compiled step (each kernel's FLOPs and bytes, its matmul shape, each collective's bytes, the buffers live at the
peak, what the compiler's memory analysis reports) is a polynomial in the batch B and the context C of low degree:
- decode: a + b B + c C + d B C. Weights and fixed buffers (a); each sequence's activations, logits and all-reduced
  hidden states (b B); nothing grows with C alone but position tables (c C); the KV cache read and written and the
  attention over it, scores included (d B C).
- prefill of one prompt into a cache of C: a + b B + c C + d B C likewise, the written cache growing as B C. Its
  attention runs one kernel per query block (models.attention.causal_blocks), so the kernels themselves change with
  the prompt: a prompt is a structure of its own (where the prompt fills the context, prefill is derived along the
  batch only).
So the figures at the corners of a (batch, context) rectangle give every point inside it by bilinear interpolation,
exactly where these terms are the only ones (StepModel). The structure changes, and a rectangle must not span the
change, where the model plans another program (structure_key): MoE dispatch (its kernel, its token groups and bins,
and the slots per bin unless they are an exact multiple of the tokens: capacity rounds up), and a sliding window
that the context reaches (the windowed layers stop growing). A change this misses shows as kernels that differ
between the corners (the steps do not line up: StructureChanged) or as a held-out compiled step the derivation
misses by more than HELD_OUT_TOLERANCE (worst_error); tracer.sweep_derive then compiles every point instead.
"""

import dataclasses
import json
import math
import re
from dataclasses import dataclass

from meshes.strategies import Strategy
from models.config import ModelConfig
from models.moe import plan_groups
from tracer.read import Collective, Cost, Kernel, ProgramCost
from tracer.roofline import memory_bytes
from tracer.step import CompiledStep, Provenance, Workload, XlaMemory

HELD_OUT_TOLERANCE = 0.005  # the most a derived figure may miss the compiled one, relatively (issue 15: 0.5%)
STRUCTURAL = {"groups"}  # integer fields that name things (device positions), not figures: part of the structure


class StructureChanged(ValueError):
    """Compiled steps that do not line up kernel for kernel: they are not one program structure."""


# --- a step as its structure and its figures ---
@dataclass(frozen=True)
class _Number:
    integer: bool


@dataclass(frozen=True)
class _Name:
    """A kernel's name: the compiler numbers its instructions as it meets them (fusion.6 in one program is fusion.8
    in another of the same structure), so two names are one where they differ in that number only."""

    name: str

    def __eq__(self, other) -> bool:
        return isinstance(other, _Name) and _unnumbered(self.name) == _unnumbered(other.name)

    def __hash__(self) -> int:
        return hash(_unnumbered(self.name))


def _unnumbered(name: str) -> str:
    return re.sub(r"\.\d+$", "", name)


def _split(obj, values: list, field: str = ""):
    """The structure of `obj` (its types, names, strings and flags), every figure replaced by a marker and
    appended to `values`."""
    if field == "name" and isinstance(obj, str):
        return _Name(obj)
    if obj is None or isinstance(obj, (bool, str)) or field in STRUCTURAL:
        return obj
    if isinstance(obj, (int, float)):
        values.append(float(obj))
        return _Number(isinstance(obj, int))
    if isinstance(obj, tuple):
        return tuple(_split(x, values) for x in obj)
    if dataclasses.is_dataclass(obj):
        return type(obj), tuple((f.name, _split(getattr(obj, f.name), values, f.name))
                                for f in dataclasses.fields(obj))
    raise TypeError(f"a step holds a {type(obj).__name__}, which derive does not know")


def _join(skeleton, values):
    if isinstance(skeleton, _Name):
        return skeleton.name
    if isinstance(skeleton, _Number):
        value = next(values)
        return int(round(value)) if skeleton.integer else value
    if isinstance(skeleton, tuple) and len(skeleton) == 2 and isinstance(skeleton[0], type):
        cls, fields = skeleton
        return cls(**{name: _join(part, values) for name, part in fields})
    if isinstance(skeleton, tuple):
        return tuple(_join(x, values) for x in skeleton)
    return skeleton


KEPT = ("matmul", "attention")  # kernels kept one by one in a derived step; the others summed per (scope, kind)
UNSHARED = 0.001  # the most of a step's FLOPs or HBM bytes in kinds of work some of its fellow steps lack


def _bucket(k: Kernel) -> tuple:
    """(part, kind, dtypes): the record other work of this kind is summed into. Its time is linear in what it sums
    (tracer.timing: a launch latency each execution plus its bytes or FLOPs at their rate), so the sum and its count
    of launches price it as its kernels one by one do."""
    return k.scope, k.kind, k.dtypes


def _summed(kernels: tuple[Kernel, ...], buckets: dict) -> tuple[Kernel, ...]:
    """Matmuls and attention kernels one by one, in program order; the rest one record per (part of the model,
    kind, dtypes) in `buckets` (key -> the precisions of its FLOPs) holding their sum, zero where these kernels have
    none of it. A compiler splits and fuses elementwise work differently at other sizes (the CPU compiler: an extra
    cache-update fusion at batch 256 that batch 8 does not have), which changes the kernels but not what they add up
    to."""
    kept, summed = [], {key: Cost.zeros() for key in buckets}
    members, launches = dict.fromkeys(buckets, 0), dict.fromkeys(buckets, 0)
    for k in kernels:
        if k.kind in KEPT:
            kept.append(k)
        else:
            summed[_bucket(k)] += k.total
            members[_bucket(k)] += k.members * k.count
            launches[_bucket(k)] += k.launches or k.count  # a record summed before: the launches it stands for
    out = []
    for key in sorted(buckets):
        c, flops, n = summed[key], dict(summed[key].flops_by_dtype), launches[key]
        c = dataclasses.replace(c, flops_by_dtype=tuple((d, flops.get(d, 0.0)) for d in buckets[key]))
        # the executions it stands for, so that each keeps its launch latency (tracer.timing)
        out.append(Kernel(f"{key[0]}/{key[1]}", key[1], key[0], 1, c, None, key[2], members[key], n))
    return (*kept, *out)


def _collectives(collectives: tuple[Collective, ...]) -> tuple[Collective, ...]:
    """One record per (op, devices, dtype): counts and wire bytes added (a collective's time is linear in both,
    tracer.roofline.collective_time), however the compiler combined them."""
    summed: dict = {}
    for c in collectives:
        key = (c.op, c.group_size, c.groups, c.dtype)
        s = summed.get(key)
        if s is None:
            summed[key] = dataclasses.replace(c, scopes=tuple(sorted(c.scopes)))
            continue
        scopes = dict(s.scopes)
        for scope, wire in c.scopes:
            scopes[scope] = scopes.get(scope, 0.0) + wire
        count = s.count + c.count
        summed[key] = dataclasses.replace(s, count=count, bytes=(s.bytes * s.count + c.bytes * c.count) / count,
                                          wire_bytes_per_device=s.wire_bytes_per_device + c.wire_bytes_per_device,
                                          scopes=tuple(sorted(scopes.items())))
    return tuple(summed[key] for key in sorted(summed, key=repr))


@dataclass(frozen=True)
class Layout:
    """The buckets a set of steps is summed into (canonical): each (part, kind, dtypes) of work other than matmuls
    and attention that any of them does, with the precisions of its FLOPs; compiled kernels and fused apart."""

    kernels: dict
    fused: dict
    common: frozenset  # ("kernels" or "fused", bucket) that every step has

    @staticmethod
    def of(steps) -> "Layout":
        kernels: dict = {}
        fused: dict = {}
        common = None
        for step in steps:
            mine = set()
            for name, into, ks in (("kernels", kernels, step.cost.kernels), ("fused", fused, step.cost.fused)):
                for k in ks:
                    if k.kind not in KEPT:
                        mine.add((name, _bucket(k)))
                        into[_bucket(k)] = tuple(sorted(set(into.get(_bucket(k), ())) |
                                                        {d for d, _ in k.cost.flops_by_dtype}))
            common = mine if common is None else common & mine
        return Layout(kernels, fused, frozenset(common or ()))

    def unshared(self, step: CompiledStep) -> float:
        """The largest share of the step's FLOPs or HBM bytes (as compiled, or fused) in buckets that some of its
        fellow steps lack: 0 where they all do the same kinds of work."""
        worst = 0.0
        for name, kernels in (("kernels", step.cost.kernels), ("fused", step.cost.fused)):
            odd = sum((k.total for k in kernels if k.kind not in KEPT and (name, _bucket(k)) not in self.common),
                      Cost.zeros())
            total = sum((k.total for k in kernels), Cost.zeros())
            worst = max(worst, odd.flops / total.flops if total.flops else 0.0,
                        odd.hbm_bytes / total.hbm_bytes if total.hbm_bytes else 0.0)
        return worst


def canonical(step: CompiledStep, layout: Layout) -> CompiledStep:
    """The step as derivation reads it: the same totals by part of the model, kind and precision, and the same
    collective times, with what a compiler may split or fuse differently at other sizes summed. Its structure is
    then its matmul and attention kernels, in order, and its collectives."""
    cost = step.cost
    cost = dataclasses.replace(cost, kernels=_summed(cost.kernels, layout.kernels),
                               fused=_summed(cost.fused, layout.fused), collectives=_collectives(cost.collectives),
                               notes=tuple(sorted(set(cost.notes))))
    return dataclasses.replace(step, cost=cost, compile_s=0.0, provenance=None)


def split_step(step: CompiledStep, layout: Layout) -> tuple[object, list[float]]:
    """(structure, figures) of a compiled step in its canonical form; its provenance and compile time are not
    figures."""
    values: list[float] = []
    skeleton = _split(canonical(step, layout), values)
    return skeleton, values


def _lines_up(steps: dict, phase: str) -> tuple[Layout, dict]:
    """(their layout, each one's (structure, figures)), or StructureChanged where they are not one structure:
    matmul or attention kernels or collectives that differ, or other work that some lack carrying more than UNSHARED
    of a step."""
    layout = Layout.of(steps.values())
    split, first = {}, None
    for at, step in steps.items():
        split[at] = split_step(step, layout)
        first = first or at
        if split[at][0] != split[first][0]:
            raise StructureChanged(f"the {phase} steps compiled at (batch, context) {first} and {at} do not line up "
                                   "kernel for kernel (matmuls, attention, collectives): another program structure")
        share = layout.unshared(step)
        if share > UNSHARED:
            raise StructureChanged(f"the {phase} step compiled at (batch, context) {at} does {share:.2%} of its "
                                   "work in kinds of kernels its fellows do not (or lacks theirs): another program "
                                   "structure")
    return layout, split


# --- interpolation ---
def _lagrange(nodes: tuple[int, ...], x: float) -> list[float]:
    """Weights of the values at `nodes` that give the polynomial through them at x (one node: a constant)."""
    return [math.prod((x - m) / (n - m) for m in nodes if m != n) for n in nodes]


@dataclass(frozen=True)
class StepModel:
    """One phase's compiled steps at the corners of a (batch, context) rectangle, all one structure: any step inside
    it by bilinear interpolation (a side of one value: that value only)."""

    phase: str
    batches: tuple[int, ...]  # one or two: the rectangle's sides
    contexts: tuple[int, ...]
    skeleton: object
    corners: dict  # (batch, context) -> figures
    layout: Layout  # what the steps' other work is summed into

    @staticmethod
    def fit(phase: str, steps: dict[tuple[int, int], CompiledStep]) -> "StepModel":
        batches = tuple(sorted({b for b, _ in steps}))
        contexts = tuple(sorted({c for _, c in steps}))
        if len(batches) > 2 or len(contexts) > 2 or len(steps) != len(batches) * len(contexts):
            raise ValueError(f"a step model needs the corners of a rectangle, got {sorted(steps)}")
        layout, split = _lines_up(steps, phase)
        corners = {at: values for at, (_, values) in split.items()}
        skeleton = next(iter(split.values()))[0]
        return StepModel(phase, batches, contexts, skeleton, corners, layout)

    @property
    def anchors(self) -> tuple[tuple[int, int], ...]:
        return tuple(sorted(self.corners))

    def covers(self, batch: int, context: int) -> bool:
        return self.batches[0] <= batch <= self.batches[-1] and self.contexts[0] <= context <= self.contexts[-1]

    def at(self, batch: int, context: int, compiler: str, held_out: tuple | None = None,
           extrapolate: bool = False) -> CompiledStep:
        """The step at (batch, context), inside the rectangle unless `extrapolate` (a line beyond it: the largest
        batch that fits is estimated so, as a line through two compiled points always was)."""
        if not extrapolate and not self.covers(batch, context):
            raise ValueError(f"({batch}, {context}) lies outside the compiled {self.phase} steps {self.anchors}")
        wb, wc = _lagrange(self.batches, batch), _lagrange(self.contexts, context)
        figures = [0.0] * len(next(iter(self.corners.values())))
        for i, b in enumerate(self.batches):
            for j, c in enumerate(self.contexts):
                w = wb[i] * wc[j]
                figures = [f + w * v for f, v in zip(figures, self.corners[(b, c)], strict=True)]
        step = _join(self.skeleton, iter(figures))
        return dataclasses.replace(step, compiler=compiler, provenance=Provenance("derived", self.anchors, held_out))


# --- the check ---
FIGURES = {  # what the held-out point is compared on
    "FLOPs": lambda s: s.cost.flops,
    "HBM bytes": lambda s: s.cost.hbm_bytes,
    "fused HBM bytes": lambda s: s.cost.fused_hbm_bytes,
    "wire bytes": lambda s: s.cost.comm_bytes,
    "weight bytes": lambda s: s.weight_bytes,
    "KV cache bytes": lambda s: s.kv_cache_bytes,
}


def worst_error(derived: CompiledStep, compiled: CompiledStep, phase: str) -> tuple[float, str]:
    """(the largest relative miss of a derived step's figures against the compiled step's, and which figure); a
    compiled step of another structure misses by infinity."""
    try:
        _lines_up({"derived": derived, "compiled": compiled}, phase)
    except StructureChanged:
        return math.inf, "program structure"
    worst, which = 0.0, "none"
    figures = {**FIGURES, "memory per device": lambda s: memory_bytes(s, phase)}
    for name, figure in figures.items():
        d, c = float(figure(derived)), float(figure(compiled))
        error = abs(d - c) / abs(c) if c else (0.0 if abs(d) < 1.0 else math.inf)
        if error > worst:
            worst, which = error, name
    return worst, which


# --- the structure a step's program takes ---
def structure_key(cfg: ModelConfig, strategy: Strategy, mesh: dict, work: Workload, phase: str) -> tuple:
    """What decides a step's program structure beyond the family's inputs: steps with the same key differ in figures
    only (the module docstring). Prefill's prompt is part of it (one attention kernel per query block)."""
    windows = sorted({w for w in cfg.window_pattern if w})
    key: list = [phase, tuple(work.context >= w for w in windows)]  # a windowed layer's cache: min(window, context)
    if cfg.index_topk and phase == "decode":
        key.append(work.context > cfg.index_topk)  # sparse attention: the chosen rows gathered, not the whole cache
    if phase == "prefill":
        key += [work.prompt, tuple(work.prompt > w for w in windows)]  # banded attention past the window
    if cfg.is_moe:
        tokens = work.tokens(phase)
        split = phase == "prefill" and strategy.ways("seq", mesh) > 1
        tok, merged, groups, plan = plan_groups(cfg, tokens, split,
                                                lambda axis, shared=None: strategy.ways(axis, mesh, shared=shared))
        exact = math.isclose(plan.slots, plan.assignments * cfg.capacity_factor)
        key.append((plan.kernel, tok, merged, groups, plan.bins, "exact" if exact else plan.capacity))
    return tuple(key)


# --- steps as JSON (the sweep's cache of compiled steps) ---
TYPES = {cls.__name__: cls for cls in (CompiledStep, ProgramCost, Kernel, Cost, Collective, XlaMemory, Provenance)}


def _encode(obj):
    if dataclasses.is_dataclass(obj):
        return {"type": type(obj).__name__, **{f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(x) for x in obj]}
    return obj


def _decode(data):
    if isinstance(data, dict) and "tuple" in data:
        return tuple(_decode(x) for x in data["tuple"])
    if isinstance(data, dict):
        cls = TYPES[data["type"]]
        return cls(**{k: _decode(v) for k, v in data.items() if k != "type"})
    if isinstance(data, (bool, int, float, str)) or data is None:
        return data
    raise ValueError(f"not a stored step: {type(data).__name__}")


def step_to_json(step: CompiledStep) -> str:
    return json.dumps(_encode(step))


def step_from_json(text: str) -> CompiledStep:
    """A stored step; ValueError (or KeyError, TypeError) for anything that is not one."""
    step = _decode(json.loads(text))
    if not isinstance(step, CompiledStep):
        raise ValueError("not a stored step")
    return step
