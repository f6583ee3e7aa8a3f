"""The `orch` and `ops` command lines: thin layers that parse, call one function, print.

The top of the package: may import every other part; nothing imports it (the soak's pool is
given the command its processes run).
"""
