"""What every report's plots and tables share: matplotlib on the Agg backend, captions, a figure's provenance, and
Markdown tables."""

from pathlib import Path

from tabulate import tabulate


def pyplot():
    """matplotlib.pyplot drawing to files (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def caption(fig, text: str, y: float, fontsize: float = 5, wrap: bool = False):
    """Small print under a figure, as plain text: matplotlib reads $...$ as mathematics, so dollars are escaped."""
    fig.text(0.01, y, text.replace("$", r"\$"), fontsize=fontsize, wrap=wrap)


def save(fig, path: Path):
    """Write the figure as a PNG and close it."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)


def listed(rows: list, key: str) -> str:
    """The distinct values of attribute `key` over the rows, sorted, comma-separated."""
    return ", ".join(sorted({str(getattr(r, key)) for r in rows}))


def prices(rows: list) -> str:
    """Each system's price per chip-hour the rows were costed at."""
    return ", ".join(sorted({f"{r.system} ${r.usd_per_chip_hour:.2f}/chip-h" for r in rows}))


def provenance(rows: list) -> str:
    """What a figure of sweep results rests on: model(s), systems, strategies, compilers, dtypes and prices."""
    dtypes = ", ".join(sorted({f"w {r.weights_dtype} / kv {r.kv_cache_dtype}" for r in rows}))
    return (f"model {listed(rows, 'model')}; systems {listed(rows, 'system')}; strategies "
            f"{listed(rows, 'strategy')}; compiler {listed(rows, 'compiler')}; {dtypes}; prices {prices(rows)}")


def markdown_table(rows: list[list], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="pipe")
