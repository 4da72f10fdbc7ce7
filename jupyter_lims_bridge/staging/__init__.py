"""Data staging: an entry's data items placed beside its notebook.

Owns the ``data`` claim after the token is verified: items from mounted
stores (``data_mounts``) become symlinks into ``<notebook dir>/data/``; items
with a ``url`` (allowed by ``data_url_prefixes``) become download jobs.

``plan`` checks every item and writes nothing, so one bad item refuses the
whole open; ``apply`` then links and queues, and answers at once. Nothing here
overwrites an existing file: a different file already at an item's place is a
``conflict`` and is kept.

Downloads run in a bounded pool of worker threads (never on the event loop),
stream into a hidden partial file ``.<name>.part`` beside the final name, and
appear under the final name only once their size and sha256 match, by a
no-clobber hard link (or rename). An interrupted transfer keeps its partial
file and resumes with an HTTP Range request. Jobs live in memory only; a
restart leaves at most a hidden partial file, never a corrupt final one.

Three modules, along the seams of the work: :mod:`.plan` (every item checked,
nothing written), :mod:`.stager` (the job registry: links, jobs, their pool,
events, shutdown) and :mod:`.download` (one job's transfer: fetch, resume,
verify, place).

This package knows nothing of HTTP handlers, and must never log or report a
download URL's query (it may hold a signature) nor the text of a ``requests``
exception (it embeds the URL).
"""

from .download import DONE, FAILED, QUEUED, RUNNING, Job, install_log_filters
from .plan import PlannedItem, safe_url, url_allowed
from .stager import DataStager

__all__ = [
    "DONE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "DataStager",
    "Job",
    "PlannedItem",
    "install_log_filters",
    "safe_url",
    "url_allowed",
]
