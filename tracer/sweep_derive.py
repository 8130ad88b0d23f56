"""A sweep that compiles a few points and derives the rest (tracer.derive): its points grouped by everything but
batch and context and by program structure, per phase; in each group that is worth it, the corners of its
(batch, context) rectangle compiled, and one point inside it (the held-out point, not used to derive anything)
compiled and compared with its derivation. A group whose corners do not line up, or whose held-out point misses by
more than HELD_OUT_TOLERANCE, has every point compiled instead, and the sweep says so. Every compiled step is kept
in the sweep's cache, so a later sweep that adds a batch or a context inside a rectangle compiles nothing new.
"""

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from base.inputs import ConfigError
from tracer.derive import (
    HELD_OUT_TOLERANCE,
    StepModel,
    StructureChanged,
    step_from_json,
    step_to_json,
    structure_key,
    worst_error,
)
from tracer.errors import one_line

PHASES = ("prefill", "decode")


def point_setup(point):
    """The point's checked inputs (tracer.api.setup)."""
    from tracer.api import setup

    return setup(point.model, point.system, point.strategy, point.batch, point.prompt, point.context,
                 weights=point.weights, kv_cache=point.kv_cache, compiler=point.compiler)


def compile_point(point, phases: tuple[str, ...], search: bool) -> dict:
    """In a worker: {"steps": {phase: CompiledStep}, "max_batch": (batch, how) or None}, or {"error": ...}. search:
    the largest batch that fits, from the compiled decode step (tracer.api._max_batch)."""
    from tracer.api import _max_batch
    from tracer.compile import compile_steps
    from tracer.roofline import memory

    try:
        s = point_setup(point)
        steps = compile_steps(s.cfg, s.system, s.strategy, s.work, phases=phases, compiler=s.compiler)
        found = None
        if search and "decode" in steps:
            found = _max_batch(s.cfg, s.system, s.strategy, s.work, memory(steps["decode"], s.system, "decode"),
                               s.strategy.ways("batch", s.mesh), s.compiler, False)
        return {"steps": steps, "max_batch": found}
    except ConfigError as err:
        return {"error": str(err)}
    except Exception as err:  # recorded in one line, as a traced point's failure is
        return {"error": one_line(err)}


@dataclass
class Group:
    """One phase's points of one family and one program structure: (batch, context) -> point index."""

    phase: str
    members: dict
    corners: tuple = ()
    held_out: tuple | None = None  # (batch, context)
    model: StepModel | None = None
    checked: tuple | None = None  # (batch, context, worst relative miss, of which figure) of the held-out point
    failed: bool = False  # every point compiled
    outcome: str = ""  # how the held-out point compared; or why every point is compiled

    @property
    def derives(self) -> bool:
        return self.model is not None


@dataclass
class Derivation:
    """The sweep's points that derivation serves, the compiles it needs, and its results."""

    points: list
    max_batch: bool
    env: dict
    folder: Path | None
    groups: list = field(default_factory=list)
    handled: set = field(default_factory=set)  # point indices
    steps: dict = field(default_factory=dict)  # (point index, phase) -> CompiledStep
    errors: dict = field(default_factory=dict)  # point index -> error
    found: dict = field(default_factory=dict)  # point index -> (max batch, how), from its worker's search
    finished: set = field(default_factory=set)  # point indices whose results were given
    phases: tuple = PHASES  # the phases it plans (a serving sweep: decode alone)

    def plan(self, todo: list[int]) -> "Derivation":
        """Group the sweep's points (int batches whose inputs check; those already done too, whose compiled steps
        the cache may hold); keep the groups where deriving saves a compile, and serve the points in `todo` of each
        family with one such group."""
        by_key: dict = {}
        families: dict = {}
        seen: dict = {}
        for i in range(len(self.points)):
            point = self.points[i]
            if not isinstance(point.batch, int):
                continue
            try:
                s = point_setup(point)
            except ConfigError:
                continue  # its trace records the error
            family = dataclasses.replace(point, batch=0, context=0)
            if (point.batch, point.context) in seen.setdefault(family, set()):
                continue  # the same point twice: traced as it is
            seen[family].add((point.batch, point.context))
            families.setdefault(family, []).append(i)
            for phase in self.phases:
                key = (family, structure_key(s.cfg, s.strategy, s.mesh, s.work, phase))
                by_key.setdefault(key, Group(phase, {})).members[(point.batch, point.context)] = i
        for group in by_key.values():
            batches = sorted({b for b, _ in group.members})
            contexts = sorted({c for _, c in group.members})
            corners = tuple(sorted({(b, c) for b in (batches[0], batches[-1]) for c in (contexts[0], contexts[-1])}))
            inside = [at for at in group.members if at not in corners]
            if all(c in group.members for c in corners) and len(inside) >= 2:
                group.corners = corners
                group.held_out = self._held_out(group, inside, batches, contexts)
        worth = {f for f, members in families.items()
                 if any(g.corners and g.members[g.corners[0]] in members for g in by_key.values())}
        members = {i for f in worth for i in families[f]}
        self.handled = members & set(todo)
        self.groups = [g for g in by_key.values() if set(g.members.values()) <= members and
                       set(g.members.values()) & self.handled]
        return self

    def _held_out(self, group: Group, inside: list, batches: list, contexts: list) -> tuple:
        """The point inside the rectangle to compile and compare: one already in the cache if any, else the one
        nearest the centre."""
        def distance(at):
            b, c = at
            nb = (b - batches[0]) / (batches[-1] - batches[0]) if batches[-1] > batches[0] else 0.5
            nc = (c - contexts[0]) / (contexts[-1] - contexts[0]) if contexts[-1] > contexts[0] else 0.5
            return (self._stored(group.members[at], group.phase) is None, (nb - 0.5) ** 2 + (nc - 0.5) ** 2, at)

        return min(inside, key=distance)

    # --- compiling ---
    def _needs(self) -> dict[int, set[str]]:
        """Point index -> the phases to compile there: a deriving group's corners and held-out point (done or
        not), every point to do of the other groups."""
        need: dict[int, set[str]] = {}
        for g in self.groups:
            where = ((*g.corners, g.held_out) if g.corners and not g.failed else
                     [at for at, i in g.members.items() if i in self.handled])
            for at in where:
                i = g.members[at]
                if (i, g.phase) not in self.steps and i not in self.errors:
                    need.setdefault(i, set()).add(g.phase)
        return need

    def tasks(self) -> list[tuple]:
        """(compile_point, args, point index) for what must be compiled and is not in the cache."""
        out = []
        for i, phases in sorted(self._needs().items()):
            for phase in sorted(phases):
                stored = self._stored(i, phase)
                if stored is not None:
                    self.steps[(i, phase)] = stored
            left = tuple(p for p in self.phases if p in phases and (i, p) not in self.steps)
            if left:
                search = self.max_batch and "decode" in left and not self._decode_derived(i)
                out.append((compile_point, (self.points[i], left, search), i))
        return out

    def _decode_derived(self, i: int) -> bool:
        return any(g.phase == "decode" and g.corners and not g.failed and i in g.members.values()
                   for g in self.groups)

    def done(self, i: int, result: dict) -> list[tuple[int, dict]]:
        """Take a compile's result; the points it finishes: (index, result dict)."""
        if "error" in result:
            self.errors[i] = result["error"]
        else:
            for phase, step in result["steps"].items():
                self.steps[(i, phase)] = step
                self._store(i, phase, step)
            if result.get("max_batch") is not None:
                self.found[i] = tuple(result["max_batch"])
        compiled = all((i, p) in self.steps for p in self.phases) and (not self.max_batch or i in self.found)
        whole = self.phases == PHASES  # trace points (a serving sweep's take their steps: step())
        return list(self._results([i])) if whole and i in self.handled and (i in self.errors or compiled) else []

    def check(self) -> list[tuple]:
        """Fit each deriving group from its corners and compare its held-out point; a group that fails compiles
        every point. The compiles that takes."""
        for g in self.groups:
            if g.corners and not g.failed and g.model is None:
                self._check(g)
        return self.tasks()

    def _check(self, g: Group):
        g.failed = True
        if any(g.members[at] in self.errors for at in (*g.corners, g.held_out)):
            g.outcome = "a corner or the held-out point did not compile: every point compiled"
            return
        try:
            model = StepModel.fit(g.phase, {at: self.steps[(g.members[at], g.phase)] for at in g.corners})
        except StructureChanged as err:
            g.outcome = f"{err}: every point compiled"
            return
        compiled = self.steps[(g.members[g.held_out], g.phase)]
        miss, figure = worst_error(model.at(*g.held_out, compiled.compiler), compiled, g.phase)
        if miss > HELD_OUT_TOLERANCE:
            g.outcome = (f"the held-out point {g.held_out} misses its compiled {figure} by "
                         f"{'a structure' if math.isinf(miss) else f'{miss:.2%}'}: every point compiled")
            return
        g.failed, g.model, g.checked = False, model, (*g.held_out, miss, figure)
        g.outcome = f"derived; the held-out point {g.held_out} within {miss:.3%} ({figure})"

    # --- results ---
    def results(self):
        """(point index, its result dict or {"error"}), every handled point not finished yet."""
        return self._results(sorted(self.handled - self.finished))

    def _results(self, indices):
        from tracer.api import price

        models = {(g.phase, i): g for g in self.groups for i in g.members.values()}
        for i in indices:
            self.finished.add(i)
            if i in self.errors:
                yield i, {"error": self.errors[i]}
                continue
            try:
                s = point_setup(self.points[i])
                b, c = s.work.batch, s.work.context
                steps = {}
                for phase in PHASES:
                    g = models[(phase, i)]
                    steps[phase] = self.steps.get((i, phase)) or g.model.at(b, c, s.compiler, g.checked)
                decode = models[("decode", i)]
                decode_at = (lambda batch, g=decode, c=c, compiler=s.compiler:
                             g.model.at(batch, c, compiler, extrapolate=True)) if decode.derives else None
                result = price(s, steps, self.max_batch and i not in self.found, decode_at=decode_at,
                               found=self.found.get(i) if self.max_batch else None)
                yield i, result.to_dict()
            except ConfigError as err:
                yield i, {"error": str(err)}
            except Exception as err:
                yield i, {"error": one_line(err)}

    def step(self, i: int, phase: str):
        """The point's step: compiled, or derived in its group; KeyError where neither (its compile failed)."""
        if (i, phase) in self.steps:
            return self.steps[(i, phase)]
        g = next(g for g in self.groups if g.phase == phase and i in g.members.values() and g.derives)
        point, corner = self.points[i], self.steps[(g.members[g.corners[0]], phase)]
        return g.model.at(point.batch, point.context, corner.compiler, g.checked)

    def summary(self) -> str:
        derived = sum(1 for g in self.groups if g.derives for i in g.members.values() if (i, g.phase) not in self.steps)
        compiled = len(self.steps)
        lines = [f"derived {derived} phase steps from {compiled} compiled ({len(self.groups)} structures)"]
        lines += [f"  {g.phase} {sorted(g.members)[0]}..{sorted(g.members)[-1]}: {g.outcome}"
                  for g in self.groups if g.outcome]
        return "\n".join(lines)

    def _stored(self, i: int, phase: str):
        return stored_step(self.points[i], phase, self.env, self.folder)

    def _store(self, i: int, phase: str, step):
        store_step(self.points[i], phase, self.env, self.folder, step)


# --- the cache of compiled steps: per point and phase, beside the sweep's cache of results ---
def _step_path(point, phase: str, env: dict, folder: Path) -> Path:
    inputs = {"point": dataclasses.asdict(point), "phase": phase, "env": env}
    return folder / f"{hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()}.step.json"


def stored_step(point, phase: str, env: dict, folder: Path | None):
    """The point's compiled `phase` step from the cache, or None (no cache, no entry, or one that cannot be
    trusted)."""
    if folder is None:
        return None
    try:
        entry = json.loads(_step_path(point, phase, env, folder).read_text(encoding="utf-8"))
        if hashlib.sha256(entry["step"].encode()).hexdigest() != entry["checksum"]:
            return None
        return step_from_json(entry["step"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def store_step(point, phase: str, env: dict, folder: Path | None, step):
    """Keep a compiled step, whole or not at all."""
    if folder is None:
        return
    path = _step_path(point, phase, env, folder)
    text = step_to_json(step)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"checksum": hashlib.sha256(text.encode()).hexdigest(), "step": text}),
                       encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
