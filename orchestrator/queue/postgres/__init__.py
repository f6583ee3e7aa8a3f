"""The PostgreSQL backend of the queue's storage interface (`orchestrator/queue/backend.py`): its
connections, write transactions and driver-error mapping (`store`), its statements
(`queries.sql`, loaded by `sqlfile`) and the interface on one connection (`backend.PgStore`).
With `orchestrator/queue/sqlite/`, the only modules of the package that import a database driver
(psycopg 3) or execute SQL.

Imports only `orchestrator.core` (and its own modules).
"""
