"""Errors that the CLI turns into a one-line message and a non-zero exit status."""


class FacerecError(Exception):
    """A user-facing error: bad input, missing folder, wrong checkpoint... (message is shown as is)."""
