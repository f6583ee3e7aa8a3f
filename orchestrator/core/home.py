"""The data home: `--home` wins over `ORCH_HOME`, which wins over `automation/orchestrator`. The
queue database is `db/queue.db` under it unless `--db URL` (or `ORCH_DB`) names another: a SQLite
file (`sqlite:///PATH`) or a PostgreSQL database (`postgresql://…`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.core.errors import StoreError, UsageError

DEFAULT_HOME = Path("automation/orchestrator")
DB_ENV = "ORCH_DB"
SQLITE_URL = "sqlite:///PATH"
PG_URL = "postgresql://USER@HOST:PORT/DATABASE"
SUPPORTED = f"{SQLITE_URL} or {PG_URL}"


def parse_db_url(url: str, source: str = "--db") -> Path | str:
    """The database a URL names: a SQLite file's path for `sqlite:///PATH` (`sqlite:///queue.db` is
    relative to the working directory, `sqlite:////srv/queue.db` absolute), or the URL itself for
    `postgresql://…` / `postgres://…` (libpq's URL form; whether the server answers is found out
    when it is opened). Anything else is a usage error: another scheme, a SQLite URL with a host, a
    query or no path, a PostgreSQL URL with spaces or a port that is not a number."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme:
        raise UsageError(f"{source} must be a database URL ({SUPPORTED}), got {url!r}")
    engine = scheme.lower().split("+")[0]
    if engine in ("postgresql", "postgres"):
        return _postgres_url(url.strip(), source)
    if engine != "sqlite":
        raise UsageError(f"{source}: unknown database scheme {scheme!r} (supported: {SUPPORTED})")
    path = rest[1:] if rest.startswith("/") else None
    if not path or path == ":memory:" or "?" in path or "#" in path:
        raise UsageError(f"{source}: a SQLite URL is {SQLITE_URL} (three slashes, then a file's path), got {url!r}")
    return Path(path)


def _postgres_url(url: str, source: str) -> str:
    scheme = url.partition("://")[0]
    if scheme.lower() not in ("postgresql", "postgres") or any(c.isspace() for c in url):
        raise UsageError(f"{source}: a PostgreSQL URL is {PG_URL}, got {no_password(url)!r}")
    try:
        urlsplit(url).port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise UsageError(f"{source}: a PostgreSQL URL is {PG_URL} (the port is a number), "
                         f"got {no_password(url)!r}") from None
    return url


def no_password(url: str) -> str:
    """`url` with its password (if any) left out, for messages."""
    parts = urlsplit(url) if "://" in url else None
    if parts is None or parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def is_postgres_url(db: Path | str | None) -> bool:
    return isinstance(db, str)


@dataclass(frozen=True)
class Home:
    root: Path
    db_file: Path | str | None = None  # from --db / ORCH_DB (a SQLite file, or a PostgreSQL URL); None: db/queue.db

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
    def db(self) -> Path | str:
        """The queue database: a SQLite file's path, or a PostgreSQL URL (a `str`)."""
        return self.db_file if self.db_file is not None else self.root / "db" / "queue.db"

    @property
    def db_on_server(self) -> bool:
        """The database is on a PostgreSQL server, not a file of this machine."""
        return is_postgres_url(self.db_file)

    @property
    def db_shown(self) -> str:
        """The database, for messages (a PostgreSQL URL without its password)."""
        return no_password(self.db) if self.db_on_server else str(self.db)

    def has_db(self) -> bool:
        """Whether there may be a queue to read: the SQLite file exists (a server's database is
        asked when it is opened)."""
        return self.db_on_server or Path(self.db).exists()

    @property
    def db_args(self) -> list[str]:
        """`--db URL` for a process this one starts, when the database is not the home's own
        (an absolute path: the child may run elsewhere)."""
        if self.db_file is None:
            return []
        if self.db_on_server:
            return ["--db", self.db_file]
        return ["--db", f"sqlite:///{self.db_file.absolute()}"]

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
        folders = [self.logs, self.soak_reports, self.drill_reports, self.runtime]
        if not self.db_on_server:
            folders.insert(0, Path(self.db).parent)
        for folder in folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"home is not writable: {self.root} ({exc.strerror})") from None
            if not os.access(folder, os.W_OK | os.X_OK):
                raise StoreError(f"home is not writable: {folder}")
        return self
