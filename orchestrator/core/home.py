"""The data home: `--home` wins over `ORCH_HOME`, which wins over `automation/orchestrator`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import StoreError

DEFAULT_HOME = Path("automation/orchestrator")


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, option: str | os.PathLike | None = None) -> Home:
        chosen = option if option not in (None, "") else os.environ.get("ORCH_HOME") or DEFAULT_HOME
        return cls(Path(chosen))

    @property
    def db(self) -> Path:
        return self.root / "db" / "queue.db"

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
