"""Screening a sweep (`tracer sweep --screen MARGIN`): every point's decode step estimated by the textbook in
milliseconds, no compile, and only the points that can matter compiled.

For each workload (model, context, prompt, stored dtypes) the estimates' Pareto front of tokens/s per user against
USD per million output tokens is found among the points whose weights and KV cache fit; a point is kept when it
lies within MARGIN of that front (it would take less than that improvement, on either count, to escape every point
that beats it on both). A point the estimate cannot judge (a `max` batch, inputs it cannot resolve) is kept, and the
trace says what it is. The estimate's communication is a lower bound (tracer.roofline.analytic_comms_s: tensor
parallelism's all-reduces and FSDP's all-gathers, MoE exchanges left out), and temporaries are left out, so it errs
fast, never slow; the margin absorbs what remains between the estimate and the compiled figures.
"""

import math
from dataclasses import dataclass

from base.inputs import ConfigError


@dataclass(frozen=True)
class Estimate:
    """A point's decode step by the textbook (tracer.roofline.analytic)."""

    point: object  # tracer.sweep.SweepPoint
    tokens_per_s_per_user: float  # 1 / the step: max(FLOPs at the peak, HBM bytes at the bandwidth) + collectives
    usd_per_mtok_out: float
    fits: bool  # its weights and KV cache within HBM


def estimate(point) -> Estimate | None:
    """None where the estimate cannot judge the point: a `max` batch, or inputs that do not resolve."""
    from meshes.strategies import get_strategy
    from meshes.systems import get_system
    from models.files import get_model
    from tracer.roofline import analytic, analytic_comms_s, analytic_memory, splits, usd_per_mtok
    from tracer.step import Workload

    if not isinstance(point.batch, int):
        return None
    try:
        cfg = get_model(point.model).with_dtypes(point.weights, point.kv_cache)
        system, strategy = get_system(point.system), get_strategy(point.strategy)
        split = splits(strategy, strategy.mesh_shape(system))
        work = Workload(point.batch, point.prompt or point.context, point.context)
        a = analytic(cfg, work, "decode", split)
        precision = cfg.weights if cfg.weights in system.chip.peak_flops else "bfloat16"
        step = max(a.flops_per_device / system.chip.flops_for(precision), a.hbm_bytes_per_device / system.chip.hbm_bw
                   ) + analytic_comms_s(cfg, work, split, system)
        held = analytic_memory(cfg, work, split)
    except (ConfigError, ZeroDivisionError):
        return None
    per_chip = point.batch / step / system.n_chips
    return Estimate(point, 1 / step, usd_per_mtok(system, per_chip), held <= system.chip.hbm_bytes)


def miss(e: Estimate, front: list[Estimate]) -> float:
    """How much `e` must improve, on its better count, to escape every front point that beats it on both (0: on the
    front)."""
    need = 0.0
    for f in front:
        if f.tokens_per_s_per_user >= e.tokens_per_s_per_user and f.usd_per_mtok_out <= e.usd_per_mtok_out:
            need = max(need, min(f.tokens_per_s_per_user / e.tokens_per_s_per_user,
                                 e.usd_per_mtok_out / f.usd_per_mtok_out) - 1)
    return need


def screen(points: list, margin: float) -> tuple[list, list[tuple[Estimate, float]]]:
    """(the points to compile, in their order; the points screened out, each with its miss: math.inf where its
    weights and KV cache do not fit)."""
    if not (isinstance(margin, int | float) and margin >= 0 and math.isfinite(margin)):
        raise ConfigError(f"--screen takes a margin >= 0 (0.1: within 10% of the front), got {margin!r}")
    estimates = {p: estimate(p) for p in points}
    groups: dict[tuple, list[Estimate]] = {}
    for e in estimates.values():
        if e is not None and e.fits:
            p = e.point
            groups.setdefault((p.model, p.context, p.prompt, p.weights, p.kv_cache), []).append(e)
    fronts = {key: [e for e in group if miss(e, group) == 0] for key, group in groups.items()}
    kept, dropped = [], []
    for p in points:
        e = estimates[p]
        if e is None:
            kept.append(p)
            continue
        off = miss(e, fronts[(p.model, p.context, p.prompt, p.weights, p.kv_cache)]) if e.fits else math.inf
        if off <= margin:
            kept.append(p)
        else:
            dropped.append((e, off))
    return kept, dropped
