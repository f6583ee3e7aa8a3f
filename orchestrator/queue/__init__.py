"""The lease queue and its storage: the state machine's writes (`writes.Queue`) and reads
(`reads.QueueView`), task records, connections and the write lock (`store`), every SQL statement
(`queue.sql`, loaded by `sqlfile`), the runs table (`runs`), the task search (`search`) and
read-only inspection (`inspect`). The place a second storage engine will sit beside SQLite.

Imports only `orchestrator.core`.
"""
