from tracer.read.collectives import wire_bytes
from tracer.read.hlo import parse_module, replica_groups, trip_count

HLO = """HloModule jit_f, is_scheduled=true, num_partitions=8

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%body (p: (s32[], bf16[16,256])) -> (s32[], bf16[16,256]) {
  %p = (s32[], bf16[16,256]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = bf16[16,256]{1,0} get-tuple-element(%p), index=1
  %ar = bf16[16,256]{1,0} all-reduce(%x), channel_id=1, replica_groups=[2,4]<=[8], to_apply=%add
  %ag = bf16[16,1024]{1,0} all-gather(%x), replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={1}
  %one = s32[] constant(1)
  %n = s32[] add(%i, %one)
  ROOT %t = (s32[], bf16[16,256]{1,0}) tuple(%n, %ar)
}

%cond (p: (s32[], bf16[16,256])) -> pred[] {
  %p = (s32[], bf16[16,256]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %lim = s32[] constant(6)
  ROOT %lt = pred[] compare(%i, %lim), direction=LT
}

ENTRY %main (x: bf16[16,256]) -> bf16[16,256] {
  %x = bf16[16,256]{1,0} parameter(0)
  %zero = s32[] constant(0)
  %t = (s32[], bf16[16,256]{1,0}) tuple(%zero, %x)
  %w = (s32[], bf16[16,256]{1,0}) while(%t), condition=%cond, body=%body
  ROOT %r = bf16[16,256]{1,0} get-tuple-element(%w), index=1
}
"""


def test_parse_and_trip_count_from_condition():
    module = parse_module(HLO)
    assert module.entry == "main" and module.num_partitions == 8
    loop = module.computations["main"].by_name["w"]
    assert loop.opcode == "while" and trip_count(module, loop) == 6  # no backend_config: read `i < 6`


def test_trip_count_from_backend_config():
    text = HLO.replace("body=%body", 'body=%body, backend_config={"known_trip_count":{"n":"80"}}')
    module = parse_module(text)
    assert trip_count(module, module.computations["main"].by_name["w"]) == 80


def test_replica_group_notations():
    body = parse_module(HLO).computations["body"]
    assert replica_groups(body.by_name["ar"], 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # iota [2,4]<=[8]
    assert replica_groups(body.by_name["ag"], 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # explicit
    mesh = HLO.replace("replica_groups=[2,4]<=[8]", "replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}")
    assert replica_groups(parse_module(mesh).computations["body"].by_name["ar"], 8) == [
        [0, 4], [1, 5], [2, 6], [3, 7]]
    transposed = HLO.replace("replica_groups=[2,4]<=[8]", "replica_groups=[4,2]<=[2,4]T(1,0)")
    assert replica_groups(parse_module(transposed).computations["body"].by_name["ar"], 8) == [
        [0, 4], [1, 5], [2, 6], [3, 7]]


def test_wire_bytes_ring_formulas():
    # all-reduce of 1 MB over 8: reduce-scatter + all-gather, each (n-1)/n of it
    assert wire_bytes("all-reduce", 8, 1e6, 1e6) == 2 * 7 / 8 * 1e6
    assert wire_bytes("all-gather", 4, 0.25e6, 1e6) == 3 / 4 * 1e6
    assert wire_bytes("reduce-scatter", 4, 1e6, 0.25e6) == 3 / 4 * 1e6
