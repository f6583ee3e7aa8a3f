"""Soak-testing toolkit for a task orchestrator built on a SQLite lease queue."""

__version__ = "0.1.0"
