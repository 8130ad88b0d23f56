"""`tracer report validation --out DIR`: every measured row predicted (tracer.validation), the error per row, the
mean absolute percentage error per system, model and engine, on the held-out set apart from the calibration set,
and a predicted-against-measured plot."""

import csv
import re
from collections import defaultdict
from pathlib import Path

from base.inputs import ConfigError
from tracer.reports.figures import caption, markdown_table, pyplot, save
from tracer.validation import MEASURED, Prediction, fit_overhead, load_measured, mape, overhead_in_use, predict_all

FAR = 50.0  # percent: a row this far off is listed with what is known of why


def why(p: Prediction) -> str:
    """What is known of a row's miss: engine features and workloads the model does not price."""
    r, notes = p.row, p.row.notes.lower()
    reasons = []
    if re.search(r"speculative decoding=(mtp )?on|\bmtp on\b", notes):
        reasons.append("speculative decoding (MTP) on in the measured run: predicted without it (the run's acceptance "
                       "rate is not published, and --speculative needs one)")
    if "sharegpt" in notes or "random" in notes and "range" in notes:
        reasons.append("lengths vary around the stated means: priced at the means")
    if r.concurrency != "max" and isinstance(r.concurrency, int) and r.concurrency <= 8:
        reasons.append("a few sequences: host work and per-kernel latency dominate, which the model prices coarsely")
    if r.model.startswith("gpt-oss") and r.system.startswith("h"):
        reasons.append("MXFP4 experts on Hopper (no FP4 tensor cores): priced at TRT-LLM's measured W4A16 Triton MoE "
                       "kernel (the [moe] table), which predicts them faster than the engines ran; not known why")
    return "; ".join(reasons) or "not known"


def _groups(preds: list[Prediction], key) -> list[tuple]:
    groups = defaultdict(list)
    for p in preds:
        groups[key(p)].append(p)
    return [(k, len(v), mape([p.error_pct for p in v]), mape([p.ideal_error_pct for p in v]))
            for k, v in sorted(groups.items())]


def _overhead(fixed_s: float, per_sequence_s: float) -> str:
    return f"{fixed_s * 1e3:.1f} ms + {per_sequence_s * 1e6:.1f} us a sequence a scheduler runs"


def _plot(preds: list[Prediction], path: Path, overhead: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.2))
    markers = {"tensorrt-llm": "o", "vllm": "s", "sglang": "^"}
    lo = min(min(p.row.output_tok_s, p.output_tok_s) for p in preds)
    hi = max(max(p.row.output_tok_s, p.ideal_tok_s) for p in preds)
    for n, engine in enumerate(sorted({p.row.engine for p in preds})):
        mine, color = [p for p in preds if p.row.engine == engine], f"C{n}"
        for split, fill in (("held-out", True), ("calibration", False)):
            xs = [p.row.output_tok_s for p in mine if p.row.split == split]
            ys = [p.output_tok_s for p in mine if p.row.split == split]
            if xs:
                ax.scatter(xs, ys, marker=markers.get(engine, "D"), s=22, label=f"{engine}, {split}",
                           facecolors=color if fill else "none", edgecolors=color)
        ax.scatter([p.row.output_tok_s for p in mine], [p.ideal_tok_s for p in mine], marker=markers.get(engine, "D"),
                   s=10, color="0.75", zorder=0)
    ax.plot([lo, hi], [lo, hi], color="k", linewidth=0.8)
    for f in (0.8, 1.25):
        ax.plot([lo, hi], [lo * f, hi * f], color="k", linewidth=0.4, linestyle=":")
    ax.set(xscale="log", yscale="log", xlabel="measured output tokens/s (system)",
           ylabel="predicted output tokens/s", title="tracer serving against published measurements")
    ax.legend(fontsize=6)
    caption(fig, f"Achieved-rate model (host overhead {overhead}); filled: held-out rows, hollow: "
                 "calibration rows; grey: the ideal roofline (--ideal) of the same rows. Dotted: -20% and +25%. "
                 "Sources: tracer/data/measured_serving.csv.", -0.02)
    save(fig, path)


def write_report(out: str, jobs: int = 1, progress=None, measured: str | Path = MEASURED,
                 minutes: float | None = None) -> tuple[Path, dict]:
    """Predict every row (within `minutes`, if given), write validation.md, validation.csv and validation.png under
    `out`; return the report's path and its headline figures."""
    if minutes is not None and not (isinstance(minutes, int | float) and minutes > 0):
        raise ConfigError(f"--minutes must be a number of minutes > 0, got {minutes!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {jobs!r}")
    folder = Path(out)
    preds = predict_all(load_measured(measured), folder, jobs, progress, minutes)
    ok = [p for p in preds if p.output_tok_s is not None]
    held, cal = [p for p in ok if p.row.split == "held-out"], [p for p in ok if p.row.split == "calibration"]
    fitted = fit_overhead(preds)
    used = overhead_in_use(ok[0]) if ok else (0.0, 0.0)
    head = {"held_out_rows": len(held), "held_out_mape": mape([p.error_pct for p in held]),
            "held_out_mape_ideal": mape([p.ideal_error_pct for p in held]), "calibration_rows": len(cal),
            "calibration_mape": mape([p.error_pct for p in cal]), "overhead_fitted_ms": fitted[0] * 1e3,
            "per_sequence_fitted_us": fitted[1] * 1e6, "overhead_used_ms": used[0] * 1e3,
            "per_sequence_used_us": used[1] * 1e6, "not_predicted": len(preds) - len(ok)}
    with open(folder / "validation.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "split", "engine", "model", "system", "strategy", "isl", "osl", "concurrency",
                    "measured_tok_s", "predicted_tok_s", "error_pct", "ideal_tok_s", "ideal_error_pct", "source",
                    "source_date", "not_predicted"])
        for p in preds:
            r = p.row
            w.writerow([r.id, r.split, r.engine, r.model, r.system, r.strategy, r.isl, r.osl, r.concurrency,
                        r.output_tok_s, p.output_tok_s, p.error_pct, p.ideal_tok_s, p.ideal_error_pct, r.source,
                        r.source_date, p.error])
    if ok:
        _plot(ok, folder / "validation.png", _overhead(*used))
    lines = ["# tracer serving against published measurements", "",
             f"{len(preds)} published rows ({Path(measured).name}), {len(ok)} predicted. Held-out: "
             f"{head['held_out_rows']} rows, MAPE of output tokens/s **{head['held_out_mape']:.1f}%** at the achieved "
             f"rates, {head['held_out_mape_ideal']:.1f}% at the ideal roofline (--ideal). Calibration: "
             f"{head['calibration_rows']} rows, {head['calibration_mape']:.1f}%.", "",
             f"The fitted figures, the host overhead an iteration, were {_overhead(*used)} in the rates files these "
             f"predictions used; fitted on the calibration rows alone they come out at {_overhead(*fitted)}.", "",
             "![predicted against measured](validation.png)", ""]
    for title, key in (("system", lambda p: p.row.system.rstrip("0123456789").rstrip("x")),
                       ("model", lambda p: p.row.model), ("engine", lambda p: p.row.engine)):
        lines += [f"## Held-out MAPE per {title}", "",
                  markdown_table([(k, n, f"{a:.1f}", f"{b:.1f}") for k, n, a, b in _groups(held, key)],
                                 [title, "rows", "MAPE %", "MAPE % (--ideal)"]), ""]
    far = [p for p in ok if abs(p.error_pct) > FAR]
    lines += [f"## Rows more than {FAR:.0f}% off", "",
              markdown_table([(p.row.id, p.row.split, f"{p.row.output_tok_s:,.0f}", f"{p.output_tok_s:,.0f}",
                               f"{p.error_pct:+.0f}", why(p)) for p in far],
                             ["row", "split", "measured", "predicted", "error %", "why, as far as known"])
              if far else "None.", "",
              "## Not predicted", "",
              markdown_table([(p.row.id, p.error) for p in preds if p.output_tok_s is None], ["row", "why"])
              if len(ok) < len(preds) else "None.", "",
              "Every row, its source and date: validation.csv."]
    path = folder / "validation.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, head
