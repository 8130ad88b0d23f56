"""`tracer report claims --out DIR`: the seed argument, each claim checked from compiled programs.

The argument (the README's mission; "How to Scale Your Model", inference chapter): prefill is compute-bound, so
input tokens cost what the ACTIVE parameters cost; decode streams every weight and the whole KV cache of every
sequence each step, and HBM caps the batch, so output tokens cost what TOTAL parameters and context cost.

The data is one sweep (cached like any other): the model zoo on an 8-GPU server (HGX H200, 1.13 TB of HBM) at
three contexts, and a ~1T-parameter model against a ~235B one on a GB200 NVL72 rack (13.4 TB). Every point is
decoded at the largest batch that fits, the cheapest way to serve it. Each claim's verdict is computed from those
rows by a function of the rows alone, so data where the claim fails reads "does not hold".
"""

import dataclasses
import math
from dataclasses import dataclass

from tracer.reports.stats import elasticities, pairs, spearman
from tracer.sweep import SweepPoint
from tracer.sweep_records import StoredResult

SERVER, RACK = "h200x8", "gb200-nvl72"
CONTEXTS = (8192, 32768, 131072)
PROMPT = 4096  # prefill tokens per sequence at every point: input cost is compared at one prompt length
DENSE = ("llama3-8b", "llama3-70b", "llama3-405b", "qwen2.5-72b", "qwen3-32b", "mistral-nemo", "mistral-large-2",
         "gemma2-27b", "gemma3-27b")
MOE = ("mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2",
       "llama4-maverick", "minimax-m2", "qwen3-next-80b-a3b", "deepseek-v3.2")  # a hybrid and a sparse-attention one
LARGE, MID = "kimi-k2", "qwen3-235b-a22b"  # claim 3: ~1T total parameters against ~235B
SPARSE_PAIR = ("deepseek-v3", "deepseek-v3.2")  # dense against sparse attention where HBM leaves room for the KV
HYBRID_PAIR = ("qwen3-30b-a3b", "qwen3-next-80b-a3b")  # full attention against linear attention, ~3B active each
STRATEGIES = {SERVER: {"dense": ("tp",), "moe": ("tp", "ep")}, RACK: {"moe": ("tp-ep", "ep")}}


def points() -> list[SweepPoint]:
    """The claims sweep: every model on the server, the claim-3 pair and DeepSeek-V3 against V3.2 on the rack; each
    strategy that suits the model, at each context, at the largest batch that fits (the cheapest strategy is kept per
    point)."""
    out = []
    for system, models in ((SERVER, DENSE + MOE), (RACK, (LARGE, MID, *SPARSE_PAIR))):
        for model in models:
            for strategy in STRATEGIES[system]["moe" if model in MOE else "dense"]:
                out += [SweepPoint(model, system, strategy, "max", context, PROMPT) for context in CONTEXTS]
    return out


# --- the rows each verdict reads ---
@dataclass(frozen=True)
class ClaimRow:
    """A (model, system, context) of the claims sweep: its cheapest strategy for input tokens and, apart, for output
    tokens among those whose decode step fits (none: an infinite output cost)."""

    model: str
    system: str
    context: int
    prompt: int
    total_params: float
    active_params: float
    hidden: int
    kv_bytes_per_token: float
    weights_dtype: str
    kv_cache_dtype: str
    compiler: str
    usd_per_chip_hour: float
    usd_in: float = math.inf
    strategy_in: str = ""
    usd_out: float = math.inf
    strategy_out: str = ""
    max_batch: int = 0
    kv_share: float = math.nan  # of the cheapest output strategy's decode bytes


def claim_rows(records: list[ClaimRow]) -> list[ClaimRow]:
    """One row per (model, system, context) over the sweep's stored records (tracer.sweep_records.StoredResult)."""
    from models.files import get_model

    best: dict[tuple, ClaimRow] = {}
    for record in records:
        if record.get("result") is None:
            continue
        r = StoredResult.read(record["result"])
        cfg = get_model(r.model)
        row = best.get((r.model, r.system, r.context)) or ClaimRow(
            r.model, r.system, r.context, r.prompt, r.total_params, r.active_params, cfg.hidden,
            cfg.kv_bytes_per_token, r.weights_dtype, r.kv_cache_dtype, r.compiler, r.usd_per_chip_hour)
        if r.prefill.usd_per_mtok < row.usd_in:
            row = dataclasses.replace(row, usd_in=r.prefill.usd_per_mtok, strategy_in=r.strategy)
        if r.decode.fits and r.max_batch > 0 and r.decode.usd_per_mtok < row.usd_out:
            row = dataclasses.replace(row, usd_out=r.decode.usd_per_mtok, strategy_out=r.strategy,
                                      max_batch=r.max_batch, kv_share=r.decode.kv_share)
        best[(r.model, r.system, r.context)] = row
    return sorted(best.values(), key=lambda x: (x.system, x.active_params, x.model, x.context))


# --- verdicts: functions of the rows alone ---
@dataclass(frozen=True)
class Finding:
    """What a claim's verdict function finds in the rows."""

    holds: bool
    summary: str  # the numbers behind it, one line
    checks: tuple[str, ...]  # each test and its outcome

    @property
    def text(self) -> str:
        return "holds" if self.holds else "does not hold"


MAJORITY = 0.75  # share of the informative model pairs that must agree with a claim about a tendency


def _follows(found, towards: str) -> tuple[int, list[str]]:
    """How many pairs' cost ratios lie nearer (in log) the `towards` ratio (active or total) than the other, and a
    line per pair."""
    n, lines = 0, []
    for p in found:
        n += p.nearer_total if towards == "total" else not p.nearer_total
        lines.append(f"{p.b.model} / {p.a.model}: cost x{math.exp(p.log_cost):.2f}, active "
                     f"x{math.exp(p.log_active):.2f}, total x{math.exp(p.log_total):.2f}: nearer "
                     f"{'total' if p.nearer_total else 'active'}")
    return n, lines


def mid_context() -> int:
    """The middle of the claims' contexts, where claims 2 and 4 compare models."""
    return sorted(CONTEXTS)[len(CONTEXTS) // 2]


def claim_1(rows: list[ClaimRow]) -> Finding:
    """Input-token cost follows active parameters, not total."""
    at = [r for r in rows if r.system == SERVER and r.context == min(CONTEXTS)]
    found = pairs(at, "usd_in")
    n, lines = _follows(found, "active")
    a, b = elasticities(at, "usd_in")
    holds = bool(found) and n >= MAJORITY * len(found)
    return Finding(holds, f"{n} of {len(found)} model pairs' prefill cost ratios lie nearer their active- than their "
                   f"total-parameter ratio; fit: cost ~ active^{a:.2f} x total^{b:.2f} ({SERVER}, prompt {PROMPT})",
                   tuple(lines))


def _context_slopes(server: list[ClaimRow]) -> list[tuple[str, float]]:
    """Per model, the log-log slope of output cost from its shortest to its longest context that fits."""
    slopes = []
    for model in sorted({r.model for r in server}):
        fit = sorted((r.context, r.usd_out) for r in server if r.model == model and
                     math.isfinite(r.usd_out))
        if len(fit) >= 2:
            slopes.append((model, math.log(fit[-1][1] / fit[0][1]) / math.log(fit[-1][0] / fit[0][0])))
    return slopes


def claim_2(rows: list[ClaimRow]) -> Finding:
    """Output-token cost follows total parameters and context length, hardly active parameters."""
    server = [r for r in rows if r.system == SERVER]
    mid = mid_context()
    at = [r for r in server if r.context == mid]
    found = pairs(at, "usd_out")
    n, lines = _follows(found, "total")
    a, b = elasticities(at, "usd_out")
    kv, total = elasticities(at, "usd_out", on=("kv_bytes_per_token", "total_params"))
    slopes = _context_slopes(server)
    rising = [m for m, s in slopes if s >= 0.5]
    holds = bool(found) and n >= MAJORITY * len(found) and slopes and len(rising) == len(slopes)
    lines += [f"{m}: cost ~ context^{s:.2f} over the contexts that fit" for m, s in slopes]
    lines += _pair_lines({(r.model, r.system, r.context): r for r in server}, HYBRID_PAIR, SERVER)
    return Finding(holds, f"{n} of {len(found)} pairs' output cost ratios lie nearer total than active "
                   f"(context {mid}); fit: cost ~ active^{a:.2f} x total^{b:.2f}, or ~ KV per token^{kv:.2f} x "
                   f"total^{total:.2f}; {len(rising)} of {len(slopes)} "
                   f"models' output cost grows at least as context^0.5 (at the largest batch that fits, {SERVER})",
                   tuple(lines))


def _server_capped(get: dict, checks: list[str]) -> bool:
    """Claim 3 on the server: both models' largest batch falls and output cost at least doubles with context."""
    lo, hi = min(CONTEXTS), max(CONTEXTS)
    ok = True
    for model in (LARGE, MID):
        a, b = get.get((model, SERVER, lo)), get.get((model, SERVER, hi))
        if a is None or b is None:
            ok = False
            checks.append(f"{model} on {SERVER}: missing data")
            continue
        capped = b.max_batch < a.max_batch or not math.isfinite(b.usd_out)
        climbs = b.usd_out >= 2 * a.usd_out
        ok &= capped and climbs
        checks.append(f"{model} on {SERVER}: largest batch {a.max_batch} at {lo} -> {b.max_batch} at {hi}; "
                      f"${a.usd_out:.3g} -> ${b.usd_out:.3g} per Mtok out"
                      f"{'' if capped and climbs else ' (fails: not capped or not climbing 2x)'}")
    return ok


def claim_3(rows: list[ClaimRow]) -> Finding:
    """On an 8-GPU server the KV cache caps the batch and output cost climbs with context; on a rack a ~1T model
    is not at a disadvantage against a ~235B one: KV dominates the bytes."""
    get = {(r.model, r.system, r.context): r for r in rows}
    checks = []
    ok = _server_capped(get, checks)
    ratios = []
    for context in CONTEXTS:
        large, mid = get.get((LARGE, RACK, context)), get.get((MID, RACK, context))
        if large is None or mid is None or not math.isfinite(mid.usd_out):
            ok = False
            checks.append(f"{RACK} at {context}: missing data")
            continue
        ratio = large.usd_out / mid.usd_out
        ratios.append(ratio)
        ok &= ratio <= 1.25
        checks.append(f"{RACK} at {context}: {LARGE} / {MID} output cost x{ratio:.2f} (not at a disadvantage: "
                      f"<= 1.25); KV share of decode bytes {large.kv_share:.0%} and {mid.kv_share:.0%}")
    checks += _pair_lines(get, SPARSE_PAIR, RACK)
    hi = max(CONTEXTS)
    top = [get.get((m, RACK, hi)) for m in (LARGE, MID)]
    kv_dominates = all(t is not None and t.kv_share > 0.5 for t in top)
    ok &= kv_dominates
    worst = f"x{max(ratios):.2f}" if ratios else "n/a"
    return Finding(ok, f"on {SERVER} the batch falls and output cost climbs with context; on {RACK} "
                   f"{LARGE} costs at most {worst} of {MID} per output token; KV share of decode bytes at {hi}: "
                   + ", ".join(f"{t.kv_share:.0%}" for t in top if t is not None), tuple(checks))


def _pair_lines(get: dict, pair: tuple[str, str], system: str) -> list[str]:
    """What an attention that stops growing does, shown beside a verdict and not part of it: the second model's
    output cost against the first's at each context (SPARSE_PAIR on the rack, whose HBM leaves room for long contexts:
    sparse attention reads 2048 of the cached rows; HYBRID_PAIR on the server: linear-attention layers keep a fixed
    state), with each one's largest batch and the share of decode's bytes its cache (and state) takes."""
    base, other = pair
    out = []
    for context in CONTEXTS:
        a, b = get.get((base, system, context)), get.get((other, system, context))
        if a is not None and b is not None and math.isfinite(a.usd_out) and math.isfinite(b.usd_out):
            out.append(f"{system} at {context} (not part of the verdict): {other} / {base} output cost "
                       f"x{b.usd_out / a.usd_out:.2f} (${b.usd_out:.3g} against ${a.usd_out:.3g} per Mtok), largest "
                       f"batch {b.max_batch} against {a.max_batch}, KV share of decode bytes {b.kv_share:.0%} "
                       f"against {a.kv_share:.0%}")
    return out


def claim_4(rows: list[ClaimRow]) -> Finding:
    """More active parameters come with a larger model dimension and more KV per token, so a higher output cost."""
    mid = mid_context()
    at = [r for r in rows if r.system == SERVER and r.context == mid and math.isfinite(r.usd_out)]
    active = [r.active_params for r in at]
    rho = {what: spearman(active, [getattr(r, key) for r in at]) if len(at) >= 3 else math.nan
           for what, key in (("model dimension", "hidden"), ("KV bytes per token", "kv_bytes_per_token"),
                             ("output cost", "usd_out"))}
    holds = all(v >= 0.5 for v in rho.values())
    return Finding(holds, "Spearman rank correlation with active parameters over "
                   f"{len(at)} models ({SERVER}, context {mid}): "
                   + ", ".join(f"{k} {v:+.2f}" for k, v in rho.items()) + " (a tendency: each >= +0.5)",
                   tuple(f"{r.model}: {r.active_params / 1e9:.1f}B active, d_model {r.hidden}, "
                         f"{r.kv_bytes_per_token / 1e3:.0f} kB KV per token, ${r.usd_out:.3g} per Mtok out"
                         for r in sorted(at, key=lambda r: r.active_params)))
