"""Errors that the CLI turns into a one-line message, and the exit statuses of every command."""

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


class FacerecError(Exception):
    """A user-facing error: bad input, missing folder, wrong checkpoint... (message is shown as is)."""
