"""Step times from a compiled step's kernel records: each kernel at the rates the chip achieves (tracer.rates), or
every figure at the chip's peak (`--ideal`, the pure roofline). One place for both, so each output can say which.

Achieved (issue 16, section 2). Kernels run one after another, as a serving engine's stream runs them:
    kernel  = count x max(FLOPs / (peak x fraction), HBM bytes / (HBM bandwidth x fraction), floor)
      matmul: the fraction of its precision's dense peak at its shape (the smaller of M and N; batch dims folded
              into M, so a grouped expert GEMM counts its groups' rows together), bytes at the memory fraction;
      routed expert GEMM (with a [moe] table): max(FLOPs at peak, bytes at HBM bandwidth) over the fraction of that
              roofline the engine's fused MoE kernel reaches at the tokens each expert gets (M over the GEMMs
              its batch holds) for the kind of its weights (moe_row); without a [moe] row, as a dense matmul;
      attention: prefill at the attention prefill fraction of the dense peak; decode's bytes at the decode
              attention fraction of HBM bandwidth (paged kernels' gather);
      other (elementwise, norms, gathers): FLOPs at the large-GEMM fraction, bytes at the memory fraction, and the
              floor added, not a bound: count x (floor + max(...)), a launch's latency before the bytes stream
              (AIConfigurator's model of a memory-bound op);
    collective = count x (latency per call + wire bytes / (link bandwidth x bus fraction)), every one on the
              critical path (tensor-parallel all-reduces sit between matmuls; the engines measured here overlap
              none for these strategies) except a strategy's overlapped ones (below);
    step = the kernels + the collectives + the overhead (host work not hidden: a fixed part a step, and a part a
    sequence its scheduler runs, each data-parallel replica scheduling its own: Rates.overhead); under a strategy
    with two micro-batches in flight (Strategy.overlap: wide-ep's all-to-alls), those collectives count only for
    what of them outlasts the kernels (each micro-batch's all-to-alls under the other's compute).
Ideal: step = max(FLOPs at peak, HBM bytes at peak bandwidth) + collectives at link bandwidth plus a hop latency
(today's roofline; compute and memory overlap across the whole step).
"""

from dataclasses import dataclass

from meshes.systems import System
from models.scopes import SCOPES
from tracer.rates import Rates
from tracer.read import Collective, Kernel
from tracer.step import CompiledStep


@dataclass(frozen=True)
class StepTime:
    compute_s: float  # FLOPs at each precision's dense peak (achieved: at the fraction large GEMMs reach)
    memory_s: float  # HBM bytes at the datasheet bandwidth (achieved: at the fraction streaming kernels reach)
    # (achieved: these two say what bounds the step as a roofline at achieved rates; a small GEMM's shape penalty,
    # measured as one time with its weight reads, is in each kernel's time, not in them)
    comms_s: float  # collectives
    kernels_s: float | None = None  # achieved: the kernels one after another, each at its own bound; ideal: None
    overhead_s: float = 0.0  # achieved: the engine's host work per step
    model: str = "ideal"  # "ideal" or "achieved"
    hidden_s: float = 0.0  # collectives overlapped with compute (all of their time; comms_s holds what outlasts it)

    @property
    def step_s(self) -> float:
        if self.kernels_s is None:
            return max(self.compute_s, self.memory_s) + self.comms_s
        return self.kernels_s + self.comms_s + self.overhead_s

    @property
    def bound(self) -> str:
        terms = {"compute": self.compute_s, "memory": self.memory_s, "comms": self.comms_s}
        return max(terms, key=terms.get)


HOPS = {"all-reduce": lambda n: 2 * (n - 1), "all-gather": lambda n: n - 1, "reduce-scatter": lambda n: n - 1,
        "all-to-all": lambda n: 1, "collective-permute": lambda n: 1}  # latency steps: rings, or direct sends


def link(system: System, collective: Collective) -> str:
    """scale-up when every group stays inside one domain (NVLink), else scale-out (the per-GPU network NIC)."""
    inside = all(len({system.node_of(d) for d in group}) == 1 for group in collective.groups)
    return "scale-up" if inside else "scale-out"


def scale_out_link(chip, rates: Rates | None) -> tuple[float, float]:
    """(bytes a second one chip's NIC sends, seconds a message waits first): at the rates file's achieved fraction
    and latency, or (no rates) the datasheet rate and the ideal model's assumed latency."""
    if rates is None:
        return chip.scale_out_bw, chip.scale_out_latency
    return chip.scale_out_bw * rates.scale_out_fraction, rates.scale_out_latency_s


def collective_time(system: System, c: Collective, rates: Rates | None = None) -> float:
    """Seconds per step: wire bytes over the links the groups span, plus latency. Ideal: the link's bandwidth and a
    latency per step of the algorithm. Achieved: inside a domain, each call takes what a measured 8-GPU all-reduce
    takes that sends as many bytes a device (2 x 7/8 of its operand: a ring's); across domains, the NIC's rate at
    its achieved fraction and a latency per call.
    Rings across domains run at the NIC's bandwidth; an all-to-all across domains sends the share of its bytes
    bound for other domains over the NICs while the rest moves over NVLink."""
    chip = system.chip
    up_bw, out_bw = chip.scale_up_bw, chip.scale_out_bw
    inside = link(system, c) == "scale-up"
    if rates is None:
        hops = c.count * HOPS[c.op](c.group_size)
        up_latency, out_latency = hops * chip.scale_up_latency, hops * chip.scale_out_latency
    elif inside:  # each call as the measured 8-GPU all-reduce that sends as many bytes a device
        return c.count * rates.all_reduce_s(c.wire_bytes_per_device / c.count / (2 * 7 / 8)) if c.count else 0.0
    else:
        out_bw, latency = scale_out_link(chip, rates)
        out_latency = c.count * latency
    if inside:
        return up_latency + c.wire_bytes_per_device / up_bw
    if c.op == "all-to-all":
        group = c.groups[0]
        same = sum(1 for d in group if system.node_of(d) == system.node_of(group[0])) - 1  # peers in my domain
        local = c.wire_bytes_per_device * same / (c.group_size - 1)
        return out_latency + max(local / up_bw, (c.wire_bytes_per_device - local) / out_bw)
    return out_latency + c.wire_bytes_per_device / out_bw


def _compute_s(flops, system: System, rates: Rates, side: float = 1e12) -> float:
    """Seconds of (dtype, FLOPs) pairs at the fraction of each precision's peak a GEMM whose smaller output side is
    `side` reaches (the default: large GEMMs')."""
    return sum(f / (system.chip.flops_for(d) * rates.matmul_fraction(d, side)) for d, f in flops)


FOUR_BIT = ("f4e2m1fn", "s4", "u4")  # stored 4-bit weights (HLO spellings)


def moe_row(k: Kernel) -> str | None:
    """The [moe] row (tracer.rates.MOE_ROWS) a routed expert GEMM is priced by: its FLOPs' precision, or w4a16 for
    4-bit weights computed in bf16 (MXFP4 or int4 experts times bf16 activations); None for any other kernel."""
    if k.kind != "matmul" or not k.shape or k.scope != SCOPES.routed_experts:
        return None
    dtypes = {d for d, f in k.cost.flops_by_dtype if f}
    if dtypes == {"bfloat16"} and any(d in FOUR_BIT for d in k.dtypes):
        return "w4a16"
    return dtypes.pop() if len(dtypes) == 1 else None


def _moe_terms(flops, bytes_: float, tokens_per_expert: float, row: str | None, system: System,
               rates: Rates) -> tuple[float, float] | None:
    """(compute, memory) seconds of a routed expert GEMM at its [moe] fraction, or None without one."""
    fraction = rates.moe_fraction(row, tokens_per_expert) if row else None
    if fraction is None:
        return None
    chip = system.chip
    return sum(f / chip.flops_for(d) for d, f in flops) / fraction, bytes_ / chip.hbm_bw / fraction


def kernel_terms(k: Kernel, system: System, rates: Rates, phase: str) -> tuple[float, float]:
    """(compute seconds, memory seconds) of one execution of a kernel at the achieved rates (module docstring)."""
    chip = system.chip
    cost = k.cost
    row = moe_row(k)  # None unless a routed expert GEMM (which has a shape)
    moe = _moe_terms(cost.flops_by_dtype, cost.hbm_bytes, k.shape[0] / k.gemms, row, system, rates) if row else None
    if moe is not None:
        return moe
    if k.kind == "matmul" and k.shape:
        compute = _compute_s(cost.flops_by_dtype, system, rates, min(k.shape[0], k.shape[1]) or 1)
    elif k.kind == "attention" and phase == "prefill":
        compute = sum(f / (chip.flops_for(d) * rates.attention_prefill) for d, f in cost.flops_by_dtype)
    else:
        compute = _compute_s(cost.flops_by_dtype, system, rates)
    fraction = rates.attention_decode if k.kind == "attention" and phase == "decode" else rates.memory
    return compute, cost.hbm_bytes / (chip.hbm_bw * fraction)


MEASURED = ("matmul", "attention")  # kinds whose fractions come from measured kernel latencies, launch included


def kernel_time(k: Kernel, system: System, rates: Rates, phase: str, share: float = 1.0,
                floored: bool = True) -> float:
    """Seconds per step of a kernel at the achieved rates (`share` of its work; `floored`: with its launches):
    - a matmul or attention kernel: each execution at its bound, and at least the floor (its fraction is read off
      measured latencies that hold the launch already);
    - other work (elementwise, norms, copies, gathers): a launch latency (the floor) each execution plus its bound,
      as AIConfigurator prices a memory-bound op (bytes / (bandwidth x scaling) + a constant latency). A record
      tracer.derive summed from several kernels has as many launches as it stands for, and its time is then the
      sum of theirs (up to which of FLOPs and bytes bounds each)."""
    c, m = kernel_terms(k, system, rates, phase)
    launches = (k.launches or k.count) * rates.kernel_floor_s if floored else 0.0
    if k.kind in MEASURED:
        return max(k.count * c * share, k.count * m * share, launches)
    return launches + k.count * max(c, m) * share


def step_time(step: CompiledStep, system: System, rates: Rates | None = None, phase: str = "decode",
              overlap: tuple[str, ...] = (), sequences: float = 0.0) -> StepTime:
    """The step's seconds: at the achieved `rates`, or (None) the ideal roofline (module docstring); `sequences`:
    those one scheduler (a data-parallel replica) runs in it, for the host overhead. Collectives
    whose op is in `overlap` (a strategy's two micro-batches in flight, meshes.strategies.Strategy.overlap) hide
    under the step's compute: only what of them outlasts its kernels (ideal: max(compute, memory)) is counted."""
    hidden = sum(collective_time(system, c, rates) for c in step.cost.collectives if c.op in overlap)
    exposed = sum(collective_time(system, c, rates) for c in step.cost.collectives if c.op not in overlap)
    if rates is None:
        compute = sum(flops / system.chip.flops_for(dtype) for dtype, flops in step.cost.flops_by_dtype.items())
        memory = step.cost.hbm_bytes / system.chip.hbm_bw
        return StepTime(compute, memory, exposed + max(hidden - max(compute, memory), 0.0), hidden_s=hidden)
    kernels = 0.0
    for k in step.cost.kernels:
        if k.kind == "collective":  # its buffers move within the collective's own time
            continue
        kernels += kernel_time(k, system, rates, phase)
    memory = step.cost.hbm_bytes / (system.chip.hbm_bw * rates.memory)
    return StepTime(_compute_s(step.cost.flops_by_dtype.items(), system, rates), memory,
                    exposed + max(hidden - kernels, 0.0), kernels, rates.overhead(sequences), "achieved", hidden)


def _key(k: Kernel) -> tuple:
    return (k.scope, k.shape[1:] if k.shape else None, k.dtypes, k.count)


def iteration_kernels_s(decode: CompiledStep | None, prefill: CompiledStep | None, f: float, system: System,
                        rates: Rates) -> float:
    """The kernels' seconds of one serving iteration that runs `decode`'s step and the share f of `prefill`'s (a
    chunk of f of its prompts), at the achieved rates, as one forward pass over both kinds of tokens runs them:
    - each matmul of the decode step and its partner in the prefill step (the same weight: part of the model, N, K,
      precision and count) are one GEMM: the FLOPs of both, M = decode's rows + f of prefill's, the weights read
      once (the prefill's argument reads dropped), so the chunk's tokens raise a memory-bound GEMM's efficiency;
    - the prefill's other kernels (attention over the chunk, its elementwise work) add f of their time without
      launches of their own: engines run them in the same launches, over more tokens;
    - a step alone (decode None, or prefill None) is its own kernels, launches included; a prefill share alone
      reads its weights once.
    Collectives and the overhead are not in it (the caller adds them)."""
    chip = system.chip
    pending: dict[tuple, list[Kernel]] = {}
    for k in (prefill.cost.kernels if prefill else ()):
        if k.kind == "matmul" and k.shape:
            pending.setdefault(_key(k), []).append(k)
    total = 0.0
    paired: set[int] = set()

    def gemm(k, count, flops, bytes_, m, n, per_expert) -> float:  # per_expert: a routed expert's tokens
        terms = _moe_terms(flops.items(), bytes_, per_expert, moe_row(k), system, rates)
        if terms is None:
            terms = _compute_s(flops.items(), system, rates, min(m, n) or 1), bytes_ / (chip.hbm_bw * rates.memory)
        return count * max(*terms, rates.kernel_floor_s)

    for k in (decode.cost.kernels if decode else ()):
        partners = pending.get(_key(k)) if k.kind == "matmul" and k.shape else None
        if not partners:
            if k.kind != "collective":
                total += kernel_time(k, system, rates, "decode")
            continue
        p = partners.pop()
        paired.add(id(p))
        flops = dict(k.cost.flops_by_dtype)
        for d, v in p.cost.flops_by_dtype:
            flops[d] = flops.get(d, 0.0) + f * v
        moved = k.cost.hbm_bytes + f * (p.cost.hbm_bytes - p.cost.argument_bytes)
        total += gemm(k, k.count, flops, moved, k.shape[0] + f * p.shape[0], k.shape[1],
                      k.shape[0] / k.gemms + f * p.shape[0] / p.gemms)
    for k in (prefill.cost.kernels if prefill else ()):
        if k.kind == "collective" or id(k) in paired:
            continue
        if decode is None and k.kind == "matmul" and k.shape:  # alone: its weights once, f of the rest
            moved = k.cost.argument_bytes + f * (k.cost.hbm_bytes - k.cost.argument_bytes)
            total += gemm(k, k.count, {d: f * v for d, v in k.cost.flops_by_dtype}, moved, f * k.shape[0], k.shape[1],
                          f * k.shape[0] / k.gemms)
        else:
            total += kernel_time(k, system, rates, "prefill", share=f, floored=decode is None)
    return total
