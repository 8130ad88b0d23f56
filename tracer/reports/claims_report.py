"""`tracer report claims --out DIR`: each claim of the seed argument (tracer.reports.claims) as a value, its text,
rule, verdict function, table columns and plot, so that the report is one loop over the claims."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from base.inputs import ConfigError
from tracer.reports import claims
from tracer.reports.claims import CONTEXTS, LARGE, MAJORITY, MID, PROMPT, RACK, SERVER, STRATEGIES, ClaimRow, Finding
from tracer.reports.figures import caption, listed, markdown_table, prices, pyplot, save
from tracer.sweep_records import StoredResult, readable


def _money(x: float) -> str:
    return f"${x:.3g}" if math.isfinite(x) else "does not fit"


def _billions(x: float) -> str:
    return f"{x / 1e9:.1f}B"


def _kilobytes(x: float) -> str:
    return f"{x / 1e3:.0f} kB"


def _share(x: float) -> str:
    return f"{x:.0%}" if math.isfinite(x) else ""


@dataclass(frozen=True)
class Column:
    key: str  # an attribute of a claims row (tracer.reports.claims.ClaimRow)
    header: str
    cell: Callable | None = None  # value -> text; None: the value as the table writes it


MODEL, CONTEXT, SYSTEM = Column("model", "model"), Column("context", "context"), Column("system", "system")
ACTIVE, TOTAL = Column("active_params", "active", _billions), Column("total_params", "total", _billions)
LARGEST, KV_SHARE = Column("max_batch", "largest batch"), Column("kv_share", "KV share of bytes", _share)
USD_OUT = Column("usd_out", "$/Mtok out", _money)


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    rule: str  # how the verdict function decides, in words
    verdict: Callable[[list[ClaimRow]], Finding]
    shown: Callable[[list[ClaimRow]], list[ClaimRow]]  # the rows its table shows
    columns: tuple[Column, ...]
    draw: Callable  # draw(axes, rows): its two panels
    checks: str = ""  # where its checks are listed: "before" the table, in "details" after the plot, or not at all

    def judge(self, rows: list[ClaimRow]) -> "Verdict":
        found = self.verdict(rows)
        return Verdict(self.number, self.text, found.holds, found.summary, found.checks)


@dataclass(frozen=True)
class Verdict:
    number: int
    claim: str
    holds: bool
    summary: str
    checks: tuple[str, ...]

    @property
    def text(self) -> str:
        return "holds" if self.holds else "does not hold"


def _server(rows: list[ClaimRow], context: int | None = None) -> list[ClaimRow]:
    return [r for r in rows if r.system == SERVER and (context is None or r.context == context)]


def _scatter(ax, pts, xkey, ykey, xlabel, ylabel, title):
    pts = [r for r in pts if math.isfinite(getattr(r, ykey))]
    ax.scatter([getattr(r, xkey) / 1e9 for r in pts], [getattr(r, ykey) for r in pts])
    for r in pts:
        ax.annotate(r.model, (getattr(r, xkey) / 1e9, getattr(r, ykey)), fontsize=6)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)


def _draw_1(ax, rows):
    at = _server(rows, min(CONTEXTS))
    _scatter(ax[0], at, "active_params", "usd_in", "active parameters (B)", "USD per Mtok in",
             "input cost against active parameters")
    _scatter(ax[1], at, "total_params", "usd_in", "total parameters (B)", "USD per Mtok in",
             "input cost against total parameters")


def _draw_2(ax, rows):
    server, mid = _server(rows), claims.mid_context()
    for model in sorted({r.model for r in server}):
        pts = sorted((r.context, r.usd_out) for r in server if r.model == model
                     and math.isfinite(r.usd_out))
        ax[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=model)
    ax[0].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="USD per Mtok out",
              title=f"output cost against context ({SERVER})")
    ax[0].legend(fontsize=5)
    _scatter(ax[1], _server(rows, mid), "total_params", "usd_out", "total parameters (B)", "USD per Mtok out",
             f"output cost against total parameters ({mid})")


def _draw_3(ax, rows):
    pair = [r for r in rows if r.model in (LARGE, MID)]
    for (model, system) in sorted({(r.model, r.system) for r in pair}):
        pts = sorted((r.context, r.usd_out, r.max_batch) for r in pair
                     if r.model == model and r.system == system)
        style = "-" if system == RACK else "--"
        fitting = [p for p in pts if math.isfinite(p[1])]
        ax[0].plot([p[0] for p in fitting], [p[1] for p in fitting], "o" + style, label=f"{model}, {system}")
        ax[1].plot([p[0] for p in pts], [max(p[2], 0.5) for p in pts], "o" + style, label=f"{model}, {system}")
    ax[0].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="USD per Mtok out",
              title="output cost: server against rack")
    ax[1].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="largest batch that fits",
              title="the batch HBM allows (0 drawn at 0.5)")
    for a in ax:
        a.legend(fontsize=6)


def _fitting_at_mid(rows):
    return [r for r in _server(rows, claims.mid_context()) if math.isfinite(r.usd_out)]


def _draw_4(ax, rows):
    at, mid = _fitting_at_mid(rows), claims.mid_context()
    _scatter(ax[0], at, "active_params", "usd_out", "active parameters (B)", "USD per Mtok out",
             f"output cost against active parameters ({mid})")
    ax[1].scatter([r.active_params / 1e9 for r in at], [r.kv_bytes_per_token / 1e3 for r in at],
                  s=[r.hidden / 100 for r in at])
    for r in at:
        ax[1].annotate(f"{r.model} (D={r.hidden})", (r.active_params / 1e9, r.kv_bytes_per_token / 1e3),
                       fontsize=6)
    ax[1].set(xscale="log", yscale="log", xlabel="active parameters (B)", ylabel="KV kB per token",
              title="KV per token (marker size: model dimension)")


CLAIMS = (
    Claim(1, "Input-token cost follows active parameters, not total",
          "over every pair of models whose active and total parameter ratios differ at least 2x, the prefill cost "
          f"ratio must lie nearer (in log) the active ratio in at least {MAJORITY:.0%} of pairs.", claims.claim_1,
          lambda rows: _server(rows, min(CONTEXTS)),
          (MODEL, ACTIVE, TOTAL, Column("strategy_in", "strategy"), Column("usd_in", "$/Mtok in", _money)),
          _draw_1, checks="details"),
    Claim(2, "Output-token cost follows total parameters and context length, hardly active parameters",
          "as claim 1 with output cost nearer the total ratio, at the middle context; and every model's output cost "
          "grows at least as fast as the square root of the context.", claims.claim_2,
          lambda rows: sorted(_server(rows), key=lambda r: (r.active_params, r.context)),
          (MODEL, ACTIVE, TOTAL, CONTEXT, Column("strategy_out", "strategy"), LARGEST, KV_SHARE, USD_OUT),
          _draw_2, checks="details"),
    Claim(3, f"On an 8-GPU server the KV cache caps the batch and output cost climbs with context; on a GB200 NVL72 "
             f"a ~1T model ({LARGE}) is not at a disadvantage against a ~235B one ({MID}): KV dominates the bytes",
          f"on {SERVER}, both models' largest batch falls and output cost at least doubles from {min(CONTEXTS)} to "
          f"{max(CONTEXTS)} tokens of context; on {RACK}, {LARGE} costs at most 1.25x of {MID} per output token at "
          f"every context, and the KV cache is over half of both models' decode bytes at {max(CONTEXTS)}.",
          claims.claim_3,
          lambda rows: sorted((r for r in rows if r.model in (LARGE, MID)),
                              key=lambda r: (r.system, r.model, r.context)),
          (MODEL, SYSTEM, CONTEXT, Column("strategy_out", "strategy"), LARGEST, KV_SHARE, USD_OUT),
          _draw_3, checks="before"),
    Claim(4, "More active parameters come with a larger model dimension and more KV cache per token, so a higher "
             "output cost",
          "the Spearman rank correlation of active parameters with the model dimension, the KV bytes per token and "
          "the output cost must each be at least +0.5.", claims.claim_4,
          lambda rows: sorted(_fitting_at_mid(rows), key=lambda r: r.active_params),
          (MODEL, ACTIVE, Column("hidden", "d_model"), Column("kv_bytes_per_token", "KV per token", _kilobytes),
           USD_OUT),
          _draw_4),
)


def verdicts(rows: list[ClaimRow]) -> list[Verdict]:
    return [c.judge(rows) for c in CLAIMS]


def _table(rows: list[ClaimRow], columns: tuple[Column, ...]) -> str:
    return markdown_table([[c.cell(getattr(r, c.key)) if c.cell else getattr(r, c.key) for c in columns] for r in rows],
                          [c.header for c in columns])


def _design(rows: list[ClaimRow]) -> str:
    """What the claims' data rests on: the sweep's fixed choices and the dtypes, compilers and prices it used."""
    strategies = sorted({s for kinds in STRATEGIES.values() for names in kinds.values() for s in names})
    return (f"models' own dtypes (weights {listed(rows, 'weights_dtype')}; KV cache "
            f"{listed(rows, 'kv_cache_dtype')}); prompt {PROMPT} tokens; decode at the largest batch that fits; the "
            f"cheapest strategy per point of {', '.join(strategies)}; compiler {listed(rows, 'compiler')}; prices "
            f"{prices(rows)}")


def readme_table(found: list[Verdict]) -> str:
    return markdown_table([[v.number, v.claim, f"**{v.text}**", v.summary] for v in found],
                          ["#", "claim", "verdict", "the numbers"])


def _section(claim: Claim, v: Verdict, rows: list[ClaimRow], folder: Path, design: str) -> list[str]:
    """A claim's heading, verdict, rule, checks, table and plot."""
    fig, axes = pyplot().subplots(1, 2, figsize=(9.0, 4))
    claim.draw(axes, rows)
    caption(fig, design, -0.03, wrap=True)
    fig.tight_layout()
    name = f"claim-{claim.number}.png"
    save(fig, folder / name)
    checks = [*[f"- {c}" for c in v.checks], ""]
    return [f"## Claim {v.number}: {v.claim}", "", f"**Verdict: {v.text}.** {v.summary}.", "",
            f"Rule: {claim.rule}", "", *(checks if claim.checks == "before" else []),
            _table(claim.shown(rows), claim.columns), "", f"![{name}]({name})", "",
            *(["<details><summary>model pairs</summary>", "", *checks, "</details>", ""]
              if claim.checks == "details" else [])]


def write_report(records: list[ClaimRow], out: str) -> tuple[Path, list[Verdict]]:
    rows = claims.claim_rows(records)
    if not rows:
        raise ConfigError("the claims sweep has no traced points: re-run `tracer report claims` (see its errors "
                          "with `tracer sweep`)")
    found = verdicts(rows)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    design = _design(rows)
    failed = [r for r in records if "error" in r]
    lines = ["# The seed argument, checked from compiled programs", "",
             "Each claim's verdict is computed from the rows below by `tracer.reports.claims` (the rule is stated "
             f"with it). Data: {len(records)} traced points, {len(failed)} failed; {design}.", "",
             readme_table(found), ""]
    for claim, v in zip(CLAIMS, found, strict=True):
        lines += _section(claim, v, rows, folder, design)
    if failed:
        lines += ["## Points that failed", "", *[f"- {r['inputs']}: {r['error']}" for r in failed], ""]
    report = folder / "claims.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report, found


def _usable(result) -> bool:
    """A result with every figure the claims read."""
    return readable(result, lambda r: claims.claim_rows([{"inputs": {}, "result": r}]))


def run(out: str, jobs: int = 1, results: str | None = None, progress="stderr") -> tuple[Path, list[Verdict]]:
    """Trace the claims sweep (cached like any sweep), or read a sweep's results, and write the report."""
    from tracer import sweep
    from tracer.reports.sweep_report import load_records
    from tracer.sweep_records import write

    if results:
        records = load_records(results, whole=_usable)
        wanted = {(p.model, p.system, p.context) for p in claims.points()}
        traced = [StoredResult.read(r["result"]) for r in records if "result" in r]
        if not wanted & {(r.model, r.system, r.context) for r in traced}:
            raise ConfigError(f"{results} is not the claims sweep: none of its points is a model, system and context "
                              "the claims compare; run `tracer report claims` without --from to trace them")
    else:
        records = sweep.run(claims.points(), jobs=jobs, progress=progress)
        write(records, str(Path(out) / "data"))
    return write_report(records, out)
