"""Signal handling shared by the ``clade`` commands.

SIGTERM is what ``timeout``, SLURM and ``docker stop`` send. Python's default for it is to die at
once, skipping every ``finally``, so a write in progress would leave its hidden temporary behind.
:func:`handled` installs a handler for the duration of a command: ``train`` sets a flag that
stops after the current step with a checkpoint; ``super-resolve`` raises
:class:`CLADE.errors.Interrupted` like Ctrl-C, so the temporaries are removed on the way out
(a handler runs between Python bytecodes, so during a native write it runs as soon as the write
returns, and the finished temporary is discarded instead of published).
"""

from __future__ import annotations

import contextlib
import signal

from ..errors import Interrupted


@contextlib.contextmanager
def handled(handler, signums=(signal.SIGTERM,)):
    """Call ``handler(signum, frame)`` on each of ``signums`` inside the block; restore after.

    Outside the main thread (a GUI worker) signals cannot be handled: the block runs unchanged.

    Example:
        >>> with handled(raise_terminated):
        ...     signal.getsignal(signal.SIGTERM) is raise_terminated
        True
    """
    previous = {}
    for signum in signums:
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler that stops the command like Ctrl-C does, with exit code 143."""
    raise Interrupted("terminated (SIGTERM): nothing was written.", 128 + signum)
