import gc

from core.startup import worker_ready


def test_a_ready_worker_keeps_what_it_loaded_out_of_the_full_collections() -> None:
    """gunicorn.conf.py's post_worker_init: the URLconf loaded, everything alive frozen (a
    full collection then walks only what requests leave behind)."""
    gc.unfreeze()
    try:
        worker_ready()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # Django, the apps, the URLconf
        assert all(count < frozen for count in gc.get_count())
    finally:
        gc.unfreeze()
