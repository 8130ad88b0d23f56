"""The named scopes the model code wraps its parts in, and the part of a step each stands for.

The tracer knows none of these names: it is handed `SCOPES` and reads a compiled program's op_name metadata by it,
to say where a step's FLOPs and bytes come from.
"""

from dataclasses import dataclass

ATTENTION, ATTN_CORE, CACHE_UPDATE = "attention", "attn_core", "cache_update"
MLP, MOE, ROUTER, EXPERTS, COMBINE = "mlp", "moe", "router", "experts", "combine"
EXPERT_WEIGHTS = "expert_weights"  # a row's expert weights, gathered where the kernel reads them in place
CHOSEN_ROWS = "chosen_rows"  # the cached rows sparse attention chose, gathered where its kernel reads them in place
LM_HEAD = "lm_head"


@dataclass(frozen=True)
class Scopes:
    parts: tuple[tuple[str, str], ...]  # named scope -> the part of the step it belongs to, innermost first
    fused: str  # the scope that stands for one fused kernel (a flash attention kernel): its scores stay on chip
    read_in_place: tuple[str, ...]  # gathers under these scopes are read in place by their consumer (no copy made)
    routed_experts: str  # the part whose reads of the step's arguments are the routed experts' weights
    other: str = "embedding, other"  # the part of what lies under none of them

    def part(self, scope: str) -> str:
        return dict(self.parts)[scope]


SCOPES = Scopes(
    parts=((CACHE_UPDATE, "cache update"), (ROUTER, "router"), (EXPERT_WEIGHTS, "experts"), (EXPERTS, "experts"),
           (COMBINE, "moe dispatch"), (ATTN_CORE, "attention core"), (ATTENTION, "attention"), (MOE, "moe dispatch"),
           (MLP, "mlp"), (LM_HEAD, "lm head")),
    fused=ATTN_CORE, read_in_place=(EXPERT_WEIGHTS, CHOSEN_ROWS), routed_experts="experts")
CORE = SCOPES.part(ATTN_CORE)  # the fused attention kernel's part: its FLOPs and the keys and values it reads
