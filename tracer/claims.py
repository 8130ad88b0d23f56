"""`tracer report claims --out DIR`: the seed argument, each claim checked from compiled programs.

The argument (the README's mission; "How to Scale Your Model", inference chapter): prefill is compute-bound, so
input tokens cost what the ACTIVE parameters cost; decode streams every weight and the whole KV cache of every
sequence each step, and HBM caps the batch, so output tokens cost what TOTAL parameters and context cost.

The data is one sweep (cached like any other): the model zoo on an 8-GPU server (HGX H200, 1.13 TB of HBM) at
three contexts, and a ~1T-parameter model against a ~235B one on a GB200 NVL72 rack (13.4 TB). Every point is
decoded at the largest batch that fits, the cheapest way to serve it. Each claim's verdict is computed from those
rows by a function of the rows alone, so data where the claim fails reads "does not hold".
"""

import math
from dataclasses import dataclass
from pathlib import Path

from base.inputs import ConfigError
from tracer.sweep import SweepPoint, kv_share, readable

SERVER, RACK = "h200x8", "gb200-nvl72"
CONTEXTS = (8192, 32768, 131072)
PROMPT = 4096  # prefill tokens per sequence at every point: input cost is compared at one prompt length
DENSE = ("llama3-8b", "llama3-70b", "llama3-405b")
MOE = ("mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2")
LARGE, MID = "kimi-k2", "qwen3-235b-a22b"  # claim 3: ~1T total parameters against ~235B
STRATEGIES = {SERVER: {"dense": ("tp",), "moe": ("tp", "ep")}, RACK: {"moe": ("tp-ep", "ep")}}


def points() -> list[SweepPoint]:
    """The claims sweep: every model on the server, the claim-3 pair on the rack; each strategy that suits the
    model, at each context, at the largest batch that fits (the cheapest strategy is kept per point)."""
    out = []
    for system, models in ((SERVER, DENSE + MOE), (RACK, (LARGE, MID))):
        for model in models:
            for strategy in STRATEGIES[system]["moe" if model in MOE else "dense"]:
                out += [SweepPoint(model, system, strategy, "max", context, PROMPT) for context in CONTEXTS]
    return out


# --- the rows each verdict reads ---
def claim_rows(records: list[dict]) -> list[dict]:
    """One row per (model, system, context): the cheapest strategy for input tokens and, separately, for output
    tokens (among those whose decode step fits), with what the verdicts need. A point where nothing fits keeps an
    infinite output cost."""
    from models.config import get_model

    best: dict[tuple, dict] = {}
    for record in records:
        r = record.get("result")
        if r is None:
            continue
        key = (r["model"], r["system"], r["context"])
        cfg = get_model(r["model"])
        dec = r["decode"]
        fits = bool(dec["memory_per_device"]["fits"]) and r["max_batch"] > 0
        row = best.setdefault(key, {
            "model": r["model"], "system": r["system"], "context": r["context"], "prompt": r["prompt"],
            "total_params": r["total_params"], "active_params": r["active_params"], "hidden": cfg.hidden,
            "kv_bytes_per_token": cfg.kv_bytes_per_token, "usd_in": math.inf, "usd_out": math.inf,
            "strategy_in": "", "strategy_out": "", "max_batch": 0, "kv_share": math.nan,
            "weights_dtype": r["weights_dtype"], "kv_cache_dtype": r["kv_cache_dtype"], "compiler": r["compiler"],
            "usd_per_chip_hour": r["usd_per_chip_hour"]})
        if r["prefill"]["usd_per_mtok"] < row["usd_in"]:
            row.update(usd_in=r["prefill"]["usd_per_mtok"], strategy_in=r["strategy"])
        if fits and dec["usd_per_mtok"] < row["usd_out"]:
            row.update(usd_out=dec["usd_per_mtok"], strategy_out=r["strategy"], max_batch=r["max_batch"],
                       kv_share=kv_share(dec))
    return sorted(best.values(), key=lambda x: (x["system"], x["active_params"], x["model"], x["context"]))


# --- verdicts: functions of the rows alone ---
@dataclass(frozen=True)
class Verdict:
    number: int
    claim: str
    holds: bool
    summary: str  # the numbers behind it, one line
    checks: tuple[str, ...]  # each test and its outcome

    @property
    def text(self) -> str:
        return "holds" if self.holds else "does not hold"


def _pairs(rows: list[dict], key: str) -> list[tuple[dict, dict, float, float, float]]:
    """Pairs of models whose total and active parameter ratios differ at least 2x, so that a cost ratio can be
    closer to one than the other: (a, b, ln cost ratio, ln active ratio, ln total ratio), b the larger in total."""
    out = []
    finite = [r for r in rows if math.isfinite(r[key])]
    for i, first in enumerate(finite):
        for second in finite[i + 1:]:
            a, b = sorted((first, second), key=lambda r: r["total_params"])
            la = math.log(b["active_params"] / a["active_params"])
            lt = math.log(b["total_params"] / a["total_params"])
            if abs(lt - la) >= math.log(2):
                out.append((a, b, math.log(b[key] / a[key]), la, lt))
    return out


def _follows(pairs, towards: str) -> tuple[int, list[str]]:
    """How many pairs' cost ratios lie nearer (in log) the `towards` ratio (active or total) than the other."""
    n, lines = 0, []
    for a, b, lc, la, lt in pairs:
        near_total = abs(lc - lt) < abs(lc - la)
        ok = near_total if towards == "total" else not near_total
        n += ok
        lines.append(f"{b['model']} / {a['model']}: cost x{math.exp(lc):.2f}, active x{math.exp(la):.2f}, "
                     f"total x{math.exp(lt):.2f}: nearer {'total' if near_total else 'active'}")
    return n, lines


def _elasticities(rows: list[dict], key: str, on=("active_params", "total_params")) -> tuple[float, float]:
    """Least-squares fit ln cost = a ln x1 + b ln x2 + c over the rows (x1, x2: active and total parameters unless
    `on` says otherwise): (a, b)."""
    import numpy as np

    finite = [r for r in rows if math.isfinite(r[key])]
    if len(finite) < 4:
        return math.nan, math.nan
    x = np.array([[math.log(r[on[0]]), math.log(r[on[1]]), 1.0] for r in finite])
    y = np.array([math.log(r[key]) for r in finite])
    (a, b, _), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(a), float(b)


MAJORITY = 0.75  # share of the informative model pairs that must agree with a claim about a tendency


def claim_1(rows: list[dict]) -> Verdict:
    claim = "Input-token cost follows active parameters, not total"
    at = [r for r in rows if r["system"] == SERVER and r["context"] == min(CONTEXTS)]
    pairs = _pairs(at, "usd_in")
    n, lines = _follows(pairs, "active")
    a, b = _elasticities(at, "usd_in")
    holds = bool(pairs) and n >= MAJORITY * len(pairs)
    return Verdict(1, claim, holds, f"{n} of {len(pairs)} model pairs' prefill cost ratios lie nearer their "
                   f"active- than their total-parameter ratio; fit: cost ~ active^{a:.2f} x total^{b:.2f} "
                   f"({SERVER}, prompt {PROMPT})", tuple(lines))


def claim_2(rows: list[dict]) -> Verdict:
    claim = "Output-token cost follows total parameters and context length, hardly active parameters"
    server = [r for r in rows if r["system"] == SERVER]
    mid = sorted(CONTEXTS)[len(CONTEXTS) // 2]
    at = [r for r in server if r["context"] == mid]
    pairs = _pairs(at, "usd_out")
    n, lines = _follows(pairs, "total")
    a, b = _elasticities(at, "usd_out")
    kv, total = _elasticities(at, "usd_out", on=("kv_bytes_per_token", "total_params"))
    slopes = []
    for model in sorted({r["model"] for r in server}):
        fit = sorted((r["context"], r["usd_out"]) for r in server if r["model"] == model and
                     math.isfinite(r["usd_out"]))
        if len(fit) >= 2:
            slopes.append((model, math.log(fit[-1][1] / fit[0][1]) / math.log(fit[-1][0] / fit[0][0])))
    rising = [m for m, s in slopes if s >= 0.5]
    holds = bool(pairs) and n >= MAJORITY * len(pairs) and slopes and len(rising) == len(slopes)
    lines += [f"{m}: cost ~ context^{s:.2f} over the contexts that fit" for m, s in slopes]
    return Verdict(2, claim, holds, f"{n} of {len(pairs)} pairs' output cost ratios lie nearer total than active "
                   f"(context {mid}); fit: cost ~ active^{a:.2f} x total^{b:.2f}, or ~ KV per token^{kv:.2f} x "
                   f"total^{total:.2f}; {len(rising)} of {len(slopes)} "
                   f"models' output cost grows at least as context^0.5 (at the largest batch that fits, {SERVER})",
                   tuple(lines))


def claim_3(rows: list[dict]) -> Verdict:
    claim = (f"On an 8-GPU server the KV cache caps the batch and output cost climbs with context; on a GB200 NVL72 "
             f"a ~1T model ({LARGE}) is not at a disadvantage against a ~235B one ({MID}): KV dominates the bytes")
    get = {(r["model"], r["system"], r["context"]): r for r in rows}
    lo, hi = min(CONTEXTS), max(CONTEXTS)
    checks, ok = [], True
    for model in (LARGE, MID):
        a, b = get.get((model, SERVER, lo)), get.get((model, SERVER, hi))
        if a is None or b is None:
            ok = False
            checks.append(f"{model} on {SERVER}: missing data")
            continue
        capped = b["max_batch"] < a["max_batch"] or not math.isfinite(b["usd_out"])
        climbs = b["usd_out"] >= 2 * a["usd_out"]
        ok &= capped and climbs
        checks.append(f"{model} on {SERVER}: largest batch {a['max_batch']} at {lo} -> {b['max_batch']} at {hi}; "
                      f"${a['usd_out']:.3g} -> ${b['usd_out']:.3g} per Mtok out"
                      f"{'' if capped and climbs else ' (fails: not capped or not climbing 2x)'}")
    ratios = []
    for context in CONTEXTS:
        large, mid = get.get((LARGE, RACK, context)), get.get((MID, RACK, context))
        if large is None or mid is None or not math.isfinite(mid["usd_out"]):
            ok = False
            checks.append(f"{RACK} at {context}: missing data")
            continue
        ratio = large["usd_out"] / mid["usd_out"]
        ratios.append(ratio)
        ok &= ratio <= 1.25
        checks.append(f"{RACK} at {context}: {LARGE} / {MID} output cost x{ratio:.2f} (not at a disadvantage: "
                      f"<= 1.25); KV share of decode bytes {large['kv_share']:.0%} and {mid['kv_share']:.0%}")
    top = [get.get((m, RACK, hi)) for m in (LARGE, MID)]
    kv_dominates = all(t is not None and t["kv_share"] > 0.5 for t in top)
    ok &= kv_dominates
    worst = f"x{max(ratios):.2f}" if ratios else "n/a"
    return Verdict(3, claim, ok, f"on {SERVER} the batch falls and output cost climbs with context; on {RACK} "
                   f"{LARGE} costs at most {worst} of {MID} per output token; KV share of decode bytes at {hi}: "
                   + ", ".join(f"{t['kv_share']:.0%}" for t in top if t is not None), tuple(checks))


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    import numpy as np

    if len(set(x)) < 2 or len(set(y)) < 2:  # no order to correlate
        return math.nan
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def claim_4(rows: list[dict]) -> Verdict:
    claim = "More active parameters come with a larger model dimension and more KV cache per token, so a higher " \
            "output cost"
    mid = sorted(CONTEXTS)[len(CONTEXTS) // 2]
    at = [r for r in rows if r["system"] == SERVER and r["context"] == mid and math.isfinite(r["usd_out"])]
    active = [r["active_params"] for r in at]
    rho = {what: spearman(active, [r[key] for r in at]) if len(at) >= 3 else math.nan
           for what, key in (("model dimension", "hidden"), ("KV bytes per token", "kv_bytes_per_token"),
                             ("output cost", "usd_out"))}
    holds = all(v >= 0.5 for v in rho.values())
    return Verdict(4, claim, holds, "Spearman rank correlation with active parameters over "
                   f"{len(at)} models ({SERVER}, context {mid}): "
                   + ", ".join(f"{k} {v:+.2f}" for k, v in rho.items()) + " (a tendency: each >= +0.5)",
                   tuple(f"{r['model']}: {r['active_params'] / 1e9:.1f}B active, d_model {r['hidden']}, "
                         f"{r['kv_bytes_per_token'] / 1e3:.0f} kB KV per token, ${r['usd_out']:.3g} per Mtok out"
                         for r in sorted(at, key=lambda r: r["active_params"])))


def verdicts(rows: list[dict]) -> list[Verdict]:
    return [claim_1(rows), claim_2(rows), claim_3(rows), claim_4(rows)]


# --- the report ---
def _money(x: float) -> str:
    return f"${x:.3g}" if math.isfinite(x) else "does not fit"


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    from tabulate import tabulate

    def cell(r, key):
        v = r.get(key, "")
        if key in ("usd_in", "usd_out"):
            return _money(v)
        if key in ("total_params", "active_params"):
            return f"{v / 1e9:.1f}B"
        if key == "kv_bytes_per_token":
            return f"{v / 1e3:.0f} kB"
        if key == "kv_share":
            return f"{v:.0%}" if math.isfinite(v) else ""
        return v

    return tabulate([[cell(r, k) for k, _ in columns] for r in rows], headers=[h for _, h in columns],
                    tablefmt="pipe")


def _provenance(rows: list[dict]) -> str:
    prices = ", ".join(sorted({f"{r['system']} ${r['usd_per_chip_hour']:.2f}/chip-h" for r in rows}))
    compilers = ", ".join(sorted({r["compiler"] for r in rows}))
    return (f"models' own dtypes (weights {', '.join(sorted({r['weights_dtype'] for r in rows}))}; KV cache "
            f"{', '.join(sorted({r['kv_cache_dtype'] for r in rows}))}); prompt {PROMPT} tokens; decode at the largest "
            f"batch that fits; the cheapest strategy per point of {', '.join(_strategies())}; compiler {compilers}; "
            f"prices {prices}")


def _strategies() -> list[str]:
    return sorted({s for kinds in STRATEGIES.values() for names in kinds.values() for s in names})


def readme_table(found: list[Verdict]) -> str:
    from tabulate import tabulate

    return tabulate([[v.number, v.claim, f"**{v.text}**", v.summary] for v in found],
                    headers=["#", "claim", "verdict", "the numbers"], tablefmt="pipe")


def write_report(records: list[dict], out: str) -> tuple[Path, list[Verdict]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = claim_rows(records)
    if not rows:
        raise ConfigError("the claims sweep has no traced points: re-run `tracer report claims` (see its errors "
                          "with `tracer sweep`)")
    found = verdicts(rows)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    prov = _provenance(rows)
    caption = prov.replace("$", r"\$")
    failed = [r for r in records if "error" in r]
    lines = ["# The seed argument, checked from compiled programs", "",
             "Each claim's verdict is computed from the rows below by `tracer.claims` (the rule is stated with it). "
             f"Data: {len(records)} traced points, {len(failed)} failed; {prov}.", "",
             readme_table(found), ""]
    server = [r for r in rows if r["system"] == SERVER]
    short, mid = min(CONTEXTS), sorted(CONTEXTS)[len(CONTEXTS) // 2]

    def figure(name: str, draw, width=9.0):
        fig, axes = plt.subplots(1, 2, figsize=(width, 4))
        draw(axes)
        fig.text(0.01, -0.03, caption, fontsize=5, wrap=True)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return f"![{name}]({name})"

    def scatter(ax, pts, xkey, ykey, xlabel, ylabel, title):
        pts = [r for r in pts if math.isfinite(r[ykey])]
        ax.scatter([r[xkey] / 1e9 for r in pts], [r[ykey] for r in pts])
        for r in pts:
            ax.annotate(r["model"], (r[xkey] / 1e9, r[ykey]), fontsize=6)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)

    for v in found:
        lines += [f"## Claim {v.number}: {v.claim}", "", f"**Verdict: {v.text}.** {v.summary}.", ""]
        if v.number == 1:
            at = [r for r in server if r["context"] == short]
            lines += ["Rule: over every pair of models whose active and total parameter ratios differ at least 2x, "
                      "the prefill cost ratio must lie nearer (in log) the active ratio in at least "
                      f"{MAJORITY:.0%} of pairs.", "",
                      _table(at, [("model", "model"), ("active_params", "active"), ("total_params", "total"),
                                  ("strategy_in", "strategy"), ("usd_in", "$/Mtok in")]), "",
                      figure("claim-1.png", lambda ax, at=at: (
                          scatter(ax[0], at, "active_params", "usd_in", "active parameters (B)", "USD per Mtok in",
                                  "input cost against active parameters"),
                          scatter(ax[1], at, "total_params", "usd_in", "total parameters (B)", "USD per Mtok in",
                                  "input cost against total parameters"))), ""]
        elif v.number == 2:
            at = [r for r in server if r["context"] == mid]

            def draw(ax, at=at):
                for model in sorted({r["model"] for r in server}):
                    pts = sorted((r["context"], r["usd_out"]) for r in server if r["model"] == model
                                 and math.isfinite(r["usd_out"]))
                    ax[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=model)
                ax[0].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="USD per Mtok out",
                          title=f"output cost against context ({SERVER})")
                ax[0].legend(fontsize=5)
                scatter(ax[1], at, "total_params", "usd_out", "total parameters (B)", "USD per Mtok out",
                        f"output cost against total parameters ({mid})")

            lines += ["Rule: as claim 1 with output cost nearer the total ratio, at the middle context; and every "
                      "model's output cost grows at least as fast as the square root of the context.", "",
                      _table(sorted(server, key=lambda r: (r["active_params"], r["context"])),
                             [("model", "model"), ("active_params", "active"), ("total_params", "total"),
                              ("context", "context"), ("strategy_out", "strategy"), ("max_batch", "largest batch"),
                              ("kv_share", "KV share of bytes"), ("usd_out", "$/Mtok out")]), "",
                      figure("claim-2.png", draw), ""]
        elif v.number == 3:
            pair = [r for r in rows if r["model"] in (LARGE, MID)]

            def draw(ax, pair=pair):
                for (model, system) in sorted({(r["model"], r["system"]) for r in pair}):
                    pts = sorted((r["context"], r["usd_out"], r["max_batch"]) for r in pair
                                 if r["model"] == model and r["system"] == system)
                    style = "-" if system == RACK else "--"
                    fitting = [p for p in pts if math.isfinite(p[1])]
                    ax[0].plot([p[0] for p in fitting], [p[1] for p in fitting], "o" + style,
                               label=f"{model}, {system}")
                    ax[1].plot([p[0] for p in pts], [max(p[2], 0.5) for p in pts], "o" + style,
                               label=f"{model}, {system}")
                ax[0].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="USD per Mtok out",
                          title="output cost: server against rack")
                ax[1].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="largest batch that fits",
                          title="the batch HBM allows (0 drawn at 0.5)")
                for a in ax:
                    a.legend(fontsize=6)

            lines += [f"Rule: on {SERVER}, both models' largest batch falls and output cost at least doubles from "
                      f"{min(CONTEXTS)} to {max(CONTEXTS)} tokens of context; on {RACK}, {LARGE} costs at most 1.25x "
                      f"of {MID} per output token at every context, and the KV cache is over half of both models' "
                      f"decode bytes at {max(CONTEXTS)}.", "",
                      *[f"- {c}" for c in v.checks], "",
                      _table(sorted(pair, key=lambda r: (r["system"], r["model"], r["context"])),
                             [("model", "model"), ("system", "system"), ("context", "context"),
                              ("strategy_out", "strategy"), ("max_batch", "largest batch"),
                              ("kv_share", "KV share of bytes"), ("usd_out", "$/Mtok out")]), "",
                      figure("claim-3.png", draw), ""]
        else:
            at = [r for r in server if r["context"] == mid and math.isfinite(r["usd_out"])]

            def draw(ax, at=at):
                scatter(ax[0], at, "active_params", "usd_out", "active parameters (B)", "USD per Mtok out",
                        f"output cost against active parameters ({mid})")
                ax[1].scatter([r["active_params"] / 1e9 for r in at], [r["kv_bytes_per_token"] / 1e3 for r in at],
                              s=[r["hidden"] / 100 for r in at])
                for r in at:
                    ax[1].annotate(f"{r['model']} (D={r['hidden']})",
                                   (r["active_params"] / 1e9, r["kv_bytes_per_token"] / 1e3), fontsize=6)
                ax[1].set(xscale="log", yscale="log", xlabel="active parameters (B)", ylabel="KV kB per token",
                          title="KV per token (marker size: model dimension)")

            lines += ["Rule: the Spearman rank correlation of active parameters with the model dimension, the KV "
                      "bytes per token and the output cost must each be at least +0.5.", "",
                      _table(sorted(at, key=lambda r: r["active_params"]),
                             [("model", "model"), ("active_params", "active"), ("hidden", "d_model"),
                              ("kv_bytes_per_token", "KV per token"), ("usd_out", "$/Mtok out")]), "",
                      figure("claim-4.png", draw), ""]
        if v.number in (1, 2):
            lines += ["<details><summary>model pairs</summary>", "", *[f"- {c}" for c in v.checks], "",
                      "</details>", ""]
    if failed:
        lines += ["## Points that failed", "", *[f"- {r['inputs']}: {r['error']}" for r in failed], ""]
    report = folder / "claims.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report, found


def _usable(result) -> bool:
    """A result with every figure the claims read."""
    return readable(result, lambda r: claim_rows([{"inputs": {}, "result": r}]))


def run(out: str, jobs: int = 1, results: str | None = None, progress="stderr") -> tuple[Path, list[Verdict]]:
    """Trace the claims sweep (cached like any sweep), or read a sweep's results, and write the report."""
    from tracer import sweep
    from tracer.sweep_report import load_records

    if results:
        records = load_records(results, whole=_usable)
        wanted = {(p.model, p.system, p.context) for p in points()}
        if not wanted & {(r["result"]["model"], r["result"]["system"], r["result"]["context"]) for r in records
                         if "result" in r}:
            raise ConfigError(f"{results} is not the claims sweep: none of its points is a model, system and context "
                              "the claims compare; run `tracer report claims` without --from to trace them")
    else:
        records = sweep.run(points(), jobs=jobs, progress=progress)
        sweep.write(records, str(Path(out) / "data"))
    return write_report(records, out)
