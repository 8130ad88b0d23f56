"""Pipeline parallelism in serving (issue 16, section 1): `tracer serving --strategy pp|tp-pp`.

The system's chips form S stages (the strategy's pipeline axis), each a group of chips inside one scale-up domain
that runs the rest of the strategy (tp-pp: tensor parallel over a node; pp: one chip). The layers go to the stages
in order, as evenly as they split, and the last stage holds the LM head too. N running sequences go in S
micro-batches of N / S (one a stage in flight, as vLLM's virtual engines and TensorRT-LLM's micro-batches run
them), each micro-batch's iteration passing every stage in turn. Priced from compiled programs of the slowest stage,
the last: ceil(L / S) layers (the model's last ones, with its embedding and LM head), on its own chips, which
tracer.serving prices as a system serving one micro-batch (its decode at the mean context and its share of prefill,
each kernel at the achieved rates):
- a micro-batch's round: S stage iterations (kernels and collectives) + S - 1 sends of its activations (tokens x
  hidden, each chip of a stage sending its share: over NVLink where every stage sits in one domain, else the NIC) +
  one iteration's overhead; TPOT = the round (over the tokens a speculative step yields);
- the S stages run the S micro-batches at once, so the system makes N tokens a round; with fewer sequences than
  stages, N micro-batches of one, and S - N stages idle (the bubble, counted so);
- a stage's device holds its layers' weights and their cache of all N sequences (its KV pool bounds N); the token
  budget holds one micro-batch's tokens.
Counted, not hidden: the sends and the host's overhead (bubbles). Every stage is priced as the last, which holds
the LM head and the most layers: an upper bound on the round of (S - 1) stages' head and spare layer (stated).
"""

import dataclasses
import math
from dataclasses import dataclass

from base.inputs import ConfigError
from meshes.strategies import get_strategy
from meshes.systems import get_system, part_of
from models.config import ModelConfig
from models.files import get_model
from tracer.api import setup
from tracer.serving_steps import Serving, decode_model, kv_pool
from tracer.speculation import check_speculation, draft_memory, iteration_tokens, step_shape
from tracer.timing import scale_out_link


def last_stage(cfg: ModelConfig, stages: int) -> ModelConfig:
    """The model's last ceil(L / S) layers (whole periods of its window pattern), the slowest stage's."""
    period = cfg.period
    if cfg.n_layers // period < stages:
        raise ConfigError(f"{cfg.name} has {cfg.n_layers} layers ({cfg.n_layers // period} of period {period}): "
                          f"too few for {stages} pipeline stages; use fewer nodes or another strategy")
    layers = math.ceil(cfg.n_layers // period / stages) * period
    first_dense = max(0, cfg.first_dense - (cfg.n_layers - layers))
    return dataclasses.replace(cfg, n_layers=layers, first_dense=first_dense,
                               name=f"{cfg.name} (last of {stages} stages)")


@dataclass(frozen=True)
class _Pipeline:
    """What stays the same at every concurrency: the system, its stages, the last stage's model, the workload."""

    system: object
    strategy: object
    stages: int
    per_stage: int
    stage_system: object
    model: str  # the whole model's name
    cfg: ModelConfig  # the last stage's
    isl: int
    osl: int
    kv_fraction: float
    max_num_tokens: int
    admission: str
    spec: object  # tracer.speculation.Speculation or None
    kw: dict

    @property
    def replicas(self) -> int:
        return self.strategy.stage.replicas(self.stage_system)


def _pipeline(model, system: str, strategy: str, isl: int, osl: int, kv_fraction: float, max_num_tokens: int,
              admission: str, speculative: int, acceptance, draft: str, kw: dict) -> _Pipeline:
    sys_, strat = get_system(system, kw.get("usd_per_chip_hour")), get_strategy(strategy)
    stages = strat.mesh_shape(sys_)[strat.pipeline]
    per_stage = sys_.n_chips // stages
    if sys_.domain_size % per_stage and per_stage % sys_.domain_size:
        raise ConfigError(f"strategy {strat.name} on {system}: stages of {per_stage} chips do not tile its "
                          f"{sys_.domain_size}-chip domains")
    cfg = model if isinstance(model, ModelConfig) else get_model(model)
    stage_cfg = last_stage(cfg.with_dtypes(kw.get("weights"), kw.get("kv_cache"), kw.get("dtype")), stages)
    return _Pipeline(sys_, strat, stages, per_stage, part_of(sys_, per_stage), cfg.name, stage_cfg, isl, osl,
                     kv_fraction, max_num_tokens, admission, check_speculation(speculative, acceptance, draft), kw)


def _most(p: _Pipeline) -> tuple[int, str]:
    """(the most sequences the stages hold: a stage's KV pool holds all of them, a micro-batch's tokens the budget;
    how it was bound)."""
    r, stage, name = p.replicas, p.strategy.stage, p.stage_system.name
    model_at, first = decode_model(p.cfg, name, stage, (r,), p.isl, p.osl, p.kw, step_shape(p.spec)[0])
    _, fits_n = kv_pool(model_at, first, r, r, p.isl, p.osl, p.kv_fraction, p.admission,
                        draft_memory(p.spec, first, name, stage, r, p.isl, p.osl, p.kw))
    budget_n = int(p.max_num_tokens // iteration_tokens(p.spec, p.isl, p.osl))
    n = min(fits_n, p.stages * budget_n) * r
    if n < r:
        raise ConfigError(f"not one sequence of {p.isl} + {p.osl} tokens fits a stage's KV pool beside its weights; "
                          "use more stages (nodes) or lower --isl/--osl")
    how = "the stages' KV pool" if fits_n <= p.stages * budget_n else "the token budget of each micro-batch"
    return n, f"the most {how} allows: {fits_n * r} by the KV pool, {p.stages * budget_n * r} by the budget"


def _send(system, rates, per_stage: int, sent: float) -> tuple[float, str]:
    """(seconds to send `sent` bytes from one stage to the next, each of its chips its share; the link's name):
    NVLink where every stage sits in one domain, else the scale-out NICs."""
    chip = system.chip
    if system.domain_size >= system.n_chips:
        return sent / (per_stage * chip.scale_up_bw) + chip.scale_up_latency, "NVLink"
    bw, latency = scale_out_link(chip, rates)
    return sent / (per_stage * bw) + latency, "the scale-out network"


def pipelined(serving, model, system: str, strategy: str, isl: int, osl: int, batch, kv_fraction: float,
              max_num_tokens: int, admission: str, speculative: int, acceptance, draft: str, kw: dict,
              tpot_ms: float | None = None, ttft_ms: float | None = None) -> Serving:
    """tracer.serving's steady state under a pipeline strategy (module docstring); `serving` prices a stage. With
    TPOT or TTFT targets: the most sequences (a multiple of the stage's replicas) that meet them, found by halving
    between one micro-batch and the most the stages hold, each concurrency priced from its own compiled stage."""
    p = _pipeline(model, system, strategy, isl, osl, kv_fraction, max_num_tokens, admission, speculative, acceptance,
                  draft, kw)
    if batch != "max":
        return _at(p, serving, batch, "as given")
    top, note = _most(p)
    if tpot_ms is None and ttft_ms is None:
        return _at(p, serving, top, note)

    def meets(x: Serving) -> bool:
        return (tpot_ms is None or x.tpot_s * 1e3 <= tpot_ms) and (ttft_ms is None or x.ttft_s * 1e3 <= ttft_ms)

    r = p.replicas
    targets = ", ".join(f"{name} {ms:g} ms" for name, ms in (("TPOT", tpot_ms), ("TTFT", ttft_ms)) if ms is not None)
    good, bad = (None, r)
    if meets(_at(p, serving, r, "")):
        good, bad = (top, None) if meets(_at(p, serving, top, "")) else (r, top)
    while bad is not None and good is not None and bad - good > r:
        mid = (good + bad) // 2 // r * r
        good, bad = (mid, bad) if meets(_at(p, serving, mid, "")) else (good, mid)
    if good is None:
        return _at(p, serving, r, f"no concurrency meets {targets}: {r} sequence(s) shown; {note}")
    return _at(p, serving, good, f"the most that meet {targets}; {note}")


def _at(p: _Pipeline, serving, n: int, note: str) -> Serving:
    """The pipeline's steady state of n sequences (module docstring)."""
    sys_, stages, r = p.system, p.stages, p.replicas
    queries, gained = step_shape(p.spec)
    micro = max(min(stages, n // r), 1)  # micro-batches in flight
    m = math.ceil(n / r / micro) * r  # sequences in each
    st = serving(p.cfg, p.stage_system.name, p.strategy.stage, p.isl, p.osl, m, p.kv_fraction, p.max_num_tokens,
                 None, None, p.admission, p.spec.k if p.spec else 0, p.spec.acceptance if p.spec else None,
                 p.spec.draft if p.spec else "mtp", **p.kw)
    rates = setup(p.cfg, p.stage_system.name, p.strategy.stage, batch=r, prompt=p.isl, context=p.isl, **p.kw).rates

    def overhead(sequences: float) -> float:  # a replica's scheduler's, running `sequences`
        return rates.overhead(sequences) if rates else 0.0

    prompts = gained / p.osl  # prompts a replica's sequence brings an iteration
    sent = m * queries * p.cfg.hidden * p.cfg.bits(p.cfg.dtype) / 8  # a micro-batch's activations, a boundary
    send, link = _send(sys_, rates, p.per_stage, sent)

    def round_of(stage_s: float, draft_s: float = 0.0, per_seq: float = 1.0) -> float:
        """S stage iterations' kernels and collectives (less the overhead a stage's of m sequences carries), the
        sends between them, one overhead of all n (a replica's scheduler's host work a round, its per-sequence part
        for each sequence, `per_seq` of one a sequence: 1 for decode, its prompts for a prefill share alone); a
        speculative draft once (on the last stage, where the model's last hidden states are)."""
        had, has = overhead(per_seq * m / r), overhead(per_seq * n / r)
        return stages * (stage_s - had - draft_s) + draft_s + (stages - 1) * send + has

    rnd = round_of(st.iteration_s, st.draft_s)
    share = rnd * st.output_share_s / st.iteration_s
    out_per, in_per = n * gained, n * gained * p.isl / p.osl
    usd_per_s = sys_.usd_per_chip_hour * sys_.n_chips / 3600
    ttft = math.ceil(p.isl / max(p.max_num_tokens - m * queries // r, 1)) * rnd
    piped = (f"pipeline: {stages} stages of {p.per_stage} chip{'s' if p.per_stage > 1 else ''} "
             f"({p.stage_system.name}, {p.cfg.n_layers} layers the slowest, the last, with the LM head: every stage "
             f"priced as it, an upper bound), {micro} micro-batch{'es' if micro > 1 else ''} of {m} in flight"
             f"{f' ({stages - micro} stages idle each round: the bubble)' if micro < stages else ''}; a round is "
             f"{stages} stage iterations of {(st.iteration_s - overhead(m / r) - st.draft_s) * 1e3:.2f} ms + "
             f"{stages - 1} send{'s' if stages > 2 else ''} of {sent / 1e6:.2f} MB over {link} ({send * 1e6:.0f} "
             "us each) + the overhead")
    return Serving(
        p.model, sys_.name, p.strategy.name, p.isl, p.osl, n, note, p.kv_fraction, p.max_num_tokens,
        st.kv_pool_bytes_per_device, st.kv_bytes_per_sequence_per_device, round_of(st.decode_s, st.draft_s),
        round_of(st.prefill_s, per_seq=prompts) if st.prefill_s else 0.0, rnd, share, in_per, rnd / gained, ttft,
        ttft + (p.osl - 1) * rnd / gained, out_per / rnd, in_per / rnd, n * gained / p.osl / rnd, sys_.n_chips,
        usd_per_s * 3600, usd_per_s * (rnd - share) / in_per * 1e6, usd_per_s * share / out_per * 1e6,
        usd_per_s * rnd / (in_per + out_per) * 1e6, (*st.compiled, piped),
        tuple(x for x in st.notes if "do not fit the KV pool" not in x), st.time_model, p.admission, st.speculative,
        st.acceptance, st.draft, gained, st.draft_s)
