"""Exceptions that carry a message meant for the user.

Every problem a user can fix (a wrong file, a bad option, a foreign model) is raised as a
:class:`CladeError` whose text is one plain sentence saying what is wrong and what to do.
The command line prints that sentence and exits non-zero without a traceback; anything else is a
bug and keeps its traceback.
"""


class CladeError(Exception):
    """A user-facing error: ``str(error)`` is the whole message.

    Example:
        >>> try:
        ...     raise CladeError("The file x.nrrd does not exist: check the path.")
        ... except CladeError as error:
        ...     print(error)
        The file x.nrrd does not exist: check the path.
    """

    exit_code = 2


class Cancelled(CladeError):
    """The user cancelled a running job; nothing was written."""

    exit_code = 130

    def __init__(self, message: str = "Cancelled: nothing was written.") -> None:
        super().__init__(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a command; ``str(error)`` says what was (not) written.

    ``exit_code`` is 130 for Ctrl-C and 143 (128 + 15) for SIGTERM, as shells report them.

    Example:
        >>> str(Interrupted("2 of 3 outputs were written.", 143)), Interrupted().exit_code
        ('2 of 3 outputs were written.', 130)
    """

    def __init__(self, message: str = "nothing was written.", exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
