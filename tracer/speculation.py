"""Speculative decoding in serving (issue 16, section 1): `tracer serving --speculative K --acceptance A`.
tracer.serving says how its steps join an iteration."""

import dataclasses
from dataclasses import dataclass

from base.inputs import ConfigError, is_int, is_number
from models.files import get_model
from tracer.api import price
from tracer.serving_steps import decode_model
from tracer.step import Workload


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding: a draft proposes `k` tokens a sequence, one at a time, and the model verifies them in
    one decode step of k + 1 positions (tracer.step.Workload.queries), keeping the accepted ones and one of its own.
    Each drafted token is accepted with chance `acceptance` given that those before it were, independently (the
    assumption of Leviathan et al. 2023, arXiv 2211.17192): a step yields (1 - a^(k+1)) / (1 - a) tokens."""

    k: int
    acceptance: float
    draft: str = "mtp"  # "mtp": a multi-token-prediction head (one period of the model's own layers, its embedding
    # and LM head; DeepSeek-V3's MTP module), or a model (a preset or file) run as a separate draft model

    @property
    def tokens_per_step(self) -> float:
        a = self.acceptance
        return self.k + 1.0 if a >= 1 else (1 - a ** (self.k + 1)) / (1 - a)

    def draft_config(self, cfg):
        """The draft's model: for "mtp", one period of the model's layers (MoE where the model's last layers are;
        the MTP module shares the model's embedding and LM head, which this holds and counts again)."""
        if self.draft != "mtp":
            return get_model(self.draft)
        return dataclasses.replace(cfg, n_layers=cfg.period, first_dense=0, name=f"{cfg.name} MTP")


def step_shape(spec: "Speculation | None") -> tuple[int, float]:
    """(positions a sequence runs in a decode step, output tokens it gains an iteration): (1, 1) without a draft."""
    return (spec.k + 1, spec.tokens_per_step) if spec else (1, 1.0)


def iteration_tokens(spec: "Speculation | None", isl: int, osl: int, decode_only: bool = False) -> float:
    """Tokens a running sequence puts in an iteration on average (what the token budget must hold): its decode
    positions and, unless its prompt is prefilled elsewhere, its share of prefill, ISL for every OSL it gains."""
    queries, gained = step_shape(spec)
    return queries + (0 if decode_only else gained * isl / osl)


def check_speculation(speculative, acceptance, draft) -> "Speculation | None":
    """The speculation asked for (None: none), or a one-line error."""
    if speculative in (None, 0):
        if acceptance is not None:
            raise ConfigError("--acceptance applies with --speculative K (tokens drafted a step); give both")
        return None
    if not is_int(speculative) or not 1 <= speculative <= 16:
        raise ConfigError(f"--speculative must be an integer 1..16 (tokens drafted a step), got {speculative!r}")
    if acceptance is None or not is_number(acceptance) or not 0 <= acceptance <= 1:
        raise ConfigError(f"--speculative needs --acceptance A, the chance in [0, 1] that a drafted token is "
                          f"accepted (e.g. 0.7; an assumption: engines report it for a model and dataset), got "
                          f"{acceptance!r}")
    if not isinstance(draft, str) or not draft:
        raise ConfigError(f"--draft must be 'mtp' or a model (a preset or a model file), got {draft!r}")
    if draft != "mtp":
        get_model(draft)  # an unknown name or a bad file: its one-line error now, before anything compiles
    return Speculation(int(speculative), float(acceptance), draft)


def draft_memory(spec: Speculation | None, first, system: str, strategy: str, n: int, isl: int, osl: int,
                  kw) -> tuple[float, float]:
    """A speculative draft's (weight bytes, cache bytes a sequence) per device, from its decode steps at batch n."""
    if spec is None:
        return 0.0, 0.0
    model_at, d = decode_model(spec.draft_config(first.cfg), system, strategy, (n,), isl, osl, kw)
    step = model_at.at(n, isl + osl // 2, d.compiler)
    return step.weight_bytes, step.kv_cache_bytes / (n // d.strategy.ways("batch", d.mesh))


def draft_seconds(spec: Speculation, first, system: str, strategy, isl: int, osl: int, kw: dict,
                  batches: tuple[int, ...], n: int) -> float:
    """Seconds of an iteration's K draft steps of n sequences at the mean context: each a decode step of the draft
    model (its kernels and collectives; the iteration's overhead is counted once, with the verification), derived
    between the draft's steps compiled at these batches."""
    model_at, d = decode_model(spec.draft_config(first.cfg), system, strategy, batches, isl, osl, kw)
    step = model_at.at(n, isl + osl // 2, d.compiler)
    t = price(dataclasses.replace(d, work=Workload(n, isl, isl + osl // 2)), {"decode": step},
              find_max_batch=False).phases["decode"].time
    return spec.k * (t.step_s - t.overhead_s)


