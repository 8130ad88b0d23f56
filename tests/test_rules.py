"""The per-opcode rules (tracer.read.rules.RULES) and the byte rules they meet (tracer.read.buffers), one tiny
hand-written HLO module per rule, with the expected FLOPs, bytes and kernel kind worked out by hand next to each
assert. An `xfail(strict=True)` marks a figure the code gets wrong by its own docstrings (the reason says why)."""

import pytest

from models.scopes import SCOPES
from tracer.read import parse_module, read_program
from tracer.read.rules import COLLECTIVES, COPIES, ELEMENTWISE, INTEGER, RULES, STARTED, STRUCTURE

SUM = """%sum (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}
"""
SUM16 = """%sum16 (a: bf16[], b: bf16[]) -> bf16[] {
  %a = bf16[] parameter(0)
  %b = bf16[] parameter(1)
  ROOT %s = bf16[] add(%a, %b)
}
"""
COVERED: set[str] = set()  # the opcodes the tests below exercise (checked against RULES at the end)


def hlo(entry: str, computations: str = "", partitions: int = 1) -> str:
    """A module: `computations` first, then the entry computation with `entry`'s instructions."""
    return f"HloModule m, num_partitions={partitions}\n\n{computations}\nENTRY %main () -> f32[] {{\n{entry}\n}}\n"


def read(text: str, **kw):
    return read_program(parse_module(text), f32_as=kw.pop("f32_as", None), scopes=SCOPES, **kw)


def kernel(cost, name: str):
    (k,) = [k for k in cost.kernels if k.name == name]
    return k


def names(cost) -> set[str]:
    return {k.name for k in cost.kernels}


def moved(cost) -> tuple[float, float]:
    """(bytes read, bytes written) over all kernels, all executions."""
    return (sum(k.total.bytes_read for k in cost.kernels), sum(k.total.bytes_written for k in cost.kernels))


# --- dot ---------------------------------------------------------------------------------------------------------

DOT = """  %x = bf16[64,4096]{1,0} parameter(0)
  %w = bf16[4096,1024]{1,0} parameter(1)
  ROOT %d = bf16[64,1024]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}"""
COVERED.add("dot")


def test_dot():
    cost = read(hlo(DOT))
    d = kernel(cost, "d")
    assert (d.kind, d.shape, d.dtypes, d.count) == ("matmul", (64, 1024, 4096), ("bf16", "bf16"), 1)
    assert cost.flops_by_dtype == {"bfloat16": 536870912}  # 2 x M x N x K = 2 x 64 x 1024 x 4096
    assert d.cost.bytes_read == 8912896  # x + w = 64 x 4096 x 2 + 4096 x 1024 x 2 = 524288 + 8388608
    assert d.cost.argument_bytes == 8912896  # both are the step's arguments
    assert d.cost.bytes_written == 131072  # 64 x 1024 x 2
    assert cost.hbm_bytes == 9043968  # 8912896 + 131072: the parameters and the root are views
    assert cost.notes == ()


def test_batched_dot_folds_the_batch_into_m():
    text = hlo("""  %x = bf16[4,64,128]{2,1,0} parameter(0)
  %w = bf16[4,128,32]{2,1,0} parameter(1)
  ROOT %d = bf16[4,64,32]{2,1,0} dot(%x, %w), lhs_batch_dims={0}, lhs_contracting_dims={2}, \
rhs_batch_dims={0}, rhs_contracting_dims={1}""")
    cost = read(text)
    d = kernel(cost, "d")
    assert cost.flops_by_dtype == {"bfloat16": 2097152}  # 2 x (4 x 64) x 32 x 128
    assert d.shape == (256, 32, 128)  # M = 4 x 64 x 128 / K(128) = 256; N = 4 x 64 x 32 / 256 = 32; K = 128
    assert (d.cost.bytes_read, d.cost.bytes_written) == (98304, 16384)  # 4x64x128x2 + 4x128x32x2; 4x64x32x2
    assert d.gemms == 4  # four GEMMs of 64 rows


def test_weights_first_swap_to_n():
    """The CPU compiler puts an expert's weights first: dot(w [4, 32, 128], x [4, 64, 128]) -> [4, 32, 64]. M is
    the tokens' side again: 4 groups x 64 rows = 256; N = 32 (the weights'), K = 128; the FLOPs stay 2 M N K."""
    text = hlo("""  %w = bf16[4,32,128]{2,1,0} parameter(0)
  %p = bf16[4,64,128]{2,1,0} parameter(1)
  %x = bf16[4,64,128]{2,1,0} multiply(%p, %p)
  ROOT %d = bf16[4,32,64]{2,1,0} dot(%w, %x), lhs_batch_dims={0}, lhs_contracting_dims={2}, \
rhs_batch_dims={0}, rhs_contracting_dims={2}""")
    cost = read(text)
    d = kernel(cost, "d")
    assert (d.shape, d.gemms) == ((256, 32, 128), 4)  # unswapped it would read (128, 64, 128)
    assert d.cost.flops_by_dtype == (("bfloat16", 2.0 * 256 * 32 * 128),)


def test_dot_contracting_over_two_dims():
    text = hlo("""  %x = bf16[8,4,16]{2,1,0} parameter(0)
  %w = bf16[4,16,32]{2,1,0} parameter(1)
  ROOT %d = bf16[8,32]{1,0} dot(%x, %w), lhs_contracting_dims={1,2}, rhs_contracting_dims={0,1}""")
    d = kernel(read(text), "d")
    assert d.shape == (8, 32, 64)  # K = 4 x 16; M = 8 x 4 x 16 / 64; N = 8 x 32 / 8
    assert d.cost.flops_by_dtype == (("bfloat16", 32768.0),)  # 2 x 8 x 32 x 64


@pytest.mark.parametrize("lhs, rhs, out, flops", [
    ("bf16", "bf16", "bf16", "bfloat16"),
    ("f16", "f16", "f16", "bfloat16"),  # 16-bit floats are one class
    ("f32", "f32", "f32", "float32"),
    ("f8e4m3fn", "f8e4m3fn", "bf16", "float8"),  # W8A8 runs in fp8
    ("f8e5m2", "f8e4m3fn", "bf16", "float8"),
    ("s8", "s8", "s32", "int8"),
    ("f8e4m3fn", "bf16", "bf16", "bfloat16"),  # the wider operand decides: fp8 weights x bf16 activations
    ("bf16", "f4e2m1fn", "bf16", "bfloat16"),  # MXFP4 weights x bf16 activations
])
def test_dot_runs_in_the_wider_operands_precision(lhs, rhs, out, flops):
    text = hlo(f"""  %x = {lhs}[8,16]{{1,0}} parameter(0)
  %w = {rhs}[16,32]{{1,0}} parameter(1)
  ROOT %d = {out}[8,32]{{1,0}} dot(%x, %w), lhs_contracting_dims={{1}}, rhs_contracting_dims={{0}}""")
    cost = read(text)
    assert cost.flops_by_dtype == {flops: 8192}  # 2 x 8 x 32 x 16
    assert kernel(cost, "d").dtypes == (lhs, rhs)


def test_dot_of_the_cpu_compilers_upcast_fp8_weights():
    """f32_as="bf16": the CPU compiler's f32 stands for bf16, its converts are no traffic, and the dot reads the fp8
    buffers behind them at 1 byte an element and runs in fp8."""
    text = hlo("""  %x8 = f8e4m3fn[8,16]{1,0} parameter(0)
  %w8 = f8e4m3fn[16,32]{1,0} parameter(1)
  %x = f32[8,16]{1,0} convert(%x8)
  %w = f32[16,32]{1,0} convert(%w8)
  ROOT %d = f32[8,32]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}""")
    cost = read(text, f32_as="bf16")
    assert names(cost) == {"d"}  # the converts are views
    assert cost.flops_by_dtype == {"float8": 8192}  # 2 x 8 x 32 x 16
    assert kernel(cost, "d").dtypes == ("f8e4m3fn", "f8e4m3fn")
    assert moved(cost) == (640, 512)  # read 8 x 16 x 1 + 16 x 32 x 1 = 128 + 512; written 8 x 32 x 2 (f32 as bf16)
    # f32 operands as they are (no fp8 behind them): bf16
    cost = read(hlo(DOT.replace("bf16", "f32")), f32_as="bf16")
    assert cost.flops_by_dtype == {"bfloat16": 536870912}  # 2 x 64 x 1024 x 4096
    assert cost.hbm_bytes == 9043968  # at 2 bytes an element, as the bf16 dot above


# --- custom-call -------------------------------------------------------------------------------------------------

GEMM = """  %x = bf16[64,4096]{1,0} parameter(0)
  %w = bf16[4096,1024]{1,0} parameter(1)
  %gemm = (bf16[64,1024]{1,0}, s8[4194304]{0}) custom-call(%x, %w), custom_call_target="__cublas$gemm", \
backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"]}}}
  ROOT %r = bf16[64,1024]{1,0} get-tuple-element(%gemm), index=0"""
COVERED.add("custom-call")


def test_custom_call_gemm():
    cost = read(hlo(GEMM))
    g = kernel(cost, "gemm")
    assert (g.kind, g.shape, g.dtypes) == ("matmul", (64, 1024, 4096), ("bf16", "bf16"))
    assert cost.flops_by_dtype == {"bfloat16": 536870912}  # 2 x M x N x K = 2 x 64 x 1024 x 4096
    assert g.cost.bytes_read == 8912896  # 64 x 4096 x 2 + 4096 x 1024 x 2
    assert g.cost.bytes_written == 131072  # the result 64 x 1024 x 2; not cuBLAS's s8 workspace (scratch)
    assert cost.notes == ()


def test_custom_call_gemm_contracting_dim_from_backend_config():
    """K from lhs_contracting_dimensions (here dim 0 of a transposed lhs), not the last dim."""
    text = hlo("""  %x = bf16[4096,64]{1,0} parameter(0)
  %w = bf16[4096,1024]{1,0} parameter(1)
  %gemm = (bf16[64,1024]{1,0}, s8[0]{0}) custom-call(%x, %w), custom_call_target="__cublas$lt$matmul", \
backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["0"]}}}
  ROOT %r = bf16[64,1024]{1,0} get-tuple-element(%gemm), index=0""")
    g = kernel(read(text), "gemm")
    assert g.shape == (64, 1024, 4096)  # K = dims[0] = 4096; M = 4096 x 64 / 4096; N = 64 x 1024 / 64
    assert g.cost.flops_by_dtype == (("bfloat16", 536870912.0),)  # 2 x 64 x 1024 x 4096


def test_custom_call_of_an_unknown_target_is_charged_its_bytes_and_noted():
    text = hlo("""  %x = bf16[64,128]{1,0} parameter(0)
  ROOT %c = bf16[64,128]{1,0} custom-call(%x), custom_call_target="my_fused_kernel\"""")
    cost = read(text)
    c = kernel(cost, "c")
    assert (c.kind, c.cost.flops_by_dtype) == ("other", ())
    assert (c.cost.bytes_read, c.cost.bytes_written) == (16384, 16384)  # 64 x 128 x 2 each way
    assert cost.notes == ("custom-call my_fused_kernel has no counting rule: charged its reads and writes, no FLOPs",)


@pytest.mark.parametrize("opcode, call", [
    ("custom-call", ', custom_call_target="lapack_strsm_ffi"'),  # the CPU compiler's
    ("custom-call", ', custom_call_target="__cublas$triangularSolve"'),  # the GPU compiler's
    ("triangular-solve", ", left_side=true, lower=true, unit_diagonal=true")])
def test_triangular_solve(opcode, call):
    """Linear attention's chunked delta rule solves a unit lower-triangular [64, 64] system per chunk and head for 256
    right-hand sides: forward substitution, n^2 r = 64 x 64 x 256 FLOPs a system, 4 x 8 systems."""
    text = hlo(f"""  %a = f32[4,8,64,64]{{3,2,1,0}} parameter(0)
  %b = f32[4,8,64,256]{{3,2,1,0}} parameter(1)
  ROOT %t = f32[4,8,64,256]{{3,2,1,0}} {opcode}(%a, %b){call}""")
    cost = read(text)
    t = kernel(cost, "t")
    assert t.kind == "other" and cost.flops_by_dtype == {"bfloat16": 4 * 8 * 64 * 64 * 256}
    assert t.cost.bytes_read == 4 * 8 * 64 * (64 + 256) * 4 and cost.notes == ()


COVERED.add("triangular-solve")


@pytest.mark.parametrize("target", ["GatherScatterIndicesBitpacked", "MoveToHost", "MoveToDevice"])
def test_custom_call_of_a_known_no_work_target(target):
    """Moves compute nothing and are not noted; like any kernel they are charged what they read and write."""
    text = hlo(f"""  %i = s32[1024]{{0}} parameter(0)
  ROOT %c = s32[1024]{{0}} custom-call(%i), custom_call_target="{target}\"""")
    cost = read(text)
    c = kernel(cost, "c")
    assert (c.kind, cost.flops_by_dtype, cost.notes) == ("other", {}, ())
    assert (c.cost.bytes_read, c.cost.bytes_written) == (4096, 4096)  # 1024 x 4 each way


@pytest.mark.parametrize("target", ["AssumeGatherIndicesInBound", "Sharding", "SPMDFullToShardShape",
                                    "SPMDShardToFullShape"])
def test_custom_call_that_marks_its_operand_is_a_view(target):
    """The compiler's annotations return their operand as it is: no kernel, no bytes."""
    text = hlo(f"""  %i = s32[1024]{{0}} parameter(0)
  ROOT %c = s32[1024]{{0}} custom-call(%i), custom_call_target="{target}\"""")
    cost = read(text)
    assert (cost.kernels, cost.notes) == ((), ())


# --- convolution -------------------------------------------------------------------------------------------------

COVERED.add("convolution")


def test_convolution_as_a_matmul():
    """TPU writes matmuls as convolutions: bf_io->bf is [M, K] x [K, N]."""
    text = hlo("""  %x = bf16[64,256]{1,0} parameter(0)
  %w = bf16[256,128]{1,0} parameter(1)
  ROOT %c = bf16[64,128]{1,0} convolution(%x, %w), dim_labels=bf_io->bf""")
    cost = read(text)
    c = kernel(cost, "c")
    assert (c.kind, c.shape) == ("matmul", (64, 128, 256))  # K = rhs 256 x 128 / o 128 = 256; M = 64 x 256 / 256
    assert cost.flops_by_dtype == {"bfloat16": 4194304}  # 2 x 64 x 128 x 256
    assert (c.cost.bytes_read, c.cost.bytes_written) == (98304, 16384)  # 64x256x2 + 256x128x2; 64x128x2


CONV = """  %x = bf16[1,{n},16]{{2,1,0}} parameter(0)
  %w = bf16[{w},16,32]{{2,1,0}} parameter(1)
  ROOT %c = bf16[1,{out},32]{{2,1,0}} convolution(%x, %w), window={{{window}}}, dim_labels=b0f_0io->b0f"""


@pytest.mark.parametrize("n, w, out, window, flops", [
    # K = w x 16 (the window times the input features); share 1: every window position lands on an input value
    (8, 3, 6, "size=3", 18432),  # 2 x (6 x 32) x 48 x 1
    # pad 1 each side: of 8 x 3 window positions, 2 fall on padding (o=0, j=0; o=7, j=2): share 22 / 24
    (8, 3, 8, "size=3 pad=1_1", 22528),  # 2 x (8 x 32) x 48 x 22 / 24
    # lhs dilated by 2 (4 values at 0, 2, 4, 6): 6 outputs of window 2 each meet one value: share 6 / 12
    (4, 2, 6, "size=2 lhs_dilate=2", 6144),  # 2 x (6 x 32) x 32 x 1 / 2
    # stride 2 over pad 1_1: windows start at -1, 1, 3, 5; of their 4 x 3 positions only -1 is padding: 11 / 12
    (8, 3, 4, "size=3 stride=2 pad=1_1", 11264),  # 2 x (4 x 32) x 48 x 11 / 12
])
def test_convolution_counts_only_the_window_that_meets_input(n, w, out, window, flops):
    c = kernel(read(hlo(CONV.format(n=n, w=w, out=out, window=window))), "c")
    assert (c.kind, c.cost.flops_by_dtype) == ("matmul", (("bfloat16", float(flops)),))


def test_padded_convolution_shape_is_output_positions_by_features():
    c = kernel(read(hlo(CONV.format(n=8, w=3, out=8, window="size=3 pad=1_1"))), "c")
    assert c.shape == (8, 32, 48)  # M = 1 x 8 output positions, N = 32 output features, K = 3 x 16


# --- elementwise -------------------------------------------------------------------------------------------------

F = "f32[256,128]{1,0}"
ARITY = {"select": ("pred", "f32", "f32"), "clamp": ("f32", "f32", "f32"), "compare": ("f32", "f32")}
UNARY = {"negate", "abs", "exponential", "log", "rsqrt", "sqrt", "tanh", "logistic", "exponential-minus-one",
         "log-plus-one", "sine", "cosine"}
COVERED |= ELEMENTWISE


def elementwise(op: str, dtype: str = "f32") -> str:
    kinds = ARITY.get(op, ("f32",) if op in UNARY else ("f32", "f32"))
    kinds = tuple(dtype if k == "f32" else k for k in kinds)
    params = "\n".join(f"  %p{k} = {t}[256,128]{{1,0}} parameter({k})" for k, t in enumerate(kinds))
    out = "pred" if op == "compare" else dtype
    extra = ", direction=LT" if op == "compare" else ""
    args = ", ".join(f"%p{k}" for k in range(len(kinds)))
    return hlo(f"{params}\n  ROOT %e = {out}[256,128]{{1,0}} {op}({args}){extra}")


@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
def test_elementwise(op):
    text = elementwise(op)
    cost = read(text)
    e = kernel(cost, "e")
    n_operands = text.count("parameter(")
    assert (e.kind, e.shape) == ("elementwise", None)
    assert cost.flops_by_dtype == {"bfloat16": 32768}  # one per output element, 256 x 128, in the model's bf16
    operand_bytes = {"select": 32768 + 2 * 131072}.get(op, n_operands * 131072)  # pred 1 byte, f32 4 a value
    assert e.cost.bytes_read == operand_bytes  # each operand 256 x 128 x 4 (the select's pred 256 x 128 x 1)
    assert e.cost.bytes_written == (32768 if op == "compare" else 131072)  # 256 x 128 x 1 (pred) or x 4


def test_elementwise_precision_is_the_models_and_f32_as_halves_the_bytes():
    cost = read(elementwise("add"), vector_dtype="float32")
    assert cost.flops_by_dtype == {"float32": 32768}  # 256 x 128, in the activation dtype handed in
    cost = read(elementwise("add"), f32_as="bf16")
    assert cost.flops_by_dtype == {"bfloat16": 32768}
    assert moved(cost) == (131072, 65536)  # f32 counted at bf16's 2 bytes: 2 x 256 x 128 x 2; 256 x 128 x 2


def test_integer_add_has_no_flops():
    cost = read(elementwise("add", dtype="s32"))
    assert cost.flops_by_dtype == {}  # integer work: no FLOPs (the code gives {"bfloat16": 32768})


# --- reduce ------------------------------------------------------------------------------------------------------

COVERED.add("reduce")


def test_reduce():
    text = hlo("""  %x = f32[256,128]{1,0} parameter(0)
  %z = f32[] constant(0)
  ROOT %r = f32[256]{0} reduce(%x, %z), dimensions={1}, to_apply=%sum""", SUM)
    cost = read(text)
    r = kernel(cost, "r")
    assert r.kind == "reduce"
    assert cost.flops_by_dtype == {"bfloat16": 32768}  # one per input element: 256 x 128 (to_apply not walked)
    assert r.cost.bytes_read == 131076  # x: 256 x 128 x 4, and the init value: 4
    assert r.cost.bytes_written == 1024  # 256 x 4


# --- fusion ------------------------------------------------------------------------------------------------------

COVERED.add("fusion")
DOT_ADD = """%fused (p0: bf16[64,256], p1: bf16[256,128], p2: bf16[64,128]) -> bf16[64,128] {
  %p0 = bf16[64,256]{1,0} parameter(0)
  %p1 = bf16[256,128]{1,0} parameter(1)
  %p2 = bf16[64,128]{1,0} parameter(2)
  %d = bf16[64,128]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %a = bf16[64,128]{1,0} add(%d, %p2)
}
"""


def test_fusion_of_a_dot_with_an_elementwise_epilogue():
    text = hlo("""  %x = bf16[64,256]{1,0} parameter(0)
  %w = bf16[256,128]{1,0} parameter(1)
  %b = bf16[64,128]{1,0} parameter(2)
  ROOT %f = bf16[64,128]{1,0} fusion(%x, %w, %b), kind=kOutput, calls=%fused""", DOT_ADD)
    cost = read(text)
    f = kernel(cost, "f")
    assert (f.kind, f.shape, f.dtypes) == ("matmul", (64, 128, 256), ("bf16", "bf16"))  # the body's dot
    assert cost.flops_by_dtype == {"bfloat16": 4202496}  # 2 x 64 x 128 x 256 + 64 x 128 (the add) = 4194304 + 8192
    assert f.cost.bytes_read == 114688  # x + w + b = 64x256x2 + 256x128x2 + 64x128x2 = 32768 + 65536 + 16384
    assert f.cost.bytes_written == 16384  # 64 x 128 x 2; the dot's result stays in the kernel
    assert len(cost.kernels) == 1  # the body's instructions are not kernels of their own


SLICE_EXP = """%sliced (p0: f32[1024,256], p1: s32[], p2: s32[]) -> f32[16,256] {
  %p0 = f32[1024,256]{1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %p2 = s32[] parameter(2)
  %s = f32[16,256]{1,0} SLICE
  ROOT %e = f32[16,256]{1,0} exponential(%s)
}
"""


@pytest.mark.parametrize("slicing", ["slice(%p0), slice={[0:16], [0:256]}",
                                     "dynamic-slice(%p0, %p1, %p2), dynamic_slice_sizes={16,256}"])
def test_fusion_that_slices_a_parameter_reads_just_the_slice(slicing):
    text = hlo("""  %t = f32[1024,256]{1,0} parameter(0)
  %i = s32[] parameter(1)
  %j = s32[] parameter(2)
  ROOT %f = f32[16,256]{1,0} fusion(%t, %i, %j), kind=kLoop, calls=%sliced""", SLICE_EXP.replace("SLICE", slicing))
    cost = read(text)
    f = kernel(cost, "f")
    assert (f.kind, cost.flops_by_dtype) == ("elementwise", {"bfloat16": 4096})  # exp: 16 x 256
    assert f.cost.bytes_read == 16392  # the slice 16 x 256 x 4 = 16384 (not the table's 1 MiB), + 2 s32 indices
    assert f.cost.bytes_written == 16384  # 16 x 256 x 4


@pytest.mark.parametrize("body, kind, flops", [
    ("%e = f32[256,128]{1,0} exponential(%p0)\n  ROOT %r = f32[256]{0} reduce(%e, %z), dimensions={1}, "
     "to_apply=%sum", "reduce", 65536),  # exp 256 x 128 + reduce 256 x 128
    ("%e = f32[256,128]{1,0} exponential(%p0)\n  ROOT %r = f32[256,128]{1,0} negate(%e)", "elementwise", 65536),
    ("ROOT %r = bf16[256,128]{1,0} convert(%p0)", "copy", 0),  # data movement only
    ("ROOT %r = f32[256,128]{1,0} cholesky(%p0), lower=true", "other", 0),
])
def test_fusion_kind_is_its_busiest_members(body, kind, flops):
    comp = f"""%body (p0: f32[256,128]) -> f32[] {{
  %p0 = f32[256,128]{{1,0}} parameter(0)
  %z = f32[] constant(0)
  {body}
}}
"""
    out = body.split("ROOT %r = ")[1].split(" ")[0]
    cost = read(hlo(f"  %x = {F} parameter(0)\n  ROOT %f = {out} fusion(%x), kind=kLoop, calls=%body", SUM + comp))
    assert kernel(cost, "f").kind == kind
    assert cost.flops_by_dtype == ({"bfloat16": flops} if flops else {})


def test_fusion_that_only_changes_layout_is_no_traffic():
    """A transpose fusion is folded into its consumer (buffers docstring): no kernel; its consumer reads it."""
    comp = """%tr (p0: f32[256,128]) -> f32[128,256] {
  %p0 = f32[256,128]{1,0} parameter(0)
  ROOT %t = f32[128,256]{1,0} transpose(%p0), dimensions={1,0}
}
"""
    text = hlo(f"""  %x = {F} parameter(0)
  %f = f32[128,256]{{1,0}} fusion(%x), kind=kLoop, calls=%tr
  ROOT %n = f32[128,256]{{1,0}} negate(%f)""", comp)
    cost = read(text)
    assert names(cost) == {"n"}
    assert moved(cost) == (131072, 131072)  # the negate: 128 x 256 x 4 each way


def test_fusion_that_narrows_on_its_way_out_writes_the_narrow_width():
    """The CPU compiler quantizes an activation to fp8 and converts it back to f32 in one fusion: a real program
    stores it at fp8, and its consumer reads it at 1 byte an element."""
    comp = """%q (p0: f32[256,128]) -> f32[256,128] {
  %p0 = f32[256,128]{1,0} parameter(0)
  %e = f32[256,128]{1,0} exponential(%p0)
  %q = f8e4m3fn[256,128]{1,0} convert(%e)
  ROOT %r = f32[256,128]{1,0} convert(%q)
}
"""
    text = hlo(f"  %x = {F} parameter(0)\n  %f = {F} fusion(%x), kind=kLoop, calls=%q\n  %n = {F} negate(%f)\n"
               f"  ROOT %t = ({F}) tuple(%n)", comp)
    cost = read(text)
    f, n = kernel(cost, "f"), kernel(cost, "n")
    assert (f.cost.bytes_read, f.cost.bytes_written) == (131072, 32768)  # 256 x 128 x 4 in; 256 x 128 x 1 out
    assert n.cost.bytes_read == 32768  # the fp8 buffer: 256 x 128 x 1


# --- integer and bit work ----------------------------------------------------------------------------------------

COVERED |= INTEGER


@pytest.mark.parametrize("op", sorted(INTEGER))
def test_integer_and_bit_work_has_no_flops(op):
    arity = 1 if op in {"not", "popcnt", "count-leading-zeros"} else 2
    params = "\n".join(f"  %p{k} = s32[1024]{{0}} parameter({k})" for k in range(arity))
    args = ", ".join(f"%p{k}" for k in range(arity))
    cost = read(hlo(f"{params}\n  ROOT %i = s32[1024]{{0}} {op}({args})"))
    i = kernel(cost, "i")
    assert (i.kind, cost.flops_by_dtype) == ("elementwise", {})  # index arithmetic: no FLOPs
    assert i.cost.bytes_read == arity * 4096  # each operand 1024 x 4
    assert i.cost.bytes_written == 4096  # 1024 x 4


# --- copies ------------------------------------------------------------------------------------------------------

COVERED |= COPIES
# each: the instruction %c (reading %e = exp(%x), f32[256,128], or the parameters named), its consumer %n, and
# the kernel record of %c as (bytes read, bytes written), or None where it is a view (no kernel of its own)
COPY_CASES = {
    "copy": ("f32[256,128]{0,1} copy(%e)", (131072, 131072)),  # 256 x 128 x 4 each way (a real layout change)
    "transpose": ("f32[128,256]{1,0} transpose(%e), dimensions={1,0}", None),  # folded into its consumer
    "broadcast": ("f32[256,128]{1,0} broadcast(%s), dimensions={}", (4, 131072)),  # a scalar in, 256 x 128 x 4 out
    "concatenate": ("f32[512,128]{1,0} concatenate(%e, %e), dimensions={0}", (262144, 262144)),  # 2 x 131072
    "pad": ("f32[258,128]{1,0} pad(%e, %s), padding=1_1x0_0", (131076, 132096)),  # 131072 + 4; 258 x 128 x 4
    "slice": ("f32[16,128]{1,0} slice(%e), slice={[0:16], [0:128]}", None),  # a view, read by its consumer
    "dynamic-slice": ("f32[16,128]{1,0} dynamic-slice(%e, %i, %i), dynamic_slice_sizes={16,128}", None),
    "reverse": ("f32[256,128]{1,0} reverse(%e), dimensions={0}", (131072, 131072)),
    "convert": ("bf16[256,128]{1,0} convert(%e)", (131072, 65536)),  # f32 in, bf16 out: 256 x 128 x 2
    "bitcast-convert": ("s32[256,128]{1,0} bitcast-convert(%e)", (131072, 131072)),
    "iota": ("s32[256,128]{1,0} iota(), iota_dimension=0", None),  # no traffic: its consumer reads it
    "reshape": ("f32[32768]{0} reshape(%e)", None),
    "bitcast": ("f32[128,256]{1,0} bitcast(%e)", None),
    # in place: the update 16 x 128 x 4 and two s32 indices read, only the update written
    "dynamic-update-slice": ("f32[256,128]{1,0} dynamic-update-slice(%e, %u, %i, %i)", (8200, 8192)),
    # (destination, source, context): the source read, only the destination written; copy-done moves nothing
    "copy-start": ("(f32[256,128]{0,1}, f32[256,128]{1,0}, u32[]) copy-start(%e)", (131072, 131072)),
}


@pytest.mark.parametrize("op", sorted(COPY_CASES))
def test_copies_move_bytes_and_no_flops(op):
    instr, want = COPY_CASES[op]
    out = "f32[256,128]{0,1}" if op == "copy-start" else instr.split(f" {op}(")[0]
    done = f"  %cd = {out} copy-done(%c)\n" if op == "copy-start" else ""
    text = hlo(f"""  %x = {F} parameter(0)
  %s = f32[] parameter(1)
  %i = s32[] parameter(2)
  %u = f32[16,128]{{1,0}} parameter(3)
  %e = {F} exponential(%x)
  %c = {instr}
{done}  %n = {out} negate({"%cd" if done else "%c"})
  ROOT %r = ({out}) tuple(%n)""")
    cost = read(text)
    if want is None:
        assert "c" not in names(cost)
    else:
        c = kernel(cost, "c")
        assert (c.kind, c.cost.flops_by_dtype) == ("copy", ())
        assert (c.cost.bytes_read, c.cost.bytes_written) == want
    assert names(cost) - {"c"} == {"e", "n"}  # copy-done moves nothing
    assert cost.flops_by_dtype == {"bfloat16": 32768 + kernel(cost, "n").cost.flops}  # exp 256 x 128, the negate


def test_a_copy_that_only_relays_an_argument_is_free():
    """The CPU compiler re-lays a whole step argument on entry: a chip's compiler keeps its layout."""
    cost = read(hlo(f"  %x = {F} parameter(0)\n  %c = f32[256,128]{{0,1}} copy(%x)\n"
                    "  ROOT %n = f32[256,128]{0,1} negate(%c)"))
    assert names(cost) == {"n"}
    assert moved(cost) == (131072, 131072)  # the negate only: 256 x 128 x 4 each way


def test_a_copy_read_by_a_computing_root_is_counted():
    cost = read(hlo(f"  %x = {F} parameter(0)\n  %e = {F} exponential(%x)\n  %c = f32[256,128]{{0,1}} copy(%e)\n"
                    "  ROOT %n = f32[256,128]{0,1} negate(%c)"))
    assert names(cost) == {"e", "c", "n"}  # today: {"e", "n"}
    assert kernel(cost, "c").cost.hbm_bytes == 262144  # 256 x 128 x 4 read and written, as any copy of a value


def test_convert_is_no_traffic_where_f32_stands_for_bf16():
    text = hlo(f"  %x = {F} parameter(0)\n  %e = {F} exponential(%x)\n  %c = bf16[256,128]{{1,0}} convert(%e)\n"
               "  ROOT %n = bf16[256,128]{1,0} negate(%c)")
    assert names(read(text, f32_as="bf16")) == {"e", "n"}  # the CPU compiler's own upcasts and downcasts
    assert kernel(read(text), "c").cost.hbm_bytes == 196608  # elsewhere a real convert: 131072 + 65536


def test_fused_dynamic_update_slice_writes_only_its_update():
    """A cache update: the fusion's root updates its parameter 0 in place."""
    comp = """%upd (p0: bf16[1024,128], p1: bf16[1,128], p2: s32[]) -> bf16[1024,128] {
  %p0 = bf16[1024,128]{1,0} parameter(0)
  %p1 = bf16[1,128]{1,0} parameter(1)
  %p2 = s32[] parameter(2)
  %z = s32[] constant(0)
  ROOT %dus = bf16[1024,128]{1,0} dynamic-update-slice(%p0, %p1, %p2, %z)
}
"""
    text = hlo("""  %cache = bf16[1024,128]{1,0} parameter(0)
  %new = bf16[1,128]{1,0} parameter(1)
  %pos = s32[] parameter(2)
  ROOT %f = bf16[1024,128]{1,0} fusion(%cache, %new, %pos), kind=kLoop, calls=%upd""", comp)
    f = kernel(read(text), "f")
    assert (f.kind, f.cost.flops_by_dtype) == ("copy", ())
    assert f.cost.bytes_read == 260  # the cache not at all; the update 1 x 128 x 2 = 256; the position 4
    assert f.cost.bytes_written == 256  # the update only, not the 1024 x 128 x 2 cache


# --- gather and scatter ------------------------------------------------------------------------------------------

COVERED |= {"gather", "scatter"}
GATHER = ("gather(%t, %i), offset_dims={1}, collapsed_slice_dims={0}, start_index_map={0}, index_vector_dim=1, "
          "slice_sizes={1,128}")


def test_fused_gather_reads_its_rows():
    comp = f"""%g (p0: f32[1024,128], p1: s32[16,1]) -> f32[16,128] {{
  %t = f32[1024,128]{{1,0}} parameter(0)
  %i = s32[16,1]{{1,0}} parameter(1)
  ROOT %g = f32[16,128]{{1,0}} {GATHER}
}}
"""
    text = hlo("""  %table = f32[1024,128]{1,0} parameter(0)
  %ids = s32[16,1]{1,0} parameter(1)
  ROOT %f = f32[16,128]{1,0} fusion(%table, %ids), kind=kLoop, calls=%g""", comp)
    f = kernel(read(text), "f")
    assert (f.kind, f.cost.flops_by_dtype) == ("gather", ())
    assert f.cost.bytes_read == 8256  # 16 rows x 128 x 4 = 8192, not the 1024-row table; the ids 16 x 4 = 64
    assert f.cost.bytes_written == 8192  # 16 x 128 x 4


def test_gather():
    text = hlo(f"  %t = f32[1024,128]{{1,0}} parameter(0)\n  %i = s32[16,1]{{1,0}} parameter(1)\n"
               f"  ROOT %g = f32[16,128]{{1,0}} {GATHER}")
    g = kernel(read(text), "g")
    assert (g.kind, g.cost.flops_by_dtype) == ("gather", ())
    assert g.cost.bytes_read == 8256  # the 16 rows it gathers 16 x 128 x 4 = 8192, not the table; the ids 64
    assert g.cost.bytes_written == 8192  # 16 x 128 x 4


def test_unfused_gather_reads_its_rows():
    text = hlo(f"  %t = f32[1024,128]{{1,0}} parameter(0)\n  %i = s32[16,1]{{1,0}} parameter(1)\n"
               f"  ROOT %g = f32[16,128]{{1,0}} {GATHER}")
    assert kernel(read(text), "g").cost.bytes_read == 8256  # 16 x 128 x 4 + 16 x 4, as fused


def test_gather_of_expert_weights_is_read_in_place():
    """SCOPES.read_in_place: a row's expert weights are read by the matmul that uses them, not copied."""
    text = hlo(f"  %t = f32[1024,128]{{1,0}} parameter(0)\n  %i = s32[16,1]{{1,0}} parameter(1)\n"
               f"  ROOT %g = f32[16,128]{{1,0}} {GATHER}, metadata={{op_name=\"jit(f)/moe/expert_weights/gather\"}}")
    assert read(text).kernels == ()


def test_scatter_writes_only_its_updates():
    text = hlo("""  %t = f32[1024,128]{1,0} parameter(0)
  %i = s32[16,1]{1,0} parameter(1)
  %u = f32[16,128]{1,0} parameter(2)
  ROOT %s = f32[1024,128]{1,0} scatter(%t, %i, %u), update_window_dims={1}, inserted_window_dims={0}, \
scatter_dims_to_operand_dims={0}, index_vector_dim=1, to_apply=%sum""", SUM)
    s = kernel(read(text), "s")
    assert (s.kind, s.cost.flops_by_dtype) == ("scatter", ())  # data movement: no FLOPs (even a scatter-add)
    assert s.cost.bytes_read == 8256  # the operand in place: 0; the indices 16 x 4; the updates 16 x 128 x 4
    assert s.cost.bytes_written == 8192  # the updates, not the 1024 x 128 x 4 operand


# --- reduce-window, sort, rng ------------------------------------------------------------------------------------

LESS = """%less (a: f32[], b: f32[]) -> pred[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %lt = pred[] compare(%a, %b), direction=LT
}
"""
OTHER_CASES = {  # the instruction %o, and its (bytes read, bytes written)
    "sort": ("f32[1024]{0} sort(%v), dimensions={0}, to_apply=%less", (4096, 4096)),  # 1024 x 4 each way
    "rng": ("f32[256,128]{1,0} rng(%z, %z), distribution=rng_uniform", (8, 131072)),  # two scalars in
    # the u64[2] state in; the new state and 256 x 128 x 4 of bits out
    "rng-bit-generator": ("(u64[2]{0}, u32[256,128]{1,0}) rng-bit-generator(%st), algorithm=rng_default",
                          (16, 131088)),
}
COVERED |= set(OTHER_CASES)


COVERED.add("reduce-window")


def test_reduce_window_is_a_reduction():
    """A windowed sum: one FLOP for each value each window takes in."""
    text = hlo(f"""  %x = {F} parameter(0)
  %z = f32[] constant(0)
  ROOT %o = f32[256,127]{{1,0}} reduce-window(%x, %z), window={{size=1x2}}, to_apply=%sum""", SUM)
    cost = read(text)
    o = kernel(cost, "o")
    assert (o.kind, cost.flops_by_dtype) == ("reduce", {"bfloat16": 65024})  # 256 x 127 outputs x a window of 2
    assert (o.cost.bytes_read, o.cost.bytes_written) == (131076, 130048)  # 256 x 128 x 4 + the init 4; 256 x 127 x 4


@pytest.mark.parametrize("op", sorted(OTHER_CASES))
def test_sort_and_rng_are_other_and_no_flops(op):
    instr, (read_bytes, written) = OTHER_CASES[op]
    text = hlo(f"""  %v = f32[1024]{{0}} parameter(0)
  %x = {F} parameter(1)
  %z = f32[] constant(0)
  %st = u64[2]{{0}} parameter(2)
  ROOT %o = {instr}""", SUM + LESS)
    cost = read(text)
    o = kernel(cost, "o")
    assert (o.kind, cost.flops_by_dtype) == ("other", {})  # comparisons, windows and bits: no FLOPs
    assert (o.cost.bytes_read, o.cost.bytes_written) == (read_bytes, written)


# --- collectives -------------------------------------------------------------------------------------------------

ALL8, FOURS = "{{0,1,2,3,4,5,6,7}}", "{{0,1,2,3},{4,5,6,7}}"
COLLECTIVE_CASES = {  # the instruction, (group size, bytes as recorded, wire bytes per device), kernel written bytes
    # ring all-reduce: 2 (n - 1) / n x the operand 16 x 256 x 2 = 8192
    "all-reduce": (f"bf16[16,256]{{1,0}} all-reduce(%x), replica_groups={ALL8}, to_apply=%sum16",
                   (8, 8192, 14336), 8192),  # 2 x 7 / 8 x 8192
    # (n - 1) / n x the result 16 x 1024 x 2 = 32768
    "all-gather": (f"bf16[16,1024]{{1,0}} all-gather(%x), replica_groups={FOURS}, dimensions={{1}}",
                   (4, 32768, 24576), 32768),  # 3 / 4 x 32768
    # (n - 1) / n x the operand 8192
    "reduce-scatter": (f"bf16[16,64]{{1,0}} reduce-scatter(%x), replica_groups={FOURS}, dimensions={{1}}, "
                       "to_apply=%sum16", (4, 8192, 6144), 2048),  # 3 / 4 x 8192; written 16 x 64 x 2
    "all-to-all": (f"bf16[16,256]{{1,0}} all-to-all(%x), replica_groups={ALL8}, dimensions={{1}}",
                   (8, 8192, 7168), 8192),  # 7 / 8 x 8192
    # the whole operand to one peer
    "collective-permute": ("bf16[16,256]{1,0} collective-permute(%x), source_target_pairs={{0,1},{1,2},{2,3},{3,0}}",
                           (2, 8192, 8192), 8192),
}
COVERED |= COLLECTIVES | STARTED


@pytest.mark.parametrize("op", sorted(COLLECTIVE_CASES))
def test_collective(op):
    instr, (n, size, wire), written = COLLECTIVE_CASES[op]
    cost = read(hlo(f"  %x = bf16[16,256]{{1,0}} parameter(0)\n  ROOT %c = {instr}", SUM16, partitions=8))
    (c,) = cost.collectives
    assert (c.op, c.group_size, c.count, c.bytes, c.wire_bytes_per_device, c.dtype) == (op, n, 1, size, wire, "bf16")
    assert cost.comm_bytes == wire
    k = kernel(cost, "c")
    assert (k.kind, k.cost.flops_by_dtype) == ("collective", ())  # no FLOPs, even in a reduction
    assert (k.cost.bytes_read, k.cost.bytes_written) == (8192, written)  # the operand 16 x 256 x 2 read


def test_collective_of_the_cpu_compilers_f32_counts_at_bf16_width():
    text = hlo(f"  %x = f32[16,256]{{1,0}} parameter(0)\n  ROOT %c = f32[16,256]{{1,0}} all-reduce(%x), "
               f"replica_groups={ALL8}, to_apply=%sum", SUM, partitions=8)
    (c,) = read(text, f32_as="bf16").collectives
    assert (c.bytes, c.wire_bytes_per_device, c.dtype) == (8192, 14336, "f32")  # 16 x 256 x 2; 2 x 7 / 8 x 8192
    (c,) = read(text).collectives
    assert (c.bytes, c.wire_bytes_per_device) == (16384, 28672)  # 16 x 256 x 4; 2 x 7 / 8 x 16384


def test_collective_over_groups_of_one_moves_nothing():
    text = hlo("  %x = bf16[16,256]{1,0} parameter(0)\n  ROOT %c = bf16[16,256]{1,0} all-reduce(%x), "
               "replica_groups={{0},{1},{2},{3},{4},{5},{6},{7}}, to_apply=%sum16", SUM16, partitions=8)
    assert read(text).collectives == ()


ASYNC = {  # op: (-start's result type, its attributes, -done's result type)
    "all-reduce": ("bf16[16,256]{1,0}", f"replica_groups={ALL8}, to_apply=%sum16", "bf16[16,256]{1,0}"),
    "all-gather": ("(bf16[16,256]{1,0}, bf16[16,1024]{1,0})", f"replica_groups={FOURS}, dimensions={{1}}",
                   "bf16[16,1024]{1,0}"),
    "collective-permute": ("(bf16[16,256]{1,0}, bf16[16,256]{1,0}, u32[], u32[])",
                           "source_target_pairs={{0,1},{1,2},{2,3},{3,0}}", "bf16[16,256]{1,0}"),
}


def async_pair(op: str) -> str:
    start, attrs, done = ASYNC[op]
    return hlo(f"""  %x = bf16[16,256]{{1,0}} parameter(0)
  %s = {start} {op}-start(%x), {attrs}
  ROOT %d = {done} {op}-done(%s)""", SUM16, partitions=8)


@pytest.mark.parametrize("op", sorted(ASYNC))
def test_async_collective_pair_is_counted_once(op):
    cost = read(async_pair(op))
    sync = read(hlo(f"  %x = bf16[16,256]{{1,0}} parameter(0)\n  ROOT %c = {COLLECTIVE_CASES[op][0]}", SUM16,
                    partitions=8))
    (c,) = cost.collectives  # the -start only; the -done adds nothing
    (s,) = sync.collectives
    assert (c.op, c.group_size, c.count, c.bytes, c.wire_bytes_per_device) == (
        s.op, s.group_size, 1, s.bytes, s.wire_bytes_per_device)  # e.g. all-reduce: 2 x 7 / 8 x 8192 = 14336
    assert names(cost) == {"s"}  # the -done moves nothing
    assert kernel(cost, "s").kind == "collective"
    assert kernel(cost, "s").cost.bytes_read == 8192  # the operand, 16 x 256 x 2


@pytest.mark.parametrize("op", [
    "all-reduce",
    "all-gather",  # all-gather-start returns (operand, result): only the result is written
    "collective-permute",  # collective-permute-start returns (operand, result, u32[], u32[]): likewise
])
def test_async_collective_moves_the_bytes_of_its_sync_form(op):
    (k,) = read(async_pair(op)).kernels
    sync = kernel(read(hlo(f"  %x = bf16[16,256]{{1,0}} parameter(0)\n  ROOT %c = {COLLECTIVE_CASES[op][0]}", SUM16,
                           partitions=8)), "c")
    assert (k.cost.bytes_read, k.cost.bytes_written) == (sync.cost.bytes_read, sync.cost.bytes_written)


COMBINED = """  %x = bf16[16,256]{1,0} parameter(0)
  %y = bf16[16,256]{1,0} parameter(1)
  %s = ((bf16[16,256]{1,0}, bf16[16,256]{1,0}), (bf16[16,1024]{1,0}, bf16[16,1024]{1,0})) all-gather-start(%x, %y), \
replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={1}
  ROOT %d = (bf16[16,1024]{1,0}, bf16[16,1024]{1,0}) all-gather-done(%s)"""


def test_combined_all_gather_sync():
    text = hlo("""  %x = bf16[16,256]{1,0} parameter(0)
  %y = bf16[16,256]{1,0} parameter(1)
  ROOT %s = (bf16[16,1024]{1,0}, bf16[16,1024]{1,0}) all-gather(%x, %y), replica_groups={{0,1,2,3},{4,5,6,7}}, \
dimensions={1}""", partitions=8)
    (c,) = read(text).collectives
    assert (c.bytes, c.wire_bytes_per_device) == (65536, 49152)  # two results 2 x 16 x 1024 x 2; 3 / 4 x 65536


def test_combined_all_gather_start_counts_all_its_results():
    (c,) = read(hlo(COMBINED, partitions=8)).collectives
    assert (c.bytes, c.wire_bytes_per_device) == (65536, 49152)  # as the sync form: 3 / 4 x 2 x 16 x 1024 x 2


def test_async_start_wrapping_a_collective_counts_it_once():
    """XLA wraps collectives without -start/-done forms (reduce-scatter, all-to-all) in async-start/-done."""
    comp = """%rs (p: bf16[16,256]) -> bf16[16,64] {
  %p = bf16[16,256]{1,0} parameter(0)
  ROOT %r = bf16[16,64]{1,0} reduce-scatter(%p), replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={1}, \
to_apply=%sum16
}
"""
    text = hlo("""  %x = bf16[16,256]{1,0} parameter(0)
  %s = ((bf16[16,256]{1,0}), bf16[16,64]{1,0}) async-start(%x), calls=%rs
  ROOT %d = bf16[16,64]{1,0} async-done(%s)""", SUM16 + comp, partitions=8)
    cost = read(text)
    (c,) = cost.collectives
    assert (c.op, c.count, c.bytes, c.wire_bytes_per_device) == ("reduce-scatter", 1, 8192, 6144)  # 3 / 4 x 8192
    r = kernel(cost, "r")
    assert (r.kind, r.cost.bytes_read, r.cost.bytes_written) == ("collective", 8192, 2048)  # 16x256x2; 16x64x2


# --- structure: loops, calls, tuples -----------------------------------------------------------------------------

COVERED |= STRUCTURE
LOOP = """%body (p: (s32[], bf16[64,256], bf16[256,128])) -> (s32[], bf16[64,256], bf16[256,128]) {
  %p = (s32[], bf16[64,256]{1,0}, bf16[256,128]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = bf16[64,256]{1,0} get-tuple-element(%p), index=1
  %w = bf16[256,128]{1,0} get-tuple-element(%p), index=2
  %d = bf16[64,128]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %one = s32[] constant(1)
  %n = s32[] add(%i, %one)
  ROOT %t = (s32[], bf16[64,256]{1,0}, bf16[256,128]{1,0}) tuple(%n, %x, %w)
}

%cond (p: (s32[], bf16[64,256], bf16[256,128])) -> pred[] {
  %p = (s32[], bf16[64,256]{1,0}, bf16[256,128]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %lim = LIMIT
  ROOT %lt = pred[] compare(%i, %lim), direction=LT
}
"""
LOOP_ENTRY = """  %x = bf16[64,256]{1,0} parameter(0)
  %w = bf16[256,128]{1,0} parameter(1)
  %zero = s32[] constant(0)
  %t = (s32[], bf16[64,256]{1,0}, bf16[256,128]{1,0}) tuple(%zero, %x, %w)
  %loop = (s32[], bf16[64,256]{1,0}, bf16[256,128]{1,0}) while(%t), condition=%cond, body=%body CONFIG
  ROOT %r = bf16[256,128]{1,0} get-tuple-element(%loop), index=2"""


@pytest.mark.parametrize("limit, config", [
    ("s32[] constant(12)", ""),  # `i < 12` in the condition
    ("s32[] constant(99)", ', backend_config={"known_trip_count":{"n":"12"}}'),  # the compiler's count first
])
def test_while_body_costs_times_its_trip_count(limit, config):
    cost = read(hlo(LOOP_ENTRY.replace("CONFIG", config), LOOP.replace("LIMIT", limit)))
    d = kernel(cost, "d")
    assert (d.kind, d.count, d.shape) == ("matmul", 12, (64, 128, 256))
    assert d.cost.flops_by_dtype == (("bfloat16", 4194304.0),)  # per trip: 2 x 64 x 128 x 256
    assert d.total.flops == 50331648  # 12 x 4194304
    assert (d.total.bytes_read, d.total.bytes_written) == (1179648, 196608)  # 12 x (32768 + 65536); 12 x 16384
    assert kernel(cost, "n").count == 12  # the counter's add runs each trip too
    assert names(cost) == {"d", "n"}  # while, tuple, get-tuple-element, parameter, constant: no kernels
    assert cost.notes == ()


def test_while_without_a_readable_trip_count_is_counted_once_and_noted():
    limit = "s32[] get-tuple-element(%p), index=0"  # no constant to read
    cost = read(hlo(LOOP_ENTRY.replace("CONFIG", ""), LOOP.replace("LIMIT", limit)))
    assert kernel(cost, "d").count == 1
    assert cost.notes == ("a loop (loop) has no readable trip count: counted once",)


def test_collective_in_a_loop_counts_each_trip():
    body = LOOP.replace("ROOT %t = (s32[], bf16[64,256]{1,0}, bf16[256,128]{1,0}) tuple(%n, %x, %w)",
                        "%ar = bf16[64,128]{1,0} all-reduce(%d), replica_groups={{0,1,2,3,4,5,6,7}}, "
                        "to_apply=%sum16\n  ROOT %t = (s32[], bf16[64,256]{1,0}, bf16[256,128]{1,0}) tuple(%n, %x, %w)")
    cost = read(hlo(LOOP_ENTRY.replace("CONFIG", ""), SUM16 + body.replace("LIMIT", "s32[] constant(12)"),
                    partitions=8))
    (c,) = cost.collectives
    assert (c.count, c.bytes) == (12, 16384)  # 64 x 128 x 2 each trip
    assert c.wire_bytes_per_device == 344064  # 12 x 2 x 7 / 8 x 16384


FREE = """  %x = f32[256,128]{1,0} parameter(0)
  %k = f32[4]{0} constant({1, 2, 3, 4})
  %tok = token[] after-all()
  %pid = u32[] partition-id()
  %rid = u32[] replica-id()
  %t = (f32[256,128]{1,0}, f32[4]{0}) tuple(%x, %k)
  %b = (f32[256,128]{1,0}, f32[4]{0}) opt-barrier(%t)
  ROOT %g = f32[256,128]{1,0} get-tuple-element(%b), index=0"""


def test_structure_moves_nothing():
    """parameter, constant, tuple, get-tuple-element, after-all, partition-id, replica-id, opt-barrier."""
    cost = read(hlo(FREE))
    assert (cost.kernels, cost.hbm_bytes, cost.flops_by_dtype, cost.notes) == ((), 0, {}, ())


def test_call_is_walked_once():
    comp = f"""%f (p: f32[256,128]) -> f32[256,128] {{
  %p = {F} parameter(0)
  ROOT %e = {F} exponential(%p)
}}
"""
    cost = read(hlo(f"  %x = {F} parameter(0)\n  ROOT %c = {F} call(%x), to_apply=%f", comp))
    assert names(cost) == {"e"}  # the call itself is no kernel
    assert (kernel(cost, "e").count, cost.flops_by_dtype) == (1, {"bfloat16": 32768})  # 256 x 128
    assert moved(cost) == (131072, 131072)  # 256 x 128 x 4 each way


WRAPPED = f"""%wrapped (p: f32[256,128]) -> f32[256,128] {{
  %p = {F} parameter(0)
  ROOT %e = {F} exponential(%p)
}}
"""
ASYNC_CALL = f"""  %x = {F} parameter(0)
  %s = (({F}), {F}, s32[]) async-start(%x), calls=%wrapped
  ROOT %d = {F} async-done(%s)"""


def test_async_start_walks_the_wrapped_computation():
    cost = read(hlo(ASYNC_CALL, WRAPPED))
    assert kernel(cost, "e").count == 1
    assert cost.flops_by_dtype == {"bfloat16": 32768}  # the exp once: 256 x 128
    assert "d" not in names(cost)  # async-done moves nothing


def test_async_start_bytes_are_its_computations():
    cost = read(hlo(ASYNC_CALL, WRAPPED))
    assert names(cost) == {"e"}  # today: {"e", "s"}
    assert moved(cost) == (131072, 131072)  # the exp's 256 x 128 x 4 each way, once


@pytest.mark.parametrize("instr", [
    "f32[256,128]{1,0} add-dependency(%x, %tok)",
    "s32[] get-dimension-size(%x), dimensions={0}",
    'f32[256,128]{1,0} domain(%x), domain={kind="sharding", entry={maximal device=0}, exit={replicated}}',
])
def test_structure_without_traffic(instr):
    cost = read(hlo(f"  %x = {F} parameter(0)\n  %tok = token[] after-all()\n  %s = {instr}\n"
                    f"  ROOT %n = {F} negate(%x)"))
    assert names(cost) == {"n"}  # only the negate: 256 x 128 x 4 each way


CONDITIONAL = """%yes (p: bf16[64,256]) -> bf16[64,64] {
  %p = bf16[64,256]{1,0} parameter(0)
  ROOT %d = bf16[64,64]{1,0} dot(%p, %p), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

%no (p: bf16[64,256]) -> bf16[64,64] {
  %p = bf16[64,256]{1,0} parameter(0)
  ROOT %d2 = bf16[64,64]{1,0} dot(%p, %p), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}
"""


def test_conditional_branches_are_counted_or_noted():
    text = hlo("""  %c = pred[] parameter(0)
  %x = bf16[64,256]{1,0} parameter(1)
  ROOT %r = bf16[64,64]{1,0} conditional(%c, %x, %x), true_computation=%yes, false_computation=%no""", CONDITIONAL)
    cost = read(text)
    assert cost.flops > 0 or any("conditional" in note for note in cost.notes)  # a branch: 2 x 64 x 64 x 256 = 2097152


# --- memory spaces -----------------------------------------------------------------------------------------------

def test_on_chip_buffers_are_no_hbm_traffic():
    """TPU: a result in VMEM (S(1)) is not written to HBM."""
    text = hlo("""  %x = bf16[64,256]{1,0} parameter(0)
  %w = bf16[256,128]{1,0} parameter(1)
  ROOT %c = bf16[64,128]{1,0:T(8,128)(2,1)S(1)} convolution(%x, %w), dim_labels=bf_io->bf""")
    assert kernel(read(text), "c").cost.bytes_written == 16384  # 64 x 128 x 2
    c = kernel(read(text, on_chip=frozenset({1, 2})), "c")
    assert (c.cost.bytes_read, c.cost.bytes_written) == (98304, 0)  # 64x256x2 + 256x128x2 read from HBM


# --- no rule -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("instr, op", [
    ("f32[64,64]{1,0} cholesky(%a), lower=true", "cholesky"),
    ("f32[64,64]{1,0} frobnicate(%a)", "frobnicate"),
])
def test_an_opcode_without_a_rule_is_charged_its_bytes_and_noted(instr, op):
    assert op not in RULES
    cost = read(hlo(f"  %a = f32[64,64]{{1,0}} parameter(0)\n  ROOT %o = {instr}"))
    o = kernel(cost, "o")
    assert (o.kind, cost.flops_by_dtype) == ("other", {})
    assert (o.cost.bytes_read, o.cost.bytes_written) == (16384, 16384)  # 64 x 64 x 4 each way
    assert cost.notes == (f"{op} has no counting rule: charged its reads and writes, no FLOPs",)


def test_every_rule_is_tested():
    assert set(RULES) == COVERED
