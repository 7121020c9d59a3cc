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
