"""The `tracer compare` table: one row per compared layout, from its trace."""

from tracer.compare import ComparedLayout
from tracer.reports.text import table
from tracer.timing import StepTime


def rows(points: list[ComparedLayout]) -> list[dict]:
    """The comparison table: one row per point, from its trace."""
    out = []
    for p in points:
        row = {"system": p.system, "strategy": p.strategy,
               "compiler": p.result.compiler if p.result is not None else p.compiler}
        if p.result is None:
            out.append({**row, "error": p.error})
            continue
        r = p.result
        pre, dec = r.phases["prefill"], r.phases["decode"]
        out.append({**row, "time_model": r.time_model, "mesh": " x ".join(f"{k}={v}" for k, v in r.mesh.items()),
                    "fits": dec.memory.fits, "batch": r.work.batch,
                    "max_batch": p.max_batch if p.max_batch is not None else r.max_batch,
                    "batch_note": p.batch_note,
                    "prefill_ms": _terms(pre.time), "prefill_bound": pre.time.bound,
                    "decode_ms": _terms(dec.time), "decode_bound": dec.time.bound,
                    "decode_comm_share": dec.time.comms_s / dec.time.step_s,
                    "decode_tokens_per_s_per_chip": dec.tokens_per_s_per_chip,
                    "usd_per_mtok_in": pre.usd_per_mtok, "usd_per_mtok_out": dec.usd_per_mtok})
    return out


def _terms(t: StepTime) -> str:
    return f"{t.step_s * 1e3:.4g} ({t.compute_s * 1e3:.3g}/{t.memory_s * 1e3:.3g}/{t.comms_s * 1e3:.3g})"


def compare_text(rows: list[dict]) -> str:
    """The `tracer compare` table: step times as total (compute/memory/comms) in ms."""
    shown = []
    by_compiler = any(r.get("compiler", "cpu") != "cpu" for r in rows)  # a column once another compiler is there

    def head(r):
        return {"system": r["system"], "strategy": r["strategy"],
                **({"compiler": r["compiler"]} if by_compiler else {})}

    for r in rows:
        if "error" in r:
            shown.append({**head(r), "mesh": "", "fits": "error", "batch": "", "max_batch": "",
                          "prefill ms": r["error"]})
            continue
        shown.append({**head(r), "mesh": r["mesh"],
                      "fits": "yes" if r["fits"] else "NO", "batch": r["batch"], "max_batch": r["max_batch"],
                      "prefill ms": f"{r['prefill_ms']} {r['prefill_bound']}",
                      "decode ms": f"{r['decode_ms']} {r['decode_bound']}",
                      "comms": f"{r['decode_comm_share']:.0%}",
                      "tok/s/chip": f"{r['decode_tokens_per_s_per_chip']:.4g}",
                      "$/Mtok in": f"{r['usd_per_mtok_in']:.4g}", "$/Mtok out": f"{r['usd_per_mtok_out']:.4g}"})
    notes = [f"- {' '.join(str(v) for v in head(r).values())}: batch {r['batch_note']}" for r in rows
             if r.get("batch_note")]
    models = {r["time_model"] for r in rows if "time_model" in r}
    if len(models) > 1:  # a row at the peaks beside rows at achieved rates is not like for like
        notes.append("NOT LIKE FOR LIKE: the rows are priced by different time models; --ideal prices every row at "
                     "its chip's peaks:")
        notes += [f"- {r['system']}: {r['time_model']}" for r in rows if "time_model" in r]
    return (table(shown) + "\n\nStep times: total (compute/memory/comms) per step; comms: share of the decode step; "
            "tok/s/chip: decode.\n" + "\n".join(notes))
