"""The README's promise for every command of `orch` and `ops`, checked on the command tree itself
(so a new command is checked too): it takes `--home DIR`, every one that opens the queue takes
`--db URL` too, and bad usage (a bad `--db` or `$ORCH_DB` included) prints one line `Error: ...`
with exit code 2 and writes nothing."""

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


# The commands that never open the queue (they read the profiles, the drills' catalogue, a JSONL
# log, or run drills in a home of their own): they take no --db. Every other command does.
NO_QUEUE = {"orch drill list", "orch drill run", "orch drill all", "orch soak profiles", "orch soak profile show",
            "orch soak report"}
SUPPORTED = "sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
BAD_URLS = {
    "postgresql://orch:secret@db.internal:port/queue": "Error: --db: a PostgreSQL URL is "
        "postgresql://USER@HOST:PORT/DATABASE (the port is a number), got 'postgresql://orch:***@db.internal:port/queue'",
    "postgresql://orch@db internal/queue": "Error: --db: a PostgreSQL URL is postgresql://USER@HOST:PORT/DATABASE, "
                                           "got 'postgresql://orch@db internal/queue'",
    "mysql://orch@db/queue": f"Error: --db: unknown database scheme 'mysql' (supported: {SUPPORTED})",
    "queue.db": f"Error: --db must be a database URL ({SUPPORTED}), got 'queue.db'",
    "sqlite://queue.db": "Error: --db: a SQLite URL is sqlite:///PATH (three slashes, then a file's path), "
                         "got 'sqlite://queue.db'",
}


def leaf(root: click.Group, path: tuple[str, ...]) -> click.Command:
    cmd = root
    for name in path:
        cmd = cmd.get_command(None, name)
    return cmd


def options(cmd: click.Command) -> set[str]:
    return {opt for p in cmd.params for opt in getattr(p, "opts", [])}


QUEUE_LEAVES = [(root, path) for root, path in LEAVES if " ".join((root.name, *path)) not in NO_QUEUE]


def ids(case) -> str:
    return " ".join((case[0].name, *case[1]))


def test_the_tree_holds_the_commands_the_readme_names():
    names = {" ".join((root.name, *path)) for root, path in LEAVES}
    assert {"orch soak start", "orch soak profiles", "orch soak profile show", "orch drill list", "ops status",
            "ops diagnose", "orch worker"} <= names


@pytest.mark.parametrize("case", LEAVES, ids=ids)
def test_every_command_takes_home(case):
    root, path = case
    assert "--home" in options(leaf(*case)), f"{ids(case)} does not take --home"


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


@pytest.mark.parametrize("case", LEAVES, ids=ids)
def test_a_command_takes_db_exactly_when_it_opens_the_queue(case):
    root, path = case
    takes = "--db" in options(leaf(root, path))
    assert takes == (" ".join((root.name, *path)) not in NO_QUEUE), f"{ids(case)}: --db {'not ' if not takes else ''}taken"


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("case", QUEUE_LEAVES, ids=ids)
def test_a_bad_db_url_is_one_error_line_with_exit_2_and_no_write(case, url, tmp_path, clean_env):
    root, path = case
    home = tmp_path / "home"
    result = CliRunner(env=clean_env()).invoke(root, [*path, "--home", str(home), "--db", url])
    assert (result.exit_code, result.output.splitlines()) == (2, [BAD_URLS[url]])
    assert not home.exists() and not (tmp_path / "queue.db").exists()


@pytest.mark.parametrize("case", QUEUE_LEAVES, ids=ids)
def test_a_bad_orch_db_is_one_error_line_with_exit_2_and_no_write(case, tmp_path, clean_env):
    root, path = case
    home = tmp_path / "home"
    result = CliRunner().invoke(root, [*path, "--home", str(home)], env=clean_env(ORCH_DB="postgresql://h:x/q"))
    assert (result.exit_code, result.output.splitlines()) == (
        2, ["Error: $ORCH_DB: a PostgreSQL URL is postgresql://USER@HOST:PORT/DATABASE (the port is a number), "
            "got 'postgresql://h:x/q'"])
    assert not home.exists()


def test_db_chooses_the_database_and_wins_over_orch_db(tmp_path, clean_env, monkeypatch):
    from orchestrator.cli.ops import ops as ops_root

    monkeypatch.chdir(tmp_path)  # sqlite:///RELATIVE is relative to the working directory
    home = tmp_path / "home"
    runner = CliRunner(env=clean_env())
    made = runner.invoke(orch, ["enqueue", "--key", "k", "--home", str(home), "--db", "sqlite:///elsewhere/q.db"])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "elsewhere" / "q.db").exists() and not (home / "db" / "queue.db").exists()
    absolute = f"sqlite:///{tmp_path / 'elsewhere' / 'q.db'}"  # sqlite:////... : four slashes
    env = clean_env(ORCH_DB=absolute)
    seen = runner.invoke(ops_root, ["status", "--home", str(home), "--json"], env=env)
    assert seen.exit_code == 0 and '"total": 1' in seen.output, seen.output
    other = runner.invoke(ops_root, ["status", "--home", str(home), "--db", "sqlite:///other.db"], env=env)
    assert other.exit_code == 0 and other.output.startswith("No queue yet at other.db"), other.output



# A PostgreSQL URL of a server that is not there (nothing listens on port 1): a command that opens
# the queue says so in one line, with the runtime exit code (README, "Exit codes"), and no
# traceback; the URL's password is never printed, and the home is not made.
NO_SERVER = "postgresql://orch:secret@127.0.0.1:1/queue"
OPENERS = [(ops, ("status",)), (ops, ("status", "--id", "ORCH-1")), (ops, ("cancel", "--id", "ORCH-1")),
           (orch, ("enqueue", "--key", "k")), (orch, ("done", "--id", "ORCH-1", "--notes", "n")),
           (orch, ("soak", "status")), (orch, ("worker", "--idle-exit", "0.1"))]


@pytest.mark.parametrize("case", OPENERS, ids=ids)
def test_a_server_that_does_not_answer_is_one_error_line_with_exit_1(case, tmp_path, clean_env):
    root, args = case
    home = tmp_path / "home"
    result = CliRunner(env=clean_env()).invoke(root, [*args, "--home", str(home), "--db", NO_SERVER])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith("Error: cannot connect to postgresql://127.0.0.1:1/queue: "), result.output
    assert "secret" not in result.output
    assert not home.exists() or args[0] == "worker"  # a worker makes its own home's folders first
