"""The documentation agrees with the code: one exit-status table (README = errors.EXIT_MEANINGS =
the end of every --help), every docs/ path that a help text or a doc names exists, no doc cites a
file a clone does not have, and docs/cli.md's tables match the parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from facerec import errors
from facerec.cli import build_parser, command_parsers

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
SCRIPTS = ("process_raw_data.py", "create_training_dataset.py", "train.py", "predict.py")


def _flat(text: str) -> str:
    return " ".join(text.split())


def _helps() -> dict[str, str]:
    """Every command's --help text (the top level as "facerec")."""
    parser = build_parser()
    return {"facerec": parser.format_help(),
            **{name: p.format_help() for name, p in command_parsers(parser).items()}}


def _readme_exit_table() -> dict[int, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Exit statuses and JSON", 1)[1].split("\n## ", 1)[0]
    return {int(code): meaning.strip()
            for code, meaning in re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M)}


# ----------------------------------------------------------------------------- exit statuses
def test_one_exit_status_table_in_the_readme_the_code_and_every_help():
    constants = {getattr(errors, n) for n in dir(errors) if n.startswith("EXIT_")
                 and isinstance(getattr(errors, n), int)}
    assert set(errors.EXIT_MEANINGS) == constants == {0, 1, 2, 3, 64, 130}
    assert _readme_exit_table() == errors.EXIT_MEANINGS
    table = _flat("exit status: " + " ".join(f"{c} {m}" for c, m in errors.EXIT_MEANINGS.items()))
    helps = _helps()
    assert len(helps) >= 18
    for name, text in helps.items():
        assert table in _flat(text), f"facerec {name} --help lacks the exit-status table"


def test_every_exit_status_a_doc_or_help_names_is_in_the_table():
    texts = {p.name: p.read_text(encoding="utf-8") for p in [REPO / "README.md", *DOCS]}
    texts.update({f"{n} --help": t for n, t in _helps().items()})
    cited = []
    for where, text in texts.items():
        for m in re.finditer(r"[Ee]xit (?:status|code)(?:es|s)?\W{0,3}(?:\([^)]*\)\W*)?((?:\d+[ ,;:and]*)+)",
                             text):
            for code in re.findall(r"\d+", m.group(1)):
                cited.append((where, int(code)))
    assert cited, "no exit status cited anywhere?"
    unknown = [(w, c) for w, c in cited if c not in errors.EXIT_MEANINGS]
    assert not unknown, unknown


def test_predict_docs_and_help_give_3_for_a_folder_with_an_unreadable_file():
    """The three places that disagreed (README: 3, predict --help: 0, docs/predict.md: 0) say 3,
    which the code returns (tests/test_predict.py::test_folder_with_a_corrupt_file)."""
    assert "predict" in errors.EXIT_MEANINGS[errors.EXIT_PARTIAL]  # named among those giving 3
    help_text = _flat(_helps()["predict"])
    assert "reported and skipped (exit status 3)" in help_text
    assert "0 when it ran" not in help_text
    doc = _flat((REPO / "docs" / "predict.md").read_text(encoding="utf-8"))
    paragraph = doc.split("**Exit status**", 1)[1].split("**JSON**", 1)[0]
    assert "3 (partial success) when some files of a folder could not be read" in paragraph
    assert "0 when it ran, including" not in paragraph


# ------------------------------------------------------------------------------ paths in docs
def _doc_texts() -> dict[str, str]:
    texts = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8")
             for p in [REPO / "README.md", *DOCS]}
    texts.update({s: (REPO / s).read_text(encoding="utf-8") for s in SCRIPTS})
    texts.update({f"facerec {n} --help": t for n, t in _helps().items()})
    return texts


def test_every_docs_path_named_in_help_texts_and_docs_exists():
    missing = []
    for where, text in _doc_texts().items():
        for path in re.findall(r"(?<![\w/.-])docs/[\w./-]*\w", _flat(text)):
            if not (REPO / path).exists():
                missing.append((where, path))
        if where.endswith(".md"):  # relative links: [text](file.md#anchor)
            base = (REPO / where).parent
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
                if "://" not in target and not (base / target).exists():
                    missing.append((where, target))
    assert not missing, missing


def test_docs_name_no_file_a_clone_does_not_have():
    """Repository paths in the docs exist; bench/results/ (written by the benchmarks when run, not
    committed) is only named as such, never as a file to open."""
    missing = []
    for where, text in _doc_texts().items():
        if not where.endswith(".md"):
            continue
        for path in re.findall(r"`((?:bench|tests|src|docs)/[\w./-]+)`", text):
            if path.startswith("bench/results"):  # the folder may be named, not its files
                if path.rstrip("/") != "bench/results":
                    missing.append((where, path))
            elif not (REPO / path.rstrip("/")).exists():
                missing.append((where, path))
        assert not re.search(r"bench/results/\S+\.json", text), where
    assert not missing, missing


# ----------------------------------------------------------------------------------- cli.md
def _cli_md_table(title: str) -> list[list[str]]:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split(title, 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ")]
    return rows[1:]  # the header


def test_cli_md_commands_table_matches_the_parser():
    commands = command_parsers(build_parser())
    rows = _cli_md_table("## The commands")
    assert {r[0].strip("`") for r in rows} == set(commands) - {"datastore", "datastore list",
                                                                "datastore show"}
    for command, argument, _, model in rows:
        usage = _flat(commands[command.strip("`")].format_usage())
        for word in re.findall(r"[A-Z][A-Z_]+", argument):
            assert word in usage, (command, word, usage)
        for flag in re.findall(r"--\w+", model):
            assert flag in commands[command.strip("`")].format_help(), (command, flag)


_VALUES = {"N": "7", "F": "0.3", "D": "0.45", "TYPE:COUNT": "T4:1"}
_REQUIRED = {"run": ["photos"], "predict": ["--checkpoint_path", "c.ckpt"],
             "evaluate": ["--checkpoint_path", "c.ckpt"], "verify": ["a.jpg", "b.jpg"],
             "launch": ["--", "train"], "datastore pull": ["faces:1"],
             "datastore create": ["--name", "faces"]}


def _argv(command: str, spelling: str) -> list[str]:
    words = spelling.strip("`").split()
    values = [_VALUES.get(w.rstrip("."), "somewhere") if w[0].isupper() else w for w in words]
    required = _REQUIRED.get(command, [])
    if required and required[0] == "--":  # launch: its flags before the launched command
        return [*command.split(), *values, *required]
    return [*command.split(), *required, *values]


@pytest.mark.parametrize("row", _cli_md_table("## Earlier names (hidden aliases)"),
                         ids=lambda r: f"{r[0]} {r[1]}")
def test_cli_md_earlier_names_still_work_hidden(row):
    commands, earlier, now = row
    parser = build_parser()
    for command in (c.strip(" `") for c in commands.split(",")):
        old = vars(parser.parse_args(_argv(command, earlier)))
        new = vars(parser.parse_args(_argv(command, now)))
        for ns in (old, new):
            ns.pop("func", None)
            ns.pop("usage_error", None)
        assert old == new, (command, earlier, now)
        flag = earlier.strip("`").split()[0]
        help_text = command_parsers(parser)[command].format_help()
        assert not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), flag
