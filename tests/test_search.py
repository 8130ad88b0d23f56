"""The batch searches on made-up measurements, each expected batch derived by hand."""

from types import SimpleNamespace

from tracer.roofline import Memory
from tracer.search import largest_fitting, largest_meeting


def test_largest_fitting_is_estimated_without_a_compile():
    """Weights 10 B of 100 B of HBM, 3 B more per sequence. At batch 8: 10 + 24 = 34 B, so (100 - 10) // 3 = 30
    sequences fit, 28 in multiples of 4 replicas; nothing more is compiled."""
    asked = []

    def memory_at(batch):
        asked.append(batch)
        return Memory(10.0, 3.0 * batch, 0.0, 0.0, 100.0)

    batch, note = largest_fitting(memory_at, 8, memory_at(8), 4, 64)
    assert (batch, asked) == (28, [8])
    assert note.startswith("estimated from the decode step compiled at batch 8")


def test_largest_fitting_confirmed_by_one_compile():
    """As above with --confirm: one compile at 28 (10 + 84 = 94 B) confirms it."""
    asked = []

    def memory_at(batch):
        asked.append(batch)
        return Memory(10.0, 3.0 * batch, 0.0, 0.0, 100.0)

    assert largest_fitting(memory_at, 8, memory_at(8), 4, 64, confirm=True) == (
        28, "confirmed by compiling the decode step at this batch")
    assert asked == [8, 28]


def test_largest_fitting_estimates_again_where_the_answer_does_not_fit():
    """Temporaries that grow faster than the batch: 3 B a sequence plus 0.05 B x batch^2. At 8: 10 + 24 + 3.2 =
    37.2 B, 3.4 B a sequence, 90 // 3.4 = 26 -> 24; at 24: 10 + 72 + 28.8 = 110.8 B does not fit, 100.8 / 24 = 4.2 B
    a sequence, 90 // 4.2 = 21 -> 20; at 20: 10 + 60 + 20 = 90 B fits."""
    def memory_at(batch):
        return Memory(10.0, 3.0 * batch, 0.0, 0.05 * batch**2, 100.0)

    assert largest_fitting(memory_at, 8, memory_at(8), 4, 64, confirm=True) == (
        20, "confirmed by compiling the decode step at this batch")


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
