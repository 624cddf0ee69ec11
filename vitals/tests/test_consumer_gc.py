"""The consumer's process and Python's cycle collector (vitals.consumer.consumer_gc_tuned)."""

import gc

from vitals.consumer import GC_YOUNG_THRESHOLD, consumer_gc_tuned


def test_the_consumers_loop_keeps_what_was_loaded_out_of_the_collections_then_undoes_it():
    """Around its loop (consume_vitals): everything alive frozen, young collections every
    20,000 allocations, the older generations' thresholds as they were; all as before after
    the loop (the command also runs inside a test's process)."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    with consumer_gc_tuned():
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # Django, the apps
        assert all(count < frozen for count in gc.get_count())
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:]) == (20_000, 10, 10)
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, threshold)
