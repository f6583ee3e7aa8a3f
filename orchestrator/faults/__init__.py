"""Real faults: the run's one fault schedule (`schedule`: every planned fault, its soak time,
target and parameters, built from the profile and the arrival plan), the chaos agent (`agent`: a
separate process that holds the write lock and enqueues duplicates on request) and the client
side that asks it or signals a process (`client`).

Imports `orchestrator.queue` and `orchestrator.core`; the worker and the soak run import this part.
"""
