"""The batch searches on made-up measurements, each expected batch derived by hand."""

from types import SimpleNamespace

from tracer.roofline import Memory
from tracer.search import largest_fitting, largest_meeting


def test_largest_fitting_from_one_step_when_temporaries_cannot_matter():
    """Weights 10 B of 100 B of HBM, 3 B more per sequence, no temporaries. At batch 8: 10 + 24 = 34 B, so
    (100 - 10) // 3 = 30 sequences fit, 28 in multiples of 4 replicas, whether temporaries grow or not: nothing more
    is compiled; --confirm compiles 28 once (10 + 84 = 94 B)."""
    asked = []

    def memory_at(batch):
        asked.append(batch)
        return Memory(10.0, 3.0 * batch, 0.0, 0.0, 100.0)

    batch, note = largest_fitting(memory_at, 8, memory_at(8), 4, 64)
    assert (batch, asked) == (28, [8])
    assert note.startswith("from the decode step compiled at batch 8") and note.endswith("; --confirm compiles it")
    assert largest_fitting(memory_at, 8, memory_at(8), 4, 64, confirm=True) == (
        28, note.removesuffix("; --confirm compiles it") + "; confirmed by compiling the decode step at this batch")
    assert asked == [8, 8, 28]


def test_largest_fitting_with_temporaries_that_do_not_grow():
    """20 B of temporaries that do not grow (FSDP's gathered weights): at batch 8, 10 + 24 + 20 = 54 B. Growing with
    the batch they would allow 90 // 5.5 = 16; held constant (90 - 20) // 3 = 23 -> 20. Compiled at 20: 10 + 60 + 20
    = 90 B fits, so 20, the most that could."""
    def memory_at(batch):
        return Memory(10.0, 3.0 * batch, 0.0, 20.0, 100.0)

    batch, note = largest_fitting(memory_at, 8, memory_at(8), 4, 64)
    assert batch == 20 and note.startswith("compiled at this batch, the most the decode step at batch 8 allows")


def test_largest_fitting_by_a_line_through_two_steps():
    """Temporaries that grow faster than the batch: 3 B a sequence plus 0.05 B x batch^2. At 8: 27.2 B beyond the
    weights; the bounds are 90 // 3.4 = 26 -> 24 and (90 - 3.2) // 3 = 28. At 28: 84 + 39.2 = 123.2 B, no fit. The
    line through (8, 27.2) and (28, 123.2): 4.8 B a sequence from -11.2 B, (90 + 11.2) // 4.8 = 21 -> 20, which
    fits (60 + 20 = 80 B)."""
    def memory_at(batch):
        return Memory(10.0, 3.0 * batch, 0.0, 0.05 * batch**2, 100.0)

    batch, note = largest_fitting(memory_at, 8, memory_at(8), 4, 64, confirm=True)
    assert (batch, note) == (20, "from the decode steps compiled at batches 8 and 28, memory a line in the batch; "
                                 "confirmed by compiling the decode step at this batch")


def test_nothing_fits_beside_weights_that_fill_the_memory():
    batch, note = largest_fitting(None, 8, Memory(120e9, 0.0, 0.0, 0.0, 100e9), 1, 64)
    assert batch == 0 and note == "weights alone (120.0 GB per device) exceed HBM (100 GB) at any batch"


def test_largest_meeting_interpolates_then_confirms():
    """Decode step (64 + B) / 1024 s, target 104 / 1024 s: B <= 40. Between batch 8 (72/1024 s) and 96 (160/1024 s)
    the line gives 8 + 88 x 32 / 88 = 40, which meets it; the next try, 48 (112/1024 s), does not: 40, exact."""
    traced = []

    def trace_at(batch):
        traced.append(batch)
        return SimpleNamespace(work=SimpleNamespace(batch=batch),
                               phases={"decode": SimpleNamespace(time=SimpleNamespace(step_s=(64 + batch) / 1024))})

    found, exact = largest_meeting(trace_at, trace_at(8), trace_at(96), 8, 104 / 1024)
    assert (found.work.batch, exact) == (40, "exact")
    assert traced == [8, 96, 40, 48]
