"""The one table of error classes -> (exit status, HTTP status), and the CLI taking its exit
status from it."""

from __future__ import annotations

import pytest

from facerec import errors
from facerec.cli import main
from facerec.errors import (ERROR_STATUS, EXIT_INPUT, ConflictError, FacerecError,
                            InvalidInputError, MissingExtraError, NotFoundError, UnavailableError,
                            UnsupportedError, exit_status, http_status)

CLASSES = [FacerecError, InvalidInputError, NotFoundError, ConflictError, UnsupportedError,
           UnavailableError, MissingExtraError]


def test_every_error_class_has_an_exit_status_and_an_http_status():
    defined = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, FacerecError)}
    assert defined == set(CLASSES)
    for cls in [*CLASSES, OSError]:
        code, status = ERROR_STATUS[cls]
        assert code == exit_status(cls("x")) and status == http_status(cls("x"))
        assert 100 <= status < 600
    assert {ERROR_STATUS[c][0] for c in CLASSES} == {EXIT_INPUT}  # README: 2 for bad input
    assert [http_status(c("x")) for c in CLASSES] == [400, 400, 404, 409, 415, 503, 503]


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


def test_a_missing_extra_is_one_line_naming_it(capsys, monkeypatch):
    """A command whose optional dependencies are not installed says which extra to install."""
    import facerec.cli

    def needs_lightning(args):
        raise ModuleNotFoundError("No module named 'lightning'", name="lightning")

    parser = facerec.cli.build_parser
    monkeypatch.setattr(facerec.cli, "build_parser", lambda: _with_func(parser(), needs_lightning))
    assert main(["train", "--data_path", "x"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["facerec train: error: facerec train needs facerec's optional 'train' "
                   "dependencies (module 'lightning' is not installed): pip install "
                   "'facerec[train]'"]

    def other_bug(args):
        raise ModuleNotFoundError("No module named 'nonexistent_thing'", name="nonexistent_thing")

    monkeypatch.setattr(facerec.cli, "build_parser", lambda: _with_func(parser(), other_bug))
    with pytest.raises(ModuleNotFoundError):  # not an extra's module: a bug, shown as it is
        main(["train", "--data_path", "x"])


def _with_func(parser, func):
    real = parser.parse_args

    def parse_args(argv=None, namespace=None):
        args = real(argv, namespace)
        args.func = func
        return args

    parser.parse_args = parse_args
    return parser
