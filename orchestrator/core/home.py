"""The data home: `--home` wins over `ORCH_HOME`, which wins over `automation/orchestrator`. The
queue database is `db/queue.db` under it unless `--db URL` (or `ORCH_DB`) names another."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import StoreError, UsageError

DEFAULT_HOME = Path("automation/orchestrator")
DB_ENV = "ORCH_DB"
SQLITE_URL = "sqlite:///PATH"


def parse_db_url(url: str, source: str = "--db") -> Path:
    """The SQLite file a database URL names: `sqlite:///PATH` (`sqlite:///queue.db` is relative to
    the working directory, `sqlite:////srv/queue.db` absolute). Any other URL is a usage error:
    another scheme, PostgreSQL (its backend is not built yet), a host, a query, no path."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme:
        raise UsageError(f"{source} must be a database URL ({SQLITE_URL}), got {url!r}")
    engine = scheme.lower().split("+")[0]
    if engine in ("postgresql", "postgres"):
        raise UsageError(f"{source}: the PostgreSQL backend is not built yet; use {SQLITE_URL}")
    if engine != "sqlite":
        raise UsageError(f"{source}: unknown database scheme {scheme!r} (supported: {SQLITE_URL})")
    path = rest[1:] if rest.startswith("/") else None
    if not path or path == ":memory:" or "?" in path or "#" in path:
        raise UsageError(f"{source}: a SQLite URL is {SQLITE_URL} (three slashes, then a file's path), got {url!r}")
    return Path(path)


@dataclass(frozen=True)
class Home:
    root: Path
    db_file: Path | None = None  # from --db / ORCH_DB; None: db/queue.db under the root

    @classmethod
    def resolve(cls, option: str | os.PathLike | Home | None = None, db: str | None = None) -> Home:
        """The home of `--home` (else $ORCH_HOME, else the default) with the database of `--db`
        (else $ORCH_DB, else the home's own). A `Home` is returned as it is."""
        if isinstance(option, Home):
            return option
        chosen = option if option not in (None, "") else os.environ.get("ORCH_HOME") or DEFAULT_HOME
        if db not in (None, ""):
            db_file = parse_db_url(db)
        elif os.environ.get(DB_ENV):
            db_file = parse_db_url(os.environ[DB_ENV], f"${DB_ENV}")
        else:
            db_file = None
        return cls(Path(chosen), db_file)

    @property
    def db(self) -> Path:
        return self.db_file if self.db_file is not None else self.root / "db" / "queue.db"

    @property
    def db_args(self) -> list[str]:
        """`--db URL` for a process this one starts, when the database is not the home's own
        (an absolute path: the child may run elsewhere)."""
        return [] if self.db_file is None else ["--db", f"sqlite:///{self.db_file.absolute()}"]

    @property
    def logs(self) -> Path:
        return self.root / "logs" / "soak"

    @property
    def soak_reports(self) -> Path:
        return self.root / "reports" / "soak"

    @property
    def drill_reports(self) -> Path:
        return self.root / "reports" / "drills"

    @property
    def runtime(self) -> Path:
        """Sockets and pid files of live processes."""
        return self.root / "run"

    def ensure(self) -> Home:
        """Create the layout on first use; refuse a home that cannot be written."""
        for folder in (self.db.parent, self.logs, self.soak_reports, self.drill_reports, self.runtime):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"home is not writable: {self.root} ({exc.strerror})") from None
            if not os.access(folder, os.W_OK | os.X_OK):
                raise StoreError(f"home is not writable: {folder}")
        return self
