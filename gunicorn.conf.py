"""gunicorn's settings, read from the working directory: production's `gunicorn loyalty_site.wsgi` and `make bench`."""

import gc

# Django is loaded once, before the workers are forked: they share its memory, and start at once.
# So a release needs a restart of gunicorn: `kill -HUP` would fork new workers from the old code.
preload_app = True


def pre_fork(server: object, worker: object) -> None:
    # Everything loaded so far lives as long as the process: the collector need never walk it again,
    # which took its full collections (and the odd slow request) from milliseconds to almost nothing.
    gc.freeze()
