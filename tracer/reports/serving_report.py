"""`tracer report RESULTS` for a serving sweep (`tracer sweep --isls --osls`): the curve users look at, output
tokens/s per GPU against tokens/s per user (interactivity, 1 / TPOT), one line per system and strategy, a plot per
model and workload, and the points in a table."""

import json
from collections import defaultdict
from pathlib import Path

from tracer.reports.figures import caption, markdown_table, pyplot, save


def is_serving(path: str) -> bool:
    """Whether the results at `path` (a sweep's folder or its sweep.jsonl) are a serving sweep's."""
    source = Path(path) / "sweep.jsonl" if Path(path).is_dir() else Path(path)
    try:
        with source.open(encoding="utf-8") as f:
            first = json.loads(f.readline())
        return isinstance(first, dict) and "isl" in (first.get("inputs") or {})
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False  # the trace sweep's reader says what is wrong with it


def write_report(path: str, out: str) -> Path:
    from tracer.reports.sweep_report import load_records
    from tracer.serving_sweep import valid

    records = load_records(path, valid)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if "result" in r]
    groups = defaultdict(list)
    for r in ok:
        i = r["inputs"]
        groups[(i["model"], i["isl"], i["osl"])].append(r)
    lines = ["# Serving sweep report", "",
             f"{len(records)} points: {len(ok)} served, {len(records) - len(ok)} failed. Each point is a steady "
             "state of continuous batching (tracer serving); its time model is named under each plot.", ""]
    lines += [f"- failed: {r['inputs']}: {r['error']}" for r in records if "error" in r]
    for n, ((model, isl, osl), rs) in enumerate(sorted(groups.items())):
        name = f"interactivity_{n}.png"
        _plot(rs, f"{model}, {isl} in / {osl} out", folder / name)
        rows = sorted(rs, key=lambda r: (r["inputs"]["system"], r["inputs"]["strategy"], r["result"]["concurrency"]))
        lines += [f"## {model}: {isl} tokens in, {osl} out", "", f"![throughput per GPU against interactivity]({name})",
                  "", markdown_table([(r["inputs"]["system"], r["inputs"]["strategy"], r["result"]["concurrency"],
                                       f"{1 / r['result']['tpot_s']:.1f}",
                                       f"{r['result']['output_tokens_per_s_per_chip']:,.0f}",
                                       f"{r['result']['ttft_s'] * 1e3:.0f}",
                                       f"{r['result']['usd_per_mtok_output']:.3f}") for r in rows],
                                     ["system", "strategy", "sequences", "tokens/s per user",
                                      "output tokens/s per GPU", "TTFT ms", "USD per M output"]), ""]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def _plot(rs: list[dict], title: str, path: Path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    lines = defaultdict(list)
    for r in rs:
        lines[(r["inputs"]["system"], r["inputs"]["strategy"])].append(r["result"])
    for (system, strategy), points in sorted(lines.items()):
        points.sort(key=lambda p: p["concurrency"])
        ax.plot([1 / p["tpot_s"] for p in points], [p["output_tokens_per_s_per_chip"] for p in points],
                marker="o", markersize=3, label=f"{system}, {strategy}")
    ax.set(xlabel="tokens/s per user (1 / TPOT)", ylabel="output tokens/s per GPU", title=title)
    ax.legend(fontsize=7)
    models = sorted({p.get("time_model", "ideal roofline") for ps in lines.values() for p in ps})
    caption(fig, "Each point a concurrency (sequences running); step times: " + "; ".join(models), -0.04)
    save(fig, path)
