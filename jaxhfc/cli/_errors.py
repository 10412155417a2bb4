"""What every ``jaxhfc`` command shares: the one-line user error and the errors reported as one."""

from __future__ import annotations


class CLIError(Exception):
    """An error reported to the user as one line, exit status 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Library errors that mean bad input, not a bug: a missing or corrupt dataset, a run
    folder or checkpoint that cannot be read, an optional dependency a dataset needs (e.g.
    TensorFlow to prepare TFDS data; the message says what to install). ``jaxhfc`` answers
    them with one line and exit status 2, as the experiment drivers do. Imported on use (only
    evaluated when an exception propagates)."""
    from jaxhfc import datasets
    from jaxhfc.runs import CheckpointError

    return (CLIError, datasets.DatasetNotFoundError, datasets.CorruptDatasetError, CheckpointError, ImportError)
