"""Errors that the CLI turns into a one-line message, the exit statuses of every command, and the
one table that maps each error class to its exit status and its HTTP status (``facerec serve``).

Raise the most specific class: :class:`NotFoundError` (a path, person, crop, job, datastore that
is not there), :class:`ConflictError` (the state forbids it now: a job already running, nothing to
undo, a file that appeared meanwhile, a folder locked by another writer, an output that must be
forced), :class:`InvalidInputError` (a bad value or name), :class:`UnsupportedError` (a kind of
input or a feature this install cannot handle), :class:`UnavailableError` (the server lacks what
the request needs yet, e.g. a model). A plain :class:`FacerecError` is bad input, like
:class:`InvalidInputError`; every ``except FacerecError`` catches them all.
"""

from __future__ import annotations

#: the command did what was asked
EXIT_OK = 0
#: it ran but produced nothing usable (e.g. a sweep in which no experiment completed)
EXIT_FAILED = 1
#: bad input: a missing or unreadable path, a wrong checkpoint, a full or read-only disk... (one
#: line on stderr, nothing half-written)
EXIT_INPUT = 2
#: partial success: it ran, but some inputs could not be read (listed on stderr / in the report)
EXIT_PARTIAL = 3
#: a bad command line: unknown flag, missing or malformed value (sysexits.h EX_USAGE)
EXIT_USAGE = 64
#: interrupted with Ctrl-C (rerun to resume)
EXIT_INTERRUPTED = 130

#: every exit status and its meaning: the one table (README's "Exit statuses and JSON", the
#: epilog of every command's --help; tests/test_docs.py keeps them equal)
EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "it did what was asked",
    EXIT_FAILED: "it ran but produced nothing usable (a sweep in which no experiment completed)",
    EXIT_INPUT: "bad input, one line on stderr: a missing or unreadable path, a wrong checkpoint, "
                "a full or read-only disk",
    EXIT_PARTIAL: "partial success: it ran, but some inputs could not be read or used (each is "
                  "listed on stderr; e.g. detect or predict on a folder with an unreadable photo)",
    EXIT_USAGE: "a bad command line: unknown flag, missing or malformed value",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); rerun to resume",
}


class FacerecError(Exception):
    """A user-facing error: bad input, missing folder, wrong checkpoint... (message is shown as is)."""


class InvalidInputError(FacerecError):
    """A bad value: an invalid name, path, fraction, version..."""


class NotFoundError(FacerecError):
    """What was asked for is not there: a folder, a person, a crop, a job, a datastore..."""


class ConflictError(FacerecError):
    """The current state forbids it: already running, nothing to undo, appeared while writing,
    a folder being written by another process, an output that needs ``--force``..."""


class UnsupportedError(FacerecError):
    """A kind of input, format or feature this facerec (or this install) cannot handle."""


class UnavailableError(FacerecError):
    """Not possible yet: what it needs is not ready (the server has no model yet)."""


class MissingExtraError(UnavailableError):
    """An optional dependency (a ``facerec[extra]``) is not installed; the message names it."""


#: error class -> (exit status of the CLI, HTTP status of ``facerec serve``). The most specific
#: class of an error's MRO wins (:func:`exit_status`, :func:`http_status`). ``OSError`` (a full or
#: read-only disk, a missing permission) is one line and bad input for the CLI; on the server it
#: is the server's own failure.
ERROR_STATUS: dict[type[BaseException], tuple[int, int]] = {
    FacerecError: (EXIT_INPUT, 400),
    InvalidInputError: (EXIT_INPUT, 400),
    NotFoundError: (EXIT_INPUT, 404),
    ConflictError: (EXIT_INPUT, 409),
    UnsupportedError: (EXIT_INPUT, 415),
    UnavailableError: (EXIT_INPUT, 503),
    MissingExtraError: (EXIT_INPUT, 503),
    OSError: (EXIT_INPUT, 500),
}


def shown(value: object, limit: int = 60) -> str:
    """User input as an error message shows it: quoted, with control and invisible characters
    escaped (``repr``), and at most ``limit`` characters of it (then ``...`` and the length), so
    that a huge or hostile value is never echoed whole."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{repr(text[:limit])[:-1]}...{repr(text)[-1]} ({len(text)} characters)"


def _statuses(exc: BaseException) -> tuple[int, int]:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    raise TypeError(f"{type(exc).__name__} is not in facerec.errors.ERROR_STATUS")


def exit_status(exc: BaseException) -> int:
    """The CLI's exit status for ``exc`` (a :class:`FacerecError` or an ``OSError``)."""
    return _statuses(exc)[0]


def http_status(exc: BaseException) -> int:
    """The HTTP status ``facerec serve`` answers ``exc`` with."""
    return _statuses(exc)[1]
