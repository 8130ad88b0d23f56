"""`tracer report SWEEP_RESULTS --out DIR`: a Markdown report of a sweep, with tables and PNG plots.

Plots: the cost of output tokens against context length per system (where the KV cache takes over and HBM caps the
batch), the Pareto front of tokens/s per user against USD per million output tokens, decode step-time terms, and
strategies side by side. Every figure names the model, systems, strategies, compilers, dtypes and prices it shows.
"""

import json
from collections import defaultdict
from pathlib import Path

from base.inputs import ConfigError
from tracer.reports.figures import caption, markdown_table, provenance, pyplot, save
from tracer.sweep_records import StoredResult, valid_result


def load_records(path: str, whole=None) -> list[dict]:
    """A sweep's records: its folder (sweep.jsonl inside) or the .jsonl file itself. Every record holds a point's
    inputs and either its error or a result that `whole(result)` accepts (default: a whole trace, as the sweep's
    CSV rows read it); anything else is a one-line error naming the line."""
    whole = whole or valid_result
    source = Path(path)
    if source.is_dir():
        source = source / "sweep.jsonl"
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not a text file of sweep records; give the sweep.jsonl `tracer sweep` wrote"
                          ) from None
    except OSError:
        raise ConfigError(f"no sweep results at {path}: give the --out folder of `tracer sweep` or its sweep.jsonl"
                          ) from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
            raise ConfigError(f"{source} line {n} is not a sweep record; re-run `tracer sweep` to write it")
        if isinstance(record.get("error"), str):
            records.append(record)
            continue
        if "result" not in record or record["result"] is None:
            raise ConfigError(f"{source} line {n} holds neither a result nor an error (a malformed record); re-run "
                              "`tracer sweep` to write it")
        if not whole(record["result"]):
            raise ConfigError(f"{source} line {n}: its result is not a whole trace (prefill, decode and their "
                              "figures); re-run `tracer sweep` to write it")
        records.append(record)
    if not records:
        raise ConfigError(f"{source} holds no sweep records")
    return records


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other beats on both counts: higher x (tokens/s per user) and lower y (USD per
    million output tokens), ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def _label(r: StoredResult) -> str:
    return f"{r.system} {r.strategy}" + (f" ({r.compiler})" if r.compiler != "cpu" else "")


def _screened_table(screened: list[dict]) -> list[str]:
    if not screened:
        return []
    rows = [[r.get("model"), r.get("system"), r.get("strategy"), r.get("batch"), r.get("context"),
             r.get("tokens_per_s_per_user"), r.get("usd_per_mtok_out"), r.get("fits"), r.get("miss")]
            for r in screened]
    return ["Points screened out before compiling (`--screen`: their textbook estimates, and how far each lay from "
            "its workload's front; inf: does not fit):", "",
            markdown_table(rows, ["model", "system", "strategy", "batch", "context", "tok/s/user (est.)",
                                  "$/Mtok out (est.)", "fits", "miss"]), ""]


def write_report(records: list[dict], out: str, screened: list[dict] = ()) -> Path:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ok = [StoredResult.read(r["result"]) for r in records if "result" in r]
    failed = [r for r in records if "error" in r]
    lines = ["# Sweep report", "",
             f"{len(records)} points: {len(ok)} traced, {len(failed)} failed. Step times in ms; costs in USD per "
             "million tokens at each system's price per chip-hour; decode figures per output token.", "",
             _points_table(ok), ""]
    if failed:
        lines += ["Failed points:", ""] + [f"- {r['inputs']}: {r['error']}" for r in failed] + [""]
    lines += _screened_table(list(screened))
    by_model = defaultdict(list)
    for r in ok:
        by_model[r.model].append(r)
    for model, rs in sorted(by_model.items()):
        lines += [f"## {model}", ""]
        for section in (_cost_against_context, _pareto_fronts, _decode_terms, _strategies_side_by_side):
            lines += section(rs, model, folder)
    report = folder / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def _points_table(ok: list[StoredResult]) -> str:
    rows = [[r.model, r.system, r.strategy, r.compiler, r.batch, r.prompt, r.context,
             "yes" if r.decode.fits else "NO", r.max_batch if r.searched else "",
             f"{r.prefill.step_s * 1e3:.4g}", f"{r.decode.step_s * 1e3:.4g}", r.decode.bound,
             f"{r.decode.kv_share:.0%}", f"{r.prefill.usd_per_mtok:.4g}", f"{r.decode.usd_per_mtok:.4g}",
             f"{r.output_to_input_cost:.3g}", f"{1 / r.decode.step_s:.4g}"] for r in ok]
    return markdown_table(rows, ["model", "system", "strategy", "compiler", "batch", "prompt", "context", "fits",
                                 "max batch", "prefill ms", "decode ms", "decode bound", "KV share", "$/Mtok in",
                                 "$/Mtok out", "out/in", "tok/s/user"])


def _cost_against_context(rs: list[StoredResult], model: str, folder: Path) -> list[str]:
    """The cost of output tokens against context, per system and strategy, one line per batch."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    series = defaultdict(list)
    for r in rs:
        key = (_label(r), str(r.batch_requested), r.strategy)
        series[key].append((r.context, r.decode.usd_per_mtok, r.decode.fits))
    strategies = sorted({r.strategy for r in rs})  # a line style each: equal layouts stay visible
    for (label, batch, strategy), pts in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1].zfill(9))):
        pts.sort()
        style = ("-", "--", ":", "-.")[strategies.index(strategy) % 4]
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle=style,
                        label=f"{label}, batch {batch}")
        ax.scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], marker="x", s=80,
                   color=line.get_color())
    ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="USD per million output tokens",
           title=f"{model}: output-token cost against context")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    caption(fig, provenance(rs) + "; x: does not fit", 0.005)
    name = f"{model}-cost-vs-context.png"
    save(fig, folder / name)
    return [f"![output-token cost against context]({name})", "",
            f"Output-token cost against context length; crosses mark points whose decode step does not fit "
            f"in HBM; the table's KV share says how much of each decode step's bytes is KV cache, and its "
            f"largest batch where HBM caps the batch. {provenance(rs)}.", ""]


def _pareto_fronts(rs: list[StoredResult], model: str, folder: Path) -> list[str]:
    """Per system, the Pareto front of interactivity against cost: a table each, and one plot."""
    lines = []
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for system in sorted({r.system for r in rs}):
        sub = [r for r in rs if r.system == system and r.decode.fits]
        if not sub:
            continue
        pts = [(1 / r.decode.step_s, r.decode.usd_per_mtok) for r in sub]
        dots = ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, alpha=0.5)
        front = pareto(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], marker="o", color=dots.get_facecolor()[0],
                label=f"{system}: Pareto front")
        lines += [f"Pareto front on {system} (tokens/s per user against USD per million output tokens):", "",
                  markdown_table([[_label(sub[i]), sub[i].batch, sub[i].context, f"{pts[i][0]:.4g}",
                                   f"{pts[i][1]:.4g}"] for i in front],
                                 ["system, strategy", "batch", "context", "tok/s/user", "$/Mtok out"]), ""]
    ax.set(xscale="log", yscale="log", xlabel="tokens/s per user (1 / decode step)",
           ylabel="USD per million output tokens", title=f"{model}: interactivity against cost")
    ax.legend(fontsize=7)
    caption(fig, provenance(rs), 0.005)
    name = f"{model}-pareto.png"
    save(fig, folder / name)
    return lines + [f"![Pareto front]({name})", "", f"Every traced batch, strategy and context that fits; the line "
                    f"joins those no other point beats on both counts. {provenance(rs)}.", ""]


def _decode_terms(rs: list[StoredResult], model: str, folder: Path) -> list[str]:
    """The decode step's compute, memory and communication terms at each point, stacked."""
    fig, ax = pyplot().subplots(figsize=(max(7, 0.35 * len(rs)), 4.5))
    names = [f"{_label(r)} b{r.batch} c{r.context}" for r in rs]
    bottom = [0.0] * len(rs)
    for term in ("compute", "memory", "comms"):
        values = [getattr(r.decode, f"{term}_s") * 1e3 for r in rs]
        ax.bar(range(len(rs)), values, bottom=bottom, label=term)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(rs)), names, rotation=90, fontsize=6)
    ax.set(ylabel="ms per decode step", title=f"{model}: decode step terms (compute, memory, comms)")
    ax.legend(fontsize=7)
    caption(fig, provenance(rs) + "; step = max(compute, memory) + comms", -0.02)
    name = f"{model}-decode-terms.png"
    save(fig, folder / name)
    return [f"![decode step terms]({name})", "", f"Decode step terms per point (the step takes the larger of "
            f"compute and memory, plus communication). {provenance(rs)}.", ""]


def _strategies_side_by_side(rs: list[StoredResult], model: str, folder: Path) -> list[str]:
    """Grouped bars: for each (system, batch, context) the strategies traced there, USD per million input and output
    tokens side by side. Nothing when no group has two strategies."""
    groups = defaultdict(dict)
    for r in rs:
        if r.decode.fits:
            groups[(r.system, str(r.batch_requested), r.context)][r.strategy] = r
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return []
    strategies = sorted({s for v in groups.values() for s in v})
    keys = sorted(groups)
    fig, axes = pyplot().subplots(1, 2, figsize=(max(8, 0.6 * len(keys) * len(strategies)), 4.5))
    width = 0.8 / len(strategies)
    for ax, (phase, what) in zip(axes, (("prefill", "input"), ("decode", "output")), strict=True):
        for j, strategy in enumerate(strategies):
            xs = [i + j * width for i, k in enumerate(keys) if strategy in groups[k]]
            ys = [getattr(groups[k][strategy], phase).usd_per_mtok for k in keys if strategy in groups[k]]
            ax.bar(xs, ys, width, label=strategy)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))],
                      [f"{s} b{b} c{c}" for s, b, c in keys], rotation=90, fontsize=6)
        ax.set(yscale="log", ylabel=f"USD per million {what} tokens", title=f"{model}: {what} tokens by strategy")
        ax.legend(fontsize=7)
    text = provenance([r for v in groups.values() for r in v.values()])
    caption(fig, text, -0.02)
    name = f"{model}-strategies.png"
    save(fig, folder / name)
    rows = [[s, b, c, strategy, f"{r.prefill.usd_per_mtok:.4g}", f"{r.decode.usd_per_mtok:.4g}", r.batch]
            for (s, b, c) in keys for strategy, r in sorted(groups[(s, b, c)].items())]
    return [f"Strategies side by side on {model}:", "",
            markdown_table(rows, ["system", "batch asked", "context", "strategy", "$/Mtok in", "$/Mtok out",
                                  "batch traced"]), "",
            f"![strategies]({name})", "", f"Input and output cost per strategy, at the same system, batch and "
            f"context (points that fit). {text}.", ""]
