"""Real faults: the chaos agent (`agent`: a separate process that holds the write lock and
enqueues duplicates on request) and the client side that asks it or signals a process (`client`).

Imports `orchestrator.queue` and `orchestrator.core`; the worker and the soak run import this part.
"""
