"""Tables for the terminal: format the rows they are given, compute nothing."""

from tabulate import tabulate

from meshes.systems import System
from models.config import ModelConfig
from tracer.results import Phase, TraceResult


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g} ms"


def trace_text(r: TraceResult, breakdown: bool = False) -> str:
    """The `tracer trace` report."""
    m, w = r.model, r.work
    dtypes = m.dtype if m.weights == m.experts == m.kv == m.dtype else (
        f"weights {m.weights}, experts {m.experts}, KV {m.kv}")
    head = (f"{m.name} ({m.total_params / 1e9:.4g}B, {m.active_params / 1e9:.4g}B active; {dtypes}) "
            f"on {r.system_name}, strategy {r.strategy} "
            f"(mesh {' x '.join(f'{k}={v}' for k, v in r.mesh.items())}), compiler {r.compiler}"
            f"{'' if r.compiler_note == 'chosen' else ' (' + r.compiler_note + ')'}; "
            f"batch {w.batch}, prompt {w.prompt}, context {w.context}; "
            f"${r.usd_per_chip_hour:.2f}/chip-hour ({r.price_note})")
    phases = [r.phases[p] for p in ("prefill", "decode") if p in r.phases]
    summary = tabulate(
        [[p.name, p.tokens_per_step, _ms(p.time.step_s), p.time.bound, f"{p.tokens_per_s_per_chip:.4g}",
          f"${p.usd_per_mtok:.4g}", "yes" if p.memory.fits else "NO"] for p in phases],
        headers=["phase", "tokens/step", "step time", "bound", "tokens/s/chip", "USD/Mtok", "fits"])
    parts = [head, f"Step times: {r.time_model}.", "", summary, ""]
    if r.output_to_input_cost is not None:
        parts.append(f"Output tokens cost {r.output_to_input_cost:.3g}x input tokens.")
    parts.append(f"Largest decode batch that fits at context {w.context}: {r.max_batch} ({r.max_batch_note}).")
    for p in phases:
        parts += _phase_text(p, breakdown)
    parts += ["", "How the figures were read:"] + [f"- {n}" for n in r.notes]
    return "\n".join(parts)


def _phase_text(p: Phase, breakdown: bool) -> list[str]:
    """A phase's figures per device against the analytic estimate, its MoE dispatch, its collectives and (with
    `breakdown`) its parts."""
    cost, a, t, m = p.step.cost, p.analytic, p.time, p.memory
    rows = [
        ["FLOPs", _si(cost.flops, "FLOP"), _si(a.flops_per_device, "FLOP"), f"{p.flops_ratio:.3f}"],
        ["FLOPs by precision", ", ".join(f"{k} {_si(v, 'FLOP')}" for k, v in cost.flops_by_dtype.items()), "", ""],
        ["HBM bytes", _si(cost.hbm_bytes, "B"), _si(a.hbm_bytes_per_device, "B"), f"{p.hbm_bytes_ratio:.3f}"],
        *([["HBM bytes, the program's own kernels", _si(p.compiled_hbm_bytes, "B"), "", ""]]
          if p.compiled_hbm_bytes and p.compiled_hbm_bytes != cost.hbm_bytes else []),
        ["wire bytes", _si(cost.comm_bytes, "B"), "", ""],
        ["time compute / memory / comms", f"{_ms(t.compute_s)} / {_ms(t.memory_s)} / {_ms(t.comms_s)}", "", ""],
        *([["step = kernels + comms + overhead", f"{_ms(t.kernels_s)} + {_ms(t.comms_s)} + {_ms(t.overhead_s)}",
            "", ""]] if t.kernels_s is not None else []),
        *([["collectives under compute (two micro-batches)", f"{_ms(t.hidden_s)} (counted: what outlasts the "
            "compute)", "", ""]] if t.hidden_s else []),
        ["memory weights / KV / out / temp", " / ".join(_si(v, "B") for v in (m.weights, m.kv_cache, m.outputs,
                                                                            m.temp)), "", ""],
        ["memory total / capacity", f"{_si(m.total, 'B')} / {_si(m.capacity, 'B')}", "", ""],
    ]
    parts = ["", f"{p.name} step, per device:",
             tabulate(rows, headers=["", "compiled", "analytic", "compiled/analytic"])]
    if p.moe:
        e = p.moe
        parts.append(f"MoE dispatch: {e.kernel} kernel, {e.token_groups} token group(s) of {e.tokens_per_group} "
                     f"tokens, experts over {e.expert_shards} device(s); {e.bins} bins x {e.slots_per_bin} slots = "
                     f"{e.slots_over_assignments:.3g}x the assignments (capacity factor {e.capacity_factor:g}); "
                     f"uniformly random routing would overflow {e.expected_drop_fraction_uniform_routing:.1%} of them")
    if p.collectives:
        parts.append(tabulate([[c.collective.op, c.collective.dtype, c.collective.group_size, c.collective.count,
                                _si(c.collective.wire_bytes_per_device, "B"), c.link, _ms(c.time_s)]
                               for c in p.collectives],
                              headers=["collective", "dtype", "group", "count", "wire bytes/device", "link", "time"]))
    if breakdown and p.breakdown:
        parts += ["", f"{p.name} by part of the model (from the op metadata's named scopes):",
                  tabulate([[b.part, _si(b.flops, "FLOP"), f"{b.flops / cost.flops:.1%}", _si(b.hbm_bytes, "B"),
                             f"{b.hbm_bytes / cost.hbm_bytes:.1%}", _si(b.wire_bytes, "B"), _ms(b.compute_s),
                             _ms(b.memory_s), _ms(b.comms_s)]
                            for b in sorted(p.breakdown, key=lambda b: -b.hbm_bytes)],
                           headers=["part", "FLOPs", "share", "HBM bytes", "share", "wire bytes", "compute",
                                    "memory", "comms"])]
    return parts


def models_rows(models: list[ModelConfig]) -> list[dict]:
    """One row per model: the figures `tracer models` prints (and --json gives, under these keys)."""
    return [{"name": m.name, "layers": m.n_layers, "hidden": m.hidden,
             "experts": (f"{m.n_experts}/{m.n_active}/{m.n_shared}"
                         + (f" every {m.moe_every}" if m.moe_every > 1 else "") if m.is_moe else "dense"),
             "attention": m.attention_kind, "total_params": m.total_params, "active_params": m.active_params,
             "dtypes": f"{m.weights}/{m.experts}/{m.kv}" if m.is_moe else f"{m.weights}/{m.kv}",
             "weight_bytes": m.weight_bytes, "kv_bytes_per_token": m.kv_bytes_per_token,
             "kv_window_cap_bytes": m.kv_window_bytes_per_sequence + m.state_bytes_per_sequence} for m in models]


def models_text(rows: list[dict]) -> str:
    """The models table with readable units; --json keeps the raw numbers."""
    shown = [{**r, "total_params": _si(r["total_params"], ""), "active_params": _si(r["active_params"], ""),
              "weight_bytes": _si(r["weight_bytes"], "B"), "kv_window_cap_bytes":
              _si(r["kv_window_cap_bytes"], "B") if r["kv_window_cap_bytes"] else "-"} for r in rows]
    note = ("experts: routed total/active/shared; dtypes: weights/experts/KV cache; active params exclude the "
            "embedding lookup; kv_bytes_per_token counts full-attention layers, kv_window_cap_bytes is what windowed "
            "layers hold per sequence at most, and linear-attention layers' fixed state")
    return table(shown) + "\n\n" + note


def systems_rows(systems: list[System]) -> list[dict]:
    return [{"name": s.name, "chip": s.chip.name, "chips": s.n_chips, "domain": s.domain_size,
             "bf16_tflops": s.chip.peak_flops["bfloat16"] / 1e12, "hbm_gb": s.chip.hbm_bytes / 1e9,
             "hbm_tb_s": s.chip.hbm_bw / 1e12, "hbm_total_tb": s.hbm_total_bytes / 1e12,
             "scale_up_gb_s": s.chip.scale_up_bw / 1e9, "scale_out_gb_s": s.chip.scale_out_bw / 1e9,
             "usd_per_chip_hour": s.usd_per_chip_hour, "price_note": s.price_note} for s in systems]


def systems_text(systems: list[System]) -> str:
    """The systems table, then each chip's sources and how its steps are timed and compiled."""
    chips = {s.chip.name: s.chip for s in systems}
    lines = [f"- {c.name}: {c.source}; " + ("achieved rates, meshes/rates/" + c.rates + ".toml" if c.rates else
                                             "no achieved-rate data: priced at its peaks")
             + ("" if c.compiler != "cpu" else "; no compiler here targets it: emulated CPU devices")
             for c in chips.values()]
    return table(systems_rows(systems)) + "\n\nChips, their figures' sources, and how they are timed:\n" + \
        "\n".join(lines)


def table(rows: list[dict]) -> str:
    return tabulate([list(r.values()) for r in rows], headers=list(rows[0]) if rows else [])
