"""`tracer report textbook --out DIR`: the worked examples of "How to Scale Your Model" (tracer.textbook) as
Markdown tables, a plot of example 1 and a plot of every row's difference from the book."""

from pathlib import Path

from tracer.reports.figures import caption, markdown_table, pyplot, save
from tracer.textbook import Row

INTRO = ("\"How to Scale Your Model\" (jax-ml/scaling-book), inference chapter and \"Serving LLaMA 3-70B on TPUs\". "
         "Hardware: the book's TPU v5e (1.97e14 bf16 FLOP/s, 16 GB HBM, 8.2e11 or 8.1e11 B/s as each example says), "
         "compiled for emulated devices by the CPU compiler. *book*: as printed; *book, exact*: the book's own "
         "arithmetic unrounded, or with its own exact input where it prints another; *ours*: the book's arithmetic "
         "on figures read off the compiled program; *diff*: ours against the exact figure. Rows marked *contrast* "
         "are what the compiled program says where the book idealises.")


def summary(table: list[Row]) -> str:
    reproduced = [r for r in table if not r.contrast]
    return (f"{len(reproduced)} reproduced figures, largest difference "
            f"{max(abs(r.diff) for r in reproduced):.2%}")


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def write_report(out: str, table: list[Row]) -> Path:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# The textbook's worked examples, from compiled programs", "", INTRO, "", summary(table) + ".", ""]
    for section in dict.fromkeys(r.section for r in table):
        sub = [r for r in table if r.section == section]
        lines += [f"## {section.heading}", "",
                  markdown_table([[r.quantity + (" (contrast)" if r.contrast else ""), _fmt(r.book),
                                   "" if r.exact is None else _fmt(r.exact), _fmt(r.ours), f"{r.diff:+.2%}", r.how]
                                  for r in sub], ["quantity", "book", "book, exact", "ours", "diff", "ours from"]), ""]
        lines += [f"- {r.quantity}: {r.note}" for r in sub if r.note] + [""]
    _plot_example_1([r for r in table if r.section.number == "1"], folder / "example-1.png")
    _plot_differences(table, folder / "differences.png")
    lines += ["![example 1](example-1.png)", "", "Example 1: the book's memory-only decode step and throughput "
              "against ours, per batch.", "", "![differences](differences.png)", "",
              "Every row: ours against the book's exact figure; the band is 2%.", ""]
    report = folder / "textbook.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def _plot_example_1(ex1: list[Row], path: Path):
    """Example 1's step time and throughput against batch, the book's and ours."""
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 3.8))
    for ax, measure, label in ((axes[0], "step ms", "ms per decode step"), (axes[1], "tokens/s", "tokens/s")):
        pts = [(r.batch, r.book, r.ours) for r in ex1 if r.measure == measure]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="book")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], "x--", label="ours (compiled)")
        ax.set(xscale="log", xlabel="batch", ylabel=label, title=f"LLaMA 2-13B, 8 x v5e, 8k: {label}")
        ax.legend(fontsize=7)
    caption(fig, "TPU v5e, book figures: 1.97e14 FLOP/s, 8.2e11 B/s, 16 GB; bf16 weights and KV cache; strategy tp "
                 "over 8 chips; CPU compiler (emulated devices)", -0.02, fontsize=6)
    save(fig, path)


def _plot_differences(table: list[Row], path: Path):
    """Every row's difference from the book, contrast rows in grey."""
    fig, ax = pyplot().subplots(figsize=(7, max(4, 0.18 * len(table))))
    labels = [f"{r.section.short}. {r.quantity}" for r in table]
    limit = 5.0  # percent: contrast rows beyond it are drawn to the edge with their value written
    ax.barh(range(len(table)), [max(-limit, min(limit, r.diff * 100)) for r in table],
            color=["tab:gray" if r.contrast else "tab:blue" for r in table])
    for i, r in enumerate(table):
        if abs(r.diff * 100) > limit:
            ax.text(limit * (0.55 if r.diff > 0 else -0.95), i, f"{r.diff:+.0%}", va="center", fontsize=6)
    ax.set_xlim(-limit, limit)
    ax.axvspan(-2, 2, color="tab:green", alpha=0.15, label="within 2%")
    ax.set_yticks(range(len(table)), labels, fontsize=5)
    ax.invert_yaxis()
    ax.set(xlabel="ours against the book (%)", title="Textbook examples: ours against the book (grey: contrast)")
    ax.legend(fontsize=7)
    caption(fig, "TPU v5e with the book's figures (8.2e11 or 8.1e11 B/s per example), GCP Feb 2025 prices; CPU "
                 "compiler", -0.01, fontsize=6)
    save(fig, path)
