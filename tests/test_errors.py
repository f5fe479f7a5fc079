"""The one table of error classes -> (exit status, HTTP status), and the CLI taking its exit
status from it."""

from __future__ import annotations

import pytest

from facerec import errors
from facerec.cli import main
from facerec.errors import (ERROR_STATUS, EXIT_INPUT, ConflictError, FacerecError,
                            InvalidInputError, NotFoundError, UnavailableError, UnsupportedError,
                            exit_status, http_status)

CLASSES = [FacerecError, InvalidInputError, NotFoundError, ConflictError, UnsupportedError,
           UnavailableError]


def test_every_error_class_has_an_exit_status_and_an_http_status():
    defined = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, FacerecError)}
    assert defined == set(CLASSES)
    for cls in [*CLASSES, OSError]:
        code, status = ERROR_STATUS[cls]
        assert code == exit_status(cls("x")) and status == http_status(cls("x"))
        assert 100 <= status < 600
    assert {ERROR_STATUS[c][0] for c in CLASSES} == {EXIT_INPUT}  # README: 2 for bad input
    assert [http_status(c("x")) for c in CLASSES] == [400, 400, 404, 409, 415, 503]


def test_the_most_specific_class_wins():
    class Gone(NotFoundError):
        pass

    assert http_status(Gone("no such thing")) == 404
    assert http_status(FileNotFoundError("x")) == 500 and exit_status(PermissionError()) == EXIT_INPUT
    with pytest.raises(TypeError):
        exit_status(ValueError("not a facerec error"))


def test_cli_exit_status_of_a_not_found_error_is_the_documented_one(tmp_path, capsys):
    from facerec.split import split_dataset

    with pytest.raises(NotFoundError):
        split_dataset(tmp_path / "missing", tmp_path / "dataset")
    assert main(["split", str(tmp_path / "missing"), "--out", str(tmp_path / "dataset")]) == 2
    assert "processed folder not found" in capsys.readouterr().err


def test_cli_exit_status_comes_from_the_table(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(ERROR_STATUS, NotFoundError, (99, 404))
    assert main(["split", str(tmp_path / "missing"), "--out", str(tmp_path / "dataset")]) == 99
    assert capsys.readouterr().err.count("\n") == 1
