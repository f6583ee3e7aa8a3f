"""The SQLite backend's statements (`queries.sql`), looked up by name."""

from orchestrator.queue.sqlfile import statements

q = statements(__package__)
