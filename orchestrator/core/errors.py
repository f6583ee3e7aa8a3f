"""One exception hierarchy for the whole package.

Every error a user can cause maps to an exit code (see README, "Exit codes"):
0 ok, 1 runtime failure, 2 usage, 3 unknown id, 4 refused.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_UNKNOWN_ID = 3
EXIT_REFUSED = 4


class OrchestratorError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = EXIT_RUNTIME


class UsageError(OrchestratorError):
    """Raised when input is malformed: a bad id, bad JSON, a bad profile, a missing option."""

    exit_code = EXIT_USAGE


class UnknownTask(OrchestratorError):
    """Raised when a well-formed task id names no task in the queue."""

    exit_code = EXIT_UNKNOWN_ID


class Refused(OrchestratorError):
    """Raised when an action is well formed but not allowed now (illegal transition, cap)."""

    exit_code = EXIT_REFUSED


class IllegalTransition(Refused):
    """Raised when an operator action is not allowed from the task's current state."""


class KeyConflict(Refused):
    """Raised when an idempotency key is enqueued again with a different payload."""


class StoreError(OrchestratorError):
    """Raised when the database cannot be used: not SQLite, foreign schema, not writable."""


class DbLockError(StoreError):
    """Raised when the write lock could not be had within the bound (error class `db_lock`)."""


class ProfileError(UsageError):
    """Raised when a soak profile is invalid; the message names the offending key."""


class LogError(OrchestratorError):
    """Raised when a JSONL log cannot be read: missing, truncated, corrupt (names the line)."""
