"""A soak run: starting, resuming and stopping it (`control`), the supervisor and its jobs, the
seeded arrival plan, the pool of processes (workers, shipper, chaos agent), the log shipper and
the progress view.

Imports the judge, the worker, the faults, the queue and the core; never the command line (the
pool is given the command its processes run).
"""
