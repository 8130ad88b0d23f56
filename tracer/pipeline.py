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

from base.inputs import ConfigError
from meshes.strategies import get_strategy
from meshes.systems import get_system, part_of
from models.config import ModelConfig
from models.files import get_model
from tracer.api import setup
from tracer.serving_steps import Serving, decode_model, kv_pool
from tracer.speculation import check_speculation, draft_memory


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


def _most(cfg, stage_sys, stage, r: int, stages: int, isl: int, osl: int, kv_fraction: float,
          max_num_tokens: int, admission: str, spec, kw: dict) -> tuple[int, str]:
    """(the most sequences the stages hold: a stage's KV pool holds all of them, a micro-batch's tokens the budget;
    how it was bound)."""
    queries, gained = (spec.k + 1, spec.tokens_per_step) if spec else (1, 1.0)
    model_at, first = decode_model(cfg, stage_sys.name, stage, (r,), isl, osl, kw, queries)
    _, fits_n = kv_pool(model_at, first, r, r, isl, osl, kv_fraction, admission,
                        draft_memory(spec, first, stage_sys.name, stage, r, isl, osl, kw))
    budget_n = int(max_num_tokens // (queries + gained * isl / osl))
    n = min(fits_n, stages * budget_n) * r
    if n < r:
        raise ConfigError(f"not one sequence of {isl} + {osl} tokens fits a stage's KV pool beside its weights; "
                          "use more stages (nodes) or lower --isl/--osl")
    how = "the stages' KV pool" if fits_n <= stages * budget_n else "the token budget of each micro-batch"
    return n, f"the most {how} allows: {fits_n * r} by the KV pool, {stages * budget_n * r} by the budget"


def _send(system, rates, per_stage: int, sent: float) -> tuple[float, str]:
    """(seconds to send `sent` bytes from one stage to the next, each of its chips its share; the link's name):
    NVLink where every stage sits in one domain, else the scale-out NICs."""
    chip = system.chip
    if system.domain_size >= system.n_chips:
        return sent / (per_stage * chip.scale_up_bw) + chip.scale_up_latency, "NVLink"
    bw = chip.scale_out_bw * (rates.scale_out_fraction if rates else 1)
    latency = rates.scale_out_latency_s if rates else chip.scale_out_latency
    return sent / (per_stage * bw) + latency, "the scale-out network"


def pipelined(serving, model, system: str, strategy: str, isl: int, osl: int, batch, kv_fraction: float,
              max_num_tokens: int, admission: str, speculative: int, acceptance, draft: str, kw: dict):
    """tracer.serving's steady state under a pipeline strategy (module docstring); `serving` prices a stage."""
    sys_, strat = get_system(system, kw.get("usd_per_chip_hour")), get_strategy(strategy)
    stages = strat.mesh_shape(sys_)[strat.pipeline]
    per_stage = sys_.n_chips // stages
    if sys_.domain_size % per_stage and per_stage % sys_.domain_size:
        raise ConfigError(f"strategy {strat.name} on {system}: stages of {per_stage} chips do not tile its "
                          f"{sys_.domain_size}-chip domains")
    stage_sys, stage = part_of(sys_, per_stage), strat.stage
    cfg = model if isinstance(model, ModelConfig) else get_model(model)
    name, cfg = cfg.name, last_stage(cfg.with_dtypes(kw.get("weights"), kw.get("kv_cache"), kw.get("dtype")), stages)
    spec = check_speculation(speculative, acceptance, draft)
    queries, gained = (spec.k + 1, spec.tokens_per_step) if spec else (1, 1.0)
    r = stage.ways("batch", stage.mesh_shape(stage_sys))
    n, note = (_most(cfg, stage_sys, stage, r, stages, isl, osl, kv_fraction, max_num_tokens, admission, spec, kw)
               if batch == "max" else (batch, "as given"))
    micro = max(min(stages, n // r), 1)  # micro-batches in flight
    m = math.ceil(n / r / micro) * r  # sequences in each
    st = serving(cfg, stage_sys.name, stage, isl, osl, m, kv_fraction, max_num_tokens, None, None, admission,
                 speculative, acceptance, draft, **kw)
    rates = setup(cfg, stage_sys.name, stage, batch=r, prompt=isl, context=isl, **kw).rates
    overhead = rates.overhead_s if rates else 0.0
    sent = m * queries * cfg.hidden * cfg.bits(cfg.dtype) / 8  # a micro-batch's activations, at each boundary
    send, link = _send(sys_, rates, per_stage, sent)

    def round_of(stage_s: float, draft_s: float = 0.0) -> float:
        """S stage iterations' kernels and collectives, the sends between them, one overhead; a speculative draft
        once (on the last stage, where the model's last hidden states are)."""
        return stages * (stage_s - overhead - draft_s) + draft_s + (stages - 1) * send + overhead

    rnd = round_of(st.iteration_s, st.draft_s)
    share = rnd * st.output_share_s / st.iteration_s
    out_per, in_per = n * gained, n * gained * isl / osl
    usd_per_s = sys_.usd_per_chip_hour * sys_.n_chips / 3600
    ttft = math.ceil(isl / max(max_num_tokens - m * queries // r, 1)) * rnd
    piped = (f"pipeline: {stages} stages of {per_stage} chip{'s' if per_stage > 1 else ''} ({stage_sys.name}, "
             f"{cfg.n_layers} layers the slowest, the last, with the LM head: every stage priced as it, an upper "
             f"bound), {micro} micro-batch{'es' if micro > 1 else ''} of {m} in flight"
             f"{f' ({stages - micro} stages idle each round: the bubble)' if micro < stages else ''}; a round is "
             f"{stages} stage iterations of {(st.iteration_s - overhead - st.draft_s) * 1e3:.2f} ms + {stages - 1} "
             f"send{'s' if stages > 2 else ''} of {sent / 1e6:.2f} MB over {link} ({send * 1e6:.0f} us each) + "
             "the overhead")
    return Serving(
        name, system, strat.name, isl, osl, n, note, kv_fraction, max_num_tokens, st.kv_pool_bytes_per_device,
        st.kv_bytes_per_sequence_per_device, round_of(st.decode_s, st.draft_s),
        round_of(st.prefill_s) if st.prefill_s else 0.0, rnd, share, in_per, rnd / gained, ttft,
        ttft + (osl - 1) * rnd / gained, out_per / rnd, in_per / rnd, n * gained / osl / rnd, sys_.n_chips,
        usd_per_s * 3600, usd_per_s * (rnd - share) / in_per * 1e6, usd_per_s * share / out_per * 1e6,
        usd_per_s * rnd / (in_per + out_per) * 1e6, (*st.compiled, piped),
        tuple(x for x in st.notes if "do not fit the KV pool" not in x), st.time_model, admission, st.speculative,
        st.acceptance, st.draft, gained, st.draft_s)
