"""Serving sweeps (`tracer sweep --isls ... --osls ...`): every combination of models, systems, strategies, ISL, OSL
and concurrencies, each point a workload's steady state (tracer.serving), many from few compiles.

A point of N sequences needs the decode steps at (N, ISL) and (N, ISL + OSL) and one prefill of a prompt per
replica. Those decode steps are trace points' decode steps, so they go through the trace sweep's derivation
(tracer.sweep_derive, decode alone): grouped by program structure, compiled at the corners of each group's
(concurrency, context) rectangle and one held-out point, derived inside, or every one compiled where a group does
not line up. The prefill is compiled once per (model, system, strategy, ISL). Then each workload's Pareto front
(tokens/s per user against USD per million output tokens, over systems, strategies and concurrencies) is compiled
where it was derived, so every figure on a front is a compiled one. A concurrency of `max` runs tracer.serving
as it is (its own compiles).
"""

import dataclasses
import itertools
from dataclasses import dataclass

from base.inputs import ConfigError
from tracer.errors import one_line
from tracer.sweep import SweepPoint, check_axes
from tracer.sweep_derive import Derivation, compile_point, store_step, stored_step

AXES = ("model", "system", "strategy", "isl", "osl", "batch", "compiler", "weights", "kv_cache")
FIGURES = ("concurrency", "tpot_s", "ttft_s", "output_tokens_per_s", "usd_per_mtok_input", "usd_per_mtok_output")


@dataclass(frozen=True)
class ServingPoint:
    model: str
    system: str
    strategy: str
    isl: int
    osl: int
    batch: int | str  # sequences running at once, or "max"
    compiler: str = "cpu"
    weights: str | None = None
    kv_cache: str | None = None


def serving_grid(**axes) -> list[ServingPoint]:
    """Every combination of the given values (lists); isl, osl and batch are required with the names."""
    unknown = set(axes) - set(AXES)
    if unknown:
        raise ConfigError(f"a serving sweep has no axis {', '.join(sorted(unknown))} (its axes: {', '.join(AXES)}; "
                          "contexts and prompts come from --isls and --osls)")
    for name in ("model", "system", "strategy", "isl", "osl", "batch"):
        if not axes.get(name):
            raise ConfigError(f"a serving sweep needs at least one {name} (--{name}s or `{name}s = [...]`)")
    check_axes({a: v for a, v in axes.items() if v and a in ("model", "system", "strategy", "batch", "compiler")})
    for name in ("isl", "osl"):
        check_axes({"context": axes[name]}, f"serving sweep ({name}s)")
    names = [a for a in AXES if axes.get(a)]
    return [ServingPoint(**dict(zip(names, values, strict=True)))
            for values in itertools.product(*(axes[a] for a in names))]


def valid(result) -> bool:
    return isinstance(result, dict) and all(isinstance(result.get(k), int | float) for k in FIGURES)


def serve_point(point: ServingPoint) -> dict:
    """In a worker: tracer.serving at the point as it is (a concurrency of max)."""
    from tracer.serving import serving

    try:
        return serving(point.model, point.system, point.strategy, point.isl, point.osl, point.batch,
                       weights=point.weights, kv_cache=point.kv_cache, compiler=point.compiler).to_dict()
    except ConfigError as err:
        return {"error": str(err)}
    except Exception as err:  # recorded in one line, as a trace point's failure is
        return {"error": one_line(err)}


def _steps_point(p: ServingPoint, n: int, context: int) -> SweepPoint:
    return SweepPoint(p.model, p.system, p.strategy, n, context, p.isl, p.compiler, p.weights, p.kv_cache)


def _replicas(p: ServingPoint) -> int:
    from meshes.strategies import get_strategy
    from meshes.systems import get_system

    return get_strategy(p.strategy).replicas(get_system(p.system))


def _pipelined(p: ServingPoint) -> bool:
    """A pipeline strategy's point: tracer.serving prices it from its last stage, not from derived whole steps."""
    from meshes.strategies import get_strategy

    return bool(get_strategy(p.strategy).pipeline)


def compute(points, todo, max_batch, env, folder, derive, finish, progress, dispatch):
    """tracer.sweep.run's computation for serving points (its signature: tracer.sweep._compute)."""
    from tracer import sweep

    def keep(i: int, result: dict):
        if folder is not None and "error" not in result:
            sweep.store(points[i], env, False, folder, result)
        finish(i, result, False)

    plain = [i for i in todo if not derive or not isinstance(points[i].batch, int) or _pipelined(points[i])]
    mine = [i for i in todo if i not in plain]
    steps, errors = {}, {}
    # every point's decode steps are grouped (those done before too, whose compiled steps the cache holds), so a
    # point added inside an earlier sweep's rectangle is derived from its corners; only this run's are computed
    vpoints, where = _decode_points(points, [i for i in range(len(points)) if i in mine or
                                             (derive and isinstance(points[i].batch, int))])
    needed = sorted({v for i in mine for v in where[i]})
    prefills, pre_of = _prefills(points, mine, errors)
    deriving = Derivation(vpoints, False, env, folder, phases=("decode",)).plan(needed)
    tasks = [(serve_point, (points[i],), ("point", i)) for i in plain]
    tasks += [(fn, args, ("decode", v)) for fn, args, v in deriving.tasks()]
    tasks += _uncached(vpoints, [v for v in needed if v not in deriving.handled], "decode", steps, env, folder)
    tasks += _uncached(list(prefills), range(len(prefills)), "prefill", steps, env, folder)

    def done(k: int, result: dict, tasks=tasks):
        kind, key = tasks[k][2]
        if kind == "point":
            keep(key, result)
        elif kind == "prefill" or key not in deriving.handled:
            step = result.get("steps", {}).get(kind)
            steps[(kind, key)] = step or result.get("error", "did not compile")
            if step is not None:  # kept, as the derivation keeps its own
                store_step((list(prefills) if kind == "prefill" else vpoints)[key], kind, env, folder, step)
        else:
            deriving.done(key, result)

    dispatch([t[:2] for t in tasks], done)
    more = [(fn, args, ("decode", v)) for fn, args, v in deriving.check()]
    dispatch([t[:2] for t in more], lambda k, r: done(k, r, more))
    results = {i: _assemble(points[i], where[i], pre_of.get(i), deriving, steps, errors.get(i)) for i in mine}
    confirmed: set[int] = set()
    while confirm := [i for i in _fronts_to_confirm(points, results) if i not in confirmed]:
        # a front point compiled moves a little (its kernels' times are not affine in their figures), which can put
        # a derived neighbour on the front: compiled in turn, until every front point is a compiled one
        confirmed.update(confirm)
        at_mean = {i: len(vpoints) + k for k, i in enumerate(confirm)}  # compiled where the figures are read
        vpoints += [_steps_point(points[i], points[i].batch, points[i].isl + points[i].osl // 2) for i in confirm]
        again = _uncached(vpoints, list(at_mean.values()), "decode", steps, env, folder)
        dispatch([t[:2] for t in again], lambda k, r, again=again: done(k, r, again))
        for i in confirm:  # where the mean context cannot be compiled (it does not divide), the derivation stands
            again_i = _assemble(points[i], (at_mean[i],), pre_of[i], deriving, steps, None,
                                "on its workload's Pareto front")
            results[i] = again_i if "error" not in again_i else results[i]
    for i in mine:
        keep(i, results[i])
    if progress is not None:
        derived = sum(1 for r in results.values() if "error" not in r and "derived" in r["compiled"][0])
        progress.write(f"\n{derived} of {len(results)} points priced from derived decode steps (the {len(confirmed)} "
                       "derived ones on Pareto fronts compiled since); " + deriving.summary().splitlines()[0])


def _prefills(points, mine: list[int], errors: dict) -> tuple[dict, dict]:
    """(one prefill per (model, system, strategy, ISL, ...) -> its number, each point's number); a point whose
    system or strategy is unknown gets its error."""
    prefills, pre_of = {}, {}
    for i in mine:
        p = points[i]
        try:
            pre_of[i] = prefills.setdefault(_steps_point(p, _replicas(p), p.isl), len(prefills))
        except ConfigError as err:
            errors[i] = str(err)
    return prefills, pre_of


def _uncached(steps_points: list, indices, phase: str, steps: dict, env: dict, folder) -> list[tuple]:
    """The compiles of these points' `phase` steps that the cache of compiled steps does not hold; those it holds
    go into `steps`."""
    out = []
    for i in indices:
        stored = stored_step(steps_points[i], phase, env, folder)
        if stored is not None:
            steps[(phase, i)] = stored
        else:
            out.append((compile_point, (steps_points[i], (phase,), False), (phase, i)))
    return out


def _decode_points(points, mine: list[int]) -> tuple[list[SweepPoint], dict]:
    """The decode steps the points need, as trace points, each once (points of one ISL share (N, ISL)); and each
    point's two among them."""
    vpoints, where, index = [], {}, {}
    for i in mine:
        p = points[i]
        pair = (_steps_point(p, p.batch, p.isl), _steps_point(p, p.batch, p.isl + p.osl))
        for v in pair:
            if v not in index:
                index[v] = len(vpoints)
                vpoints.append(v)
        where[i] = tuple(index[v] for v in pair)
    return vpoints, where


def _decode_step(deriving: Derivation, steps: dict, v: int):
    if ("decode", v) in steps:
        return steps[("decode", v)], "compiled"
    step = deriving.step(v, "decode")
    how = "compiled" if step.provenance is None else (f"derived from {list(step.provenance.anchors)}, held out "
                                                      f"{step.provenance.held_out[:2]} within "
                                                      f"{step.provenance.held_out[2]:.3%}")
    return step, how


def _assemble(p: ServingPoint, where: tuple[int, ...], pre_key: int | None, deriving: Derivation, steps: dict,
              error: str | None, why: str = "") -> dict:
    from tracer.serving import from_steps

    if error is not None:
        return {"error": error}
    try:
        pre = steps[("prefill", pre_key)]
        found = [_decode_step(deriving, steps, v) for v in where]
        for step in (pre, *(s for s, _ in found)):
            if isinstance(step, str):
                return {"error": step}
        contexts = (p.isl, p.isl + p.osl) if len(where) == 2 else (p.isl + p.osl // 2,)
        hows = sorted({how for _, how in found})
        provenance = (f"decode at batch {p.batch}, context{'s' if len(contexts) > 1 else ''} "
                      f"{' and '.join(map(str, contexts))}: {'; '.join(hows)}" + (f" ({why})" if why else ""),
                      f"prefill of one {p.isl}-token prompt per replica (compiled)")
        decode = {(p.batch, c): step for c, (step, _) in zip(contexts, found, strict=True)}
        return from_steps(p.model, p.system, p.strategy, p.isl, p.osl, p.batch, decode, pre, provenance,
                          weights=p.weights, kv_cache=p.kv_cache, compiler=p.compiler).to_dict()
    except KeyError:
        return {"error": next((deriving.errors[v] for v in where if v in deriving.errors), "a step did not compile")}
    except ConfigError as err:
        return {"error": str(err)}
    except Exception as err:
        return {"error": one_line(err)}


def _fronts_to_confirm(points, results: dict) -> list[int]:
    """The points priced from derived decode steps that lie on their workload's Pareto front."""
    ok = [i for i, r in results.items() if "error" not in r]
    front = on_fronts([(dataclasses.asdict(points[i]), results[i]) for i in ok])
    return [ok[k] for k in front if "derived" in results[ok[k]]["compiled"][0]]


WORKLOAD = ("model", "isl", "osl", "weights", "kv_cache", "compiler")


def on_fronts(items: list[tuple[dict, dict]]) -> list[int]:
    """Which (inputs, result) pairs lie on their workload's Pareto front: none of the same workload (model, ISL,
    OSL, dtypes, compiler; any system, strategy or concurrency) at least as fast per user (1 / TPOT) and as cheap per
    output token, and better in one."""
    def beats(a: dict, b: dict) -> bool:
        fast, cheap = 1 / a["tpot_s"] >= 1 / b["tpot_s"], a["usd_per_mtok_output"] <= b["usd_per_mtok_output"]
        return fast and cheap and (a["tpot_s"] < b["tpot_s"] or a["usd_per_mtok_output"] < b["usd_per_mtok_output"])

    key = [tuple(inputs[k] for k in WORKLOAD) for inputs, _ in items]
    return [i for i, (_, r) in enumerate(items)
            if not any(key[j] == key[i] and beats(o, r) for j, (_, o) in enumerate(items) if j != i)]
