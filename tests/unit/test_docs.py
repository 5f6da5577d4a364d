"""The documents stay honest: links resolve, the commands shown exist, the README stays short.

Cheap checks of README.md and docs/*.md that need nothing but the files and the
`dbfleet` parser: every relative link points at a file (and heading) that exists,
every `dbfleet <command>` in code is a subcommand of `dbfleet --help` with options
that command takes, every `make <target>` is a Makefile target, and the README
keeps to what a newcomer needs first.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dbfleet import PROJECT_ROOT
from dbfleet.ops.cli import build_parser

# The README is the first page a newcomer reads; the rest belongs in docs/.
README_MAX_BYTES = 8_000

DOCS = sorted([PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# `dbfleet <word>` where dbfleet is the command (not `dbfleet/…`, `dbfleet.ops`, `dbfleet's`,
# nor a quoted string such as the GECOS `"dbfleet managed fleet=<name>"`).
COMMAND = re.compile(r"(?<![\w/.\-\"'])dbfleet[ \t]+([a-z][\w-]*)")
MAKE = re.compile(r"(?<![\w/.-])make[ \t]+([a-z][\w-]*)")
OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _fenced(text: str) -> list[str]:
    return [m.group(0) for m in FENCE.finditer(text)]


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces → '-'."""
    text = INLINE_CODE.sub(r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in HEADING.finditer(_prose(_text(path))):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[str]:
    prose = INLINE_CODE.sub("", _prose(_text(path)))
    return [m.group(1) for m in LINK.finditer(prose)]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "dbfleet has one level of subcommands"
    return dict(actions[0].choices)


def _commands_in(text: str) -> list[tuple[str, str]]:
    """(command, the rest of its shell command) for every `dbfleet <word>` in code."""
    found = []
    for block in [*_fenced(text), *INLINE_CODE.findall(_prose(text))]:
        for line in block.splitlines():
            for match in COMMAND.finditer(line):
                rest = line[match.end() :]
                # Only this command's own arguments: up to a comment, pipe or next command.
                rest = re.split(r"[ \t]#|\||&&|;|\)", rest)[0]
                found.append((match.group(1), rest.strip()))
    return found


def _rel(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT))


def test_the_documents_are_where_the_readme_says():
    names = {_rel(p) for p in DOCS}
    assert "README.md" in names and len(names) > 1, names


def test_the_readme_stays_short():
    size = len((PROJECT_ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes (at most {README_MAX_BYTES}): move detail into docs/"
    )


def test_every_document_in_docs_is_linked_from_the_readme():
    linked = {
        (PROJECT_ROOT / target.split("#", 1)[0]).resolve()
        for target in links(PROJECT_ROOT / "README.md")
        if target.split("#", 1)[0]
    }
    orphans = [_rel(p) for p in DOCS if p.name != "README.md" and p.resolve() not in linked]
    assert not orphans, f"not linked from README.md: {orphans}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_relative_link_resolves_to_a_file_and_heading(doc: Path):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: — not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {_rel(dest)}")
    assert not broken, f"{_rel(doc)}: " + "; ".join(broken)


def unknown_commands(text: str) -> list[str]:
    known = _subcommands()
    return sorted({cmd for cmd, _ in _commands_in(text) if cmd not in known})


def wrong_options(text: str) -> list[str]:
    """`dbfleet <command> <option>` in fenced blocks where the command does not take it
    (prose and inline code may name a wrong one on purpose: "`dbfleet status -q` is a
    usage error")."""
    known = _subcommands()
    wrong = []
    for block in _fenced(text):
        for cmd, rest in _commands_in(block):
            if cmd in known:
                takes = set(known[cmd]._option_string_actions)
                wrong += [f"dbfleet {cmd} {o}" for o in OPTION.findall(rest) if o not in takes]
    return wrong


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_dbfleet_command_shown_exists(doc: Path):
    unknown = unknown_commands(_text(doc))
    assert not unknown, f"{_rel(doc)} shows `dbfleet {unknown[0]}`; see `dbfleet --help`"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_option_of_a_command_in_a_code_block_is_one_it_takes(doc: Path):
    wrong = wrong_options(_text(doc))
    assert not wrong, f"{_rel(doc)}: options the command does not take: {wrong}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_make_target_shown_exists(doc: Path):
    makefile = _text(PROJECT_ROOT / "Makefile")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.MULTILINE))
    text = _text(doc)
    shown = {
        m.group(1)
        for code in [*_fenced(text), *INLINE_CODE.findall(_prose(text))]
        for m in MAKE.finditer(code)
    }
    assert shown <= targets, f"{_rel(doc)} shows make {sorted(shown - targets)}"


# The checks themselves, on inputs where they must fail.
def test_slug_matches_githubs_anchors():
    assert slug("An operator's day") == "an-operators-day"
    assert slug("Why Pulumi v3.79.0") == "why-pulumi-v3790"
    assert slug("Destroying, and what destroy leaves") == "destroying-and-what-destroy-leaves"
    assert slug("The `dbfleet` command") == "the-dbfleet-command"


def test_commands_are_found_in_code_only_and_cut_at_their_end():
    text = (
        "Run dbfleet nothing here.\n\n```sh\n$ dbfleet status eu -q   # a comment --json\n"
        "dbfleet up && dbfleet bogus --x\n```\nAnd `dbfleet failover eu` inline; "
        "`dbfleet/ops/cli.py`, `python -m dbfleet.ops.review`, "
        '`"dbfleet managed fleet=a"`.\n'
    )
    assert _commands_in(text) == [
        ("status", "eu -q"),
        ("up", ""),
        ("bogus", "--x"),
        ("failover", "eu"),
    ]
    assert unknown_commands(text) == ["bogus"]
    assert wrong_options(text) == ["dbfleet status -q"]


def test_options_a_command_takes_pass():
    text = "```sh\ndbfleet preview eu --diff --json - -q\ndbfleet status --json\n```\n"
    assert unknown_commands(text) == [] and wrong_options(text) == []


def test_links_in_code_are_not_links(tmp_path: Path):
    doc = tmp_path / "a.md"
    doc.write_text("# A\n[b](b.md#x) and `[c](c.md)`\n```\n[d](d.md)\n```\n")
    assert links(doc) == ["b.md#x"]
    assert anchors(doc) == {"a"}
