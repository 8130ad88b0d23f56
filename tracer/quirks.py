"""Where the three compilers differ, in one place: each one's quirks as one frozen value (xla-facts.md).

The reader (tracer.read) takes what it needs of them as plain arguments (f32_as, on_chip), the memory model
(tracer.roofline.memory) where temporaries come from, and the trace's notes what they imply.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class CompilerQuirks:
    name: str
    upcasts_bf16: bool  # computes bf16 in f32 (weights, activations, all-reduces): its f32 stands for bf16
    on_chip: frozenset[int]  # memory spaces that are not HBM (TPU VMEM 1, SMEM 2): buffers there move no HBM bytes
    temp_from_liveness: bool  # its temp figure is not the chip's (CPU: f32 upcasts): a liveness walk replaces it
    note: str  # what a trace compiled by it should say
    plugin: tuple[str, str] | None = None  # (module, package) of the extra that brings it (none: jax's own CPU)
    logs: bool = False  # writes its own estimates and start-up lines to stderr (kept out of the output)
    # Options that skip back-end work no figure read here depends on (the programs are never run). CPU: LLVM's
    # optimisation of the machine code; the HLO the reader reads is the same (tests/test_golden.py), ~30% less time.
    compile_options: tuple[tuple[str, object], ...] = ()

    def f32_as(self, activation_dtype: str) -> str | None:
        """The width the program's f32 buffers stand for (None: f32 is f32)."""
        return "bf16" if self.upcasts_bf16 and activation_dtype == "bfloat16" else None

    def notes(self, activation_dtype: str) -> tuple[str, ...]:
        if self.upcasts_bf16 and activation_dtype != "bfloat16":
            return ()
        return (self.note,)

    def temp_bytes(self, peak_live_bytes: float, output_bytes: float, xla_temp: float) -> float:
        """Temporaries per device: the compiler's own buffer assignment, or the liveness walk's peak less the
        step's results."""
        return max(peak_live_bytes - output_bytes, 0.0) if self.temp_from_liveness else xla_temp


QUIRKS = {
    "cpu": CompilerQuirks(
        "cpu", upcasts_bf16=True, on_chip=frozenset(), temp_from_liveness=True,
        compile_options=(("xla_backend_optimization_level", 0),),
        note="CPU compiler upcasts bf16 to f32: f32 buffers and collectives counted at bf16 width, and memory from "
             "a liveness walk of the program rather than XLA's inflated temp figure"),
    "gpu": CompilerQuirks(
        "gpu", upcasts_bf16=False, on_chip=frozenset(), temp_from_liveness=False,
        note="XLA GPU compiler, compile-only (no GPU here): with no device to autotune on, gemms take the compiler's "
             "default tilings, split-K partial sums in f32 included, as written in its program; memory from its own "
             "buffer assignment", plugin=("jax_cuda12_plugin", "jax-cuda12-plugin"), logs=True),
    "tpu": CompilerQuirks(
        "tpu", upcasts_bf16=False, on_chip=frozenset({1, 2}), temp_from_liveness=False,
        note="libtpu compiler, compile-only (no TPU here): matmuls appear as convolutions (batched ones over a "
             "dilated batch axis: one tap in each window counted); buffers it places in on-chip VMEM or SMEM are not "
             "HBM traffic; memory from its own buffer assignment", plugin=("libtpu", "libtpu"), logs=True),
}
