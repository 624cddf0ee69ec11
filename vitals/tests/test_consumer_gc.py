"""The consumer's process and Python's cycle collector (vitals.consumer.consumer_gc_tune)."""

import gc

from vitals.consumer import GC_YOUNG_THRESHOLD, consumer_gc_tune


def test_the_consumer_keeps_what_it_loaded_out_of_the_collections_and_collects_young_less_often():
    """Before its loop (consume_vitals): everything alive frozen, young collections every
    20,000 allocations, the older generations' thresholds as they were."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        consumer_gc_tune()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # Django, the apps
        assert all(count < frozen for count in gc.get_count())
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:]) == (20_000, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
