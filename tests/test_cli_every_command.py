"""The README's promise for every command of `orch` and `ops`, checked on the command tree itself
(so a new command is checked too): it takes `--home DIR`, and bad usage prints one line
`Error: ...` with exit code 2 and writes nothing."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli.ops import ops
from orchestrator.cli.orch import orch


def commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out.append(((*path, name), cmd))
            out += commands(cmd, (*path, name))
        else:
            out.append(((*path, name), cmd))
    return out


EVERY = [(root, path, cmd) for root in (orch, ops) for path, cmd in commands(root)]
LEAVES = [(root, path) for root, path, cmd in EVERY if not isinstance(cmd, click.Group)]
GROUPS = [(root, path) for root, path, cmd in EVERY if isinstance(cmd, click.Group)]


def ids(case) -> str:
    return " ".join((case[0].name, *case[1]))


def test_the_tree_holds_the_commands_the_readme_names():
    names = {" ".join((root.name, *path)) for root, path in LEAVES}
    assert {"orch soak start", "orch soak profiles", "orch soak profile show", "orch drill list", "ops status",
            "ops diagnose", "orch worker"} <= names


@pytest.mark.parametrize("case", LEAVES, ids=ids)
def test_every_command_takes_home(case):
    root, path = case
    cmd = root
    for name in path:
        cmd = cmd.get_command(None, name)
    opts = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    assert "--home" in opts, f"{ids(case)} does not take --home"


@pytest.mark.parametrize("case", LEAVES, ids=ids)
def test_an_unknown_option_is_one_error_line_with_exit_2_and_no_write(case, tmp_path):
    root, path = case
    home = tmp_path / "home"
    result = CliRunner().invoke(root, [*path, "--home", str(home), "--no-such-option"])
    lines = result.output.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: No such option '--no-such-option'"), result.output
    assert f"see '{root.name} {' '.join(path)} --help'" in lines[0]
    assert not home.exists()


@pytest.mark.parametrize("case", [(orch, ()), (ops, ()), *GROUPS], ids=ids)
def test_an_unknown_command_is_one_error_line_with_exit_2(case):
    root, path = case
    result = CliRunner().invoke(root, [*path, "no-such-command"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: No such command 'no-such-command'; see '{' '.join((root.name, *path))} --help'"]


def test_a_missing_required_option_and_a_bad_value_are_one_line_each(tmp_path):
    missing = CliRunner().invoke(orch, ["soak", "start", "--home", str(tmp_path)])
    assert (missing.exit_code, missing.output.splitlines()) == (
        2, ["Error: Missing option '--profile'; see 'orch soak start --help'"])
    bad = CliRunner().invoke(orch, ["soak", "start", "--profile", "24h", "--speed", "-1", "--home", str(tmp_path)])
    assert bad.exit_code == 2 and len(bad.output.splitlines()) == 1
    assert bad.output.startswith("Error: Invalid value for '--speed'")
