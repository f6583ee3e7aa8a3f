"""The SQLite backend of the queue's storage interface (`orchestrator/queue/backend.py`): its
connections, WAL and the write lock (`store`), its statements (`queries.sql`, loaded by
`sqlfile`), the interface on one connection (`backend.SqliteStore`) and read-only inspection
with sqlite-utils (`inspect`). The only modules of the package that import `sqlite3` or execute SQL.

Imports only `orchestrator.core` (and its own modules).
"""
