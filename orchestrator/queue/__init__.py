"""The lease queue and its storage: the state machine's writes (`writes.Queue`) and reads
(`reads.QueueView`), task records (`tasks`), the run record (`runs`), the task search (`search`),
the skip clock's probe (`probe`), all on the storage interface (`backend`: what a database must
answer, in plain Python values). Its one backend is SQLite (`sqlite/`: connections, the write
lock, every SQL statement in `sqlite/queries.sql`); nothing outside `sqlite/` imports the driver
or executes SQL.

Imports only `orchestrator.core`.
"""
