"""The reference in docs/ (and the README) against the code it describes, in both directions.

A key table is marked by an HTML comment naming the config sections it documents, e.g.
``<!-- keys: meters, meters.rstech -->``; the first column of each row holds the key names in backticks. Every such
key must be one the loader accepts in one of those sections, and every key the loader accepts must be in some
table marked with its section. CLI flags are checked wherever a ``pollerd ...`` command line appears in code (a
flag the parser refuses is a walkthrough that fails), and API paths against the OpenAPI document the app serves.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from pollerd.config import known_keys
from pollerd.openapi import document

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]

_MARKER = re.compile(r"^<!--\s*keys:\s*([^>]*?)\s*-->\s*$")
_TICKED = re.compile(r"`([^`]+)`")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- config keys -------------------------------------------------------------------------------------------------

def _known_keys() -> dict[str, frozenset[str]]:
    return {section: frozenset(keys) for section, keys in known_keys().items()}


def _key_tables(text: str) -> Iterator[tuple[int, tuple[str, ...], list[tuple[int, list[str]]]]]:
    """(line of the marker, its sections, [(line, keys of the row's first column)]) for each marked table."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = _MARKER.search(line)
        if m is None:
            continue
        sections = tuple(s.strip() for s in m.group(1).split(",") if s.strip())
        rows: list[tuple[int, list[str]]] = []
        j = i + 1
        while j < len(lines) and lines[j].startswith("|"):
            cells = lines[j].strip("|").split("|")
            first = cells[0].strip()
            if first != "key" and not set(first) <= set("-: "):
                rows.append((j + 1, [k for k in _TICKED.findall(first) if _KEY.fullmatch(k)]))
            j += 1
        yield i + 1, sections, rows


@cache
def _documented() -> dict[str, dict[str, str]]:
    """section -> {key: where it is documented}."""
    out: dict[str, dict[str, str]] = {}
    for path in DOCS:
        for _, sections, rows in _key_tables(path.read_text(encoding="utf-8")):
            for line, keys in rows:
                for key in keys:
                    for section in sections:
                        out.setdefault(section, {}).setdefault(key, f"{_rel(path)}:{line}")
    return out


def test_key_tables_are_found() -> None:
    # A marker the parser no longer sees would make every other check here pass vacuously.
    assert {"gateway", "store", "api", "lines", "meters"} <= _documented().keys()
    assert sum(len(v) for v in _documented().values()) > 150


def test_every_documented_key_is_accepted_by_the_loader() -> None:
    known = _known_keys()
    wrong = []
    for path in DOCS:
        for line, sections, rows in _key_tables(path.read_text(encoding="utf-8")):
            unknown_sections = [s for s in sections if s not in known]
            if unknown_sections:
                wrong.append(f"{_rel(path)}:{line}: no config section {unknown_sections} (known: {sorted(known)})")
                continue
            accepted = frozenset().union(*(known[s] for s in sections))
            for row_line, keys in rows:
                if not keys:
                    wrong.append(f"{_rel(path)}:{row_line}: a key table row without a `key` in its first column")
                for key in keys:
                    if key not in accepted:
                        wrong.append(f"{_rel(path)}:{row_line}: `{key}` is not a key of {', '.join(sections)}")
    assert not wrong, "documented keys the loader does not accept:\n" + "\n".join(wrong)


def test_every_key_the_loader_accepts_is_documented() -> None:
    documented = _documented()
    missing = []
    for section, keys in sorted(_known_keys().items()):
        # A protocol's or sink type's section may list the common keys too; those are documented once, in the
        # common table.
        parent = section.split(".")[0]
        seen = documented.get(section, {}).keys() | (documented.get(parent, {}).keys() if parent != section else set())
        missing += [f"[{section}] {key}" for key in sorted(keys - seen)]
    assert not missing, ("keys the loader accepts that no table in docs/ documents (add a row to the table marked "
                         "<!-- keys: SECTION -->):\n" + "\n".join(missing))


# --- CLI flags ---------------------------------------------------------------------------------------------------

@cache
def _parser() -> argparse.ArgumentParser:
    # The console script names the module that owns the parser, so this follows it if the commands move.
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    target = re.search(r'^pollerd\s*=\s*"([\w.]+):\w+"', text, re.M)
    assert target, "pyproject.toml names no pollerd console script"
    return importlib.import_module(target.group(1)).build_parser()  # type: ignore[no-any-return]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for its subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


# A command line starts with the program (after an optional prompt or sudo): `journalctl -u pollerd -f` is not one.
_COMMAND = re.compile(r"\s*(?:\$\s+)?(?:sudo\s+)?(?:[\w./-]*/)?pollerd\s+(?=[-a-z])((?:[^`\n#|\\]|\\.)*)")


def _command_lines(text: str) -> Iterator[tuple[int, str]]:
    """Command lines in code spans, code blocks and tables: ``pollerd SUBCOMMAND ...``. In a table row that
    starts with a command, the options named in its other cells (`--latency S`) belong to that command."""
    in_block = False
    for n, line in enumerate(text.split("\n"), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        spans = [line] if in_block else _TICKED.findall(line)
        for i, span in enumerate(spans):
            m = _COMMAND.match(span)
            if m is None:
                continue
            command = m.group(1).replace("\\|", "|")
            if i == 0 and line.startswith("| `"):
                command += " " + " ".join(s for s in spans[1:] if s.startswith("-"))
            yield n, command


def _check_command(words: list[str], top: argparse.ArgumentParser) -> list[str]:
    parser, problems, path = top, [], ["pollerd"]
    for word in words:
        subs = _subparsers(parser)
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            if flag not in _flags(parser) and flag not in _flags(top):
                problems.append(f"{' '.join(path)} has no option {flag}")
        elif word in subs and parser is not None:
            parser = subs[word]
            path.append(word)
        elif subs and parser is not top and len(path) == 2 and "|" in word:
            # `pollerd sim mercury230|mbus ...`: one command line for several subcommands is ambiguous
            problems.append(f"{' '.join(path)} {word}: name one subcommand per line (their options differ)")
    return problems


def test_every_cli_flag_in_the_docs_exists() -> None:
    top = _parser()
    wrong, seen = [], 0
    for path in DOCS:
        for line, command in _command_lines(path.read_text(encoding="utf-8")):
            words = [w.strip("[]().,;") for w in command.replace("[", " [ ").replace("]", " ] ").split()]
            words = [w for w in words if w and w not in ("|", "…", "...")]
            if not words or (words[0] not in _subparsers(top) and not words[0].startswith("-")):
                continue  # prose like "pollerd never starts half configured" inside a code span
            seen += 1
            wrong += [f"{_rel(path)}:{line}: {p}  ({command.strip()})" for p in _check_command(words, top)]
    assert seen > 40, f"only {seen} pollerd command lines found in the docs: is the pattern still right?"
    assert not wrong, "CLI options the parser does not accept:\n" + "\n".join(wrong)


def test_every_subcommand_is_in_the_command_table() -> None:
    table = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `pollerd ([a-z0-9-]+)", table, re.M))
    assert set(_subparsers(_parser())) - {"sim", "decode"} <= listed


# --- API paths ---------------------------------------------------------------------------------------------------

_API_PATH = re.compile(r"(?<![\w.:/])(/(?:api/[\w./{}-]*|health|metrics)\b[\w./{}-]*)")


def _route_patterns() -> list[re.Pattern[str]]:
    # A documented path may name its parameter differently ({entry}, M) or fill it in (feeder-1).
    return [re.compile(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(p)) + "$") for p in document()["paths"]]


# Pages (and sections) that describe another service's HTTP API: a path there is that service's unless it is
# under one of pollerd's own top-level API resources (e.g. `/api/meters/{entry}` in the cloud sources page).
_REMOTE = {"docs/cloud-sources.md": "", "docs/delivery.md": "## АС СиОИ"}


def _api_paths(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, API path, inside a remote service's section) for every path in code."""
    remote_heading = _REMOTE.get(_rel(path))
    in_block, remote = False, remote_heading == ""
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        if line.startswith("## ") and remote_heading:
            remote = line.startswith(remote_heading)
        for span in [line] if in_block else _TICKED.findall(line):
            if in_block and not re.search(r"\b(curl|GET|POST|https?://)", span):
                continue  # a code block's file paths (/etc/pollerd/...) are not API paths
            for m in _API_PATH.finditer(span):
                yield n, m.group(1).rstrip("."), remote


def test_every_api_path_in_the_docs_exists() -> None:
    routes = _route_patterns()
    own = {"/".join(p.split("/")[:3]) for p in document()["paths"]}  # /api/meters, /health, ...
    wrong, seen = [], 0
    for path in DOCS:
        for n, api_path, remote in _api_paths(path):
            if remote and "/".join(api_path.split("/")[:3]) not in own:
                continue
            seen += 1
            if not any(r.match(api_path) for r in routes):
                wrong.append(f"{_rel(path)}:{n}: {api_path}")
    assert seen > 20, f"only {seen} API paths found in the docs: is the pattern still right?"
    assert not wrong, "API paths the app does not serve:\n" + "\n".join(wrong)


def test_every_api_path_is_in_the_api_table() -> None:
    table = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(?:GET|POST) (/[^ ?`]*)", table, re.M))
    assert set(document()["paths"]) <= listed, set(document()["paths"]) - listed


# --- links -------------------------------------------------------------------------------------------------------

def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped except - and _, spaces to -."""
    out, in_block = set(), False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            in_block = not in_block
        elif line.startswith("#") and not in_block:
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", DOCS, ids=_rel)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#:\s]*)(?:#([^)\s]*))?\)", page.read_text(encoding="utf-8")):
        dest = (page.parent / target) if target else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}#{anchor}: no such heading")
    assert not broken, broken
