"""Writing outputs without destroying what a user owns.

* :mod:`~nemo_red.outputs.destinations`: the checks every command runs before it writes a
  directory (a checkpoint export, a conversion, a run, an evaluation, a comparison), and
  the staging and publication of a directory written in one piece.
* :mod:`~nemo_red.outputs.lock`: an exclusive lock on a directory, so that two processes
  never write the same run.
"""

from nemo_red.outputs.destinations import (
    DestinationError,
    check_new_destination,
    claim_directory,
    is_kind,
    make_readable,
    publish,
    staging_dir,
)
from nemo_red.outputs.lock import DirectoryLock, LockedError

__all__ = [
    "DestinationError",
    "DirectoryLock",
    "LockedError",
    "check_new_destination",
    "claim_directory",
    "is_kind",
    "make_readable",
    "publish",
    "staging_dir",
]
