"""Read a compiled, SPMD-partitioned HLO program: what one device does in a step (FLOPs, HBM bytes, live memory,
collectives), kernel by kernel.

    hlo          parse the program's text
    rules        per-opcode rules: a kernel's kind, FLOPs, matmul shape
    buffers      bytes read and written: views, slices, in-place updates, stored widths
    attention    the fused attention region (a flash kernel)
    fusion       which kernels serving engines run as one
    collectives  wire bytes of each collective
    liveness     peak memory
    scopes       which part of the model an instruction comes from
    program      the walk that puts them together: read_program
    values       what comes out: Cost, Kernel, Collective, ProgramCost
"""

from tracer.read.collectives import wire_bytes
from tracer.read.hlo import parse_module
from tracer.read.program import read_program
from tracer.read.values import Collective, Cost, Kernel, ProgramCost

__all__ = ["Collective", "Cost", "Kernel", "ProgramCost", "parse_module", "read_program", "wire_bytes"]
