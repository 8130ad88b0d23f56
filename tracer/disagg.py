"""Disaggregated serving (issue 16, section 1): prompts prefilled on some instances of a system, their KV caches
sent to others that only decode (DistServe, Mooncake, NVIDIA Dynamo, SGLang's PD disaggregation;
shared/reference/serving.md). `tracer serving --disagg P:D` (or `auto`).

An instance is the system given (h200x8: one 8-GPU node) under the strategy given; P prefill instances and D decode
instances serve one stream of requests of ISL prompt and OSL output tokens, in a steady state:
- a prefill instance runs iterations of prompts only: as many whole prompts as the token budget holds
  (max_num_tokens // ISL per replica), or a chunk of one; each iteration priced as tracer.serving prices a prefill
  share alone (its weights read once, the rest in proportion: serving.prefill_alone, from the compiled prefill);
- each prompt's KV cache (all its layers, ISL tokens) moves to a decode instance: over NVLink where the P + D
  instances fit in one scale-up domain of the chip (gb200x4 instances of an NVL72, h200x1 of an HGX node), else over
  the scale-out network, each chip sending its shard at its NIC's rate (rates file's scale_out_fraction). Engines
  stream it layer by layer under the prefill, so it bounds the prefill instances' rate (a NIC sends so many bytes a
  second) and adds to TTFT, and takes no chip-time;
- a decode instance runs tracer.serving's steady state with no prefill share (decode_only): its concurrency the
  most its KV pool and the token budget allow, or the most that meets --tpot-ms;
- the request rate is the least of P prefill instances' and D decode instances'; the side with capacity to spare
  idles, and its idle chip-time is paid by its own tokens: input tokens pay the prefill instances' chip-hours,
  output tokens the decode instances'.
TTFT = the prefill iterations a prompt takes + its KV transfer (no queueing); TPOT is the decode instance's.
`auto` tries every P and D from 1 to 8 and keeps the split with the most output tokens/s per chip (the fewest chips
among equals).
"""

import dataclasses
import math
from dataclasses import dataclass

from base.inputs import ConfigError
from meshes.strategies import get_strategy
from meshes.systems import get_system, whole_domain
from tracer.serving import serving
from tracer.serving_steps import (
    DEFAULT_KV_FRACTION,
    DEFAULT_MAX_NUM_TOKENS,
    Serving,
    chunk_reach,
    prefill_alone,
    prefill_phase,
)
from tracer.timing import scale_out_link

MOST = 8  # instances of each kind `auto` tries


@dataclass(frozen=True)
class Disaggregated:
    """A disaggregated system's steady state: system-wide unless named per chip or per instance."""

    model: str
    system: str  # one instance's
    strategy: str
    isl: int
    osl: int
    prefill_instances: int
    decode_instances: int
    split_note: str  # as given, or how `auto` chose it
    chips: int
    prompts_per_iteration: float  # a prefill instance's, per replica
    prefill_iteration_s: float
    prefill_requests_per_s: float  # one prefill instance's capacity, its KV transfer included
    kv_bytes_per_request: float
    kv_link: str  # "scale-up" or "scale-out"
    kv_transfer_s: float
    decode: Serving  # one decode instance
    requests_per_s: float
    prefill_utilization: float
    decode_utilization: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    ttft_s: float
    tpot_s: float
    e2e_s: float
    usd_per_hour: float
    usd_per_mtok_input: float
    usd_per_mtok_output: float
    usd_per_mtok_blended: float
    aggregated_output_tokens_per_s_per_chip: float  # an instance serving the workload whole, at the same targets
    notes: tuple[str, ...]
    time_model: str

    @property
    def output_tokens_per_s_per_chip(self) -> float:
        return self.output_tokens_per_s / self.chips

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "decode"}
        return {**out, "decode": self.decode.to_dict(), "notes": list(self.notes),
                "output_tokens_per_s_per_chip": self.output_tokens_per_s_per_chip}


def parse_split(text: str) -> tuple[int, int] | None:
    """--disagg P:D (instances of each kind) or auto (None)."""
    if text == "auto":
        return None
    p, colon, d = str(text).partition(":")
    if not colon or not (p.isascii() and p.isdigit() and d.isascii() and d.isdigit()) or int(p) < 1 or int(d) < 1:
        raise ConfigError(f"--disagg {text!r}: give P:D, the prefill and decode instances (e.g. 1:3), or auto")
    return int(p), int(d)


def _link(system, rates, p: int, d: int) -> tuple[str, float]:
    """(the link P + D instances of `system` send KV caches over, the bytes a second an instance sends on it): NVLink
    where they all fit one scale-up domain of the chip, else each chip's NIC."""
    if "*" not in system.name and (p + d) * system.n_chips <= whole_domain(system.chip):
        return "scale-up", system.n_chips * system.chip.scale_up_bw
    return "scale-out", system.n_chips * scale_out_link(system.chip, rates)[0]


def disaggregated(model: str = "llama3-8b", system: str = "h200x8", strategy: str = "tp", isl: int = 1000,
                  osl: int = 1000, split: tuple[int, int] | None = None, kv_fraction: float = DEFAULT_KV_FRACTION,
                  max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, tpot_ms: float | None = None,
                  ttft_ms: float | None = None, admission: str = "paged", speculative: int = 0,
                  acceptance: float | None = None, draft: str = "mtp", batch: int | str = "max",
                  **kw) -> Disaggregated:
    """P:D instances of `system` (`split`; None: the best of 1..8 each), serving ISL/OSL requests (module
    docstring). kw as tracer.serving."""
    dec = serving(model, system, strategy, isl, osl, batch, kv_fraction, max_num_tokens, tpot_ms, None, admission,
                  speculative, acceptance, draft, decode_only=True, **kw)
    whole = serving(model, system, strategy, isl, osl, batch, kv_fraction, max_num_tokens, tpot_ms, ttft_ms,
                    admission, speculative, acceptance, draft, **kw)  # the same targets, served whole
    replicas = get_strategy(strategy).replicas(get_system(system))
    pre, s_pre = prefill_phase(model, system, strategy, isl, replicas, kw)
    sys_ = s_pre.system
    f = max_num_tokens // isl if isl <= max_num_tokens else max_num_tokens / isl  # prompts per replica an iteration
    t_pre = prefill_alone(pre, f, sys_, s_pre.rates, chunk_reach(s_pre, f))
    per_instance = replicas * f / t_pre  # prompts/s
    kv = s_pre.cfg.kv_bytes(isl)
    decode_rate = dec.requests_per_s  # one decode instance's

    def per_chip(p: int, d: int) -> float:
        rate = min(p * min(per_instance, _link(sys_, s_pre.rates, p, d)[1] / kv), d * decode_rate)
        return rate * osl / ((p + d) * sys_.n_chips)

    if split is None:
        p, d = max(((p, d) for p in range(1, MOST + 1) for d in range(1, MOST + 1)),
                   key=lambda pd: (round(per_chip(*pd), 9), -(pd[0] + pd[1])))
        note = f"the most output tokens/s per chip of P, D in 1..{MOST}"
    else:
        (p, d), note = split, "as given"
    name, bw = _link(sys_, s_pre.rates, p, d)
    prefill_rate = min(per_instance, bw / kv)
    rate = min(p * prefill_rate, d * decode_rate)
    chips = (p + d) * sys_.n_chips
    usd_chip_s = sys_.usd_per_chip_hour / 3600
    transfer = kv / bw
    ttft = math.ceil(isl / max_num_tokens) * t_pre + transfer
    notes = list(dec.notes)
    if bw / kv < per_instance:
        notes.append(f"a prefill instance sends KV caches slower than it prefills ({bw / kv:.1f} against "
                     f"{per_instance:.1f} prompts/s): the {name} link bounds it")
    if ttft_ms is not None and ttft * 1e3 > ttft_ms:
        notes.append(f"TTFT {ttft * 1e3:.0f} ms misses --ttft-ms {ttft_ms:g} (a prefill iteration of "
                     f"{f:.3g} prompts per replica; lower --max-num-tokens to shorten it)")
    in_s, out_s = rate * isl, rate * osl
    return Disaggregated(
        dec.model, system, strategy, isl, osl, p, d, note, chips, f, t_pre, prefill_rate, kv, name, transfer, dec,
        rate, rate / (p * prefill_rate), rate / (d * decode_rate), out_s, in_s, ttft, dec.tpot_s,
        ttft + (osl - 1) * dec.tpot_s, chips * sys_.usd_per_chip_hour,
        p * sys_.n_chips * usd_chip_s / in_s * 1e6, d * sys_.n_chips * usd_chip_s / out_s * 1e6,
        chips * usd_chip_s / (in_s + out_s) * 1e6, whole.output_tokens_per_s_per_chip, tuple(notes), dec.time_model)
