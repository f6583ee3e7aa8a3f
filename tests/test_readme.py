"""The README's commands exist and their documented options parse; the Quick start's test
command is the one CI runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from orchestrator.cli.ops import ops
from orchestrator.cli.orch import orch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
GROUPS = {"orch": orch, "ops": ops}


def documented_commands() -> list[list[str]]:
    """Every `orch …` / `ops …` in the README's code blocks and in the first column of its
    command table (the `a` or `b` alternatives of a cell split apart)."""
    texts, in_code = [], False
    for line in README.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            texts.extend(re.findall(r"(?:^|[\s/])((?:orch|ops)(?:\.py)? [^#]+)", line))
        elif line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            texts.extend(re.findall(r"`((?:orch|ops) [^`]+)`", first_cell))
    found = []
    for text in texts:
        text = text.replace(".py", "").replace("\\|", "|").strip()
        found.append(shlex.split(text))
    return found


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """Walk the click groups down the command words; return the leaf and its remaining words."""
    command: click.Command = GROUPS[words[0]]
    rest = words[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            break
        command, rest = sub, rest[1:]
    return command, rest


COMMANDS = documented_commands()


def test_the_readme_documents_the_main_commands():
    names = {" ".join(w[:3]) for w in COMMANDS}
    for expected in ("orch soak start", "orch soak status", "orch soak stop", "orch soak resume",
                     "orch soak report", "ops status", "ops cancel --id", "ops replan --id", "ops retry --id"):
        assert any(n.startswith(expected) for n in names), expected


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w)[:60] for w in COMMANDS])
def test_every_readme_command_exists_and_its_options_parse(words):
    command, rest = resolve(words)
    assert not isinstance(command, click.Group) or not rest or rest[0].startswith("-"), \
        f"{' '.join(words)}: no such command"
    params = {opt: p for p in command.params for opt in getattr(p, "opts", [])}
    for word in rest:
        if word.startswith("--"):
            option = word.split("=")[0]
            assert option in params, f"{' '.join(words)}: {option} is not an option of {command.name}"


def test_ci_runs_the_readme_test_command():
    quick = README[README.index("## Quick start"):README.index("## Commands")]
    test_lines = [line for line in quick.splitlines() if "pytest" in line]
    assert len(test_lines) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_lines[0].strip() in ci
