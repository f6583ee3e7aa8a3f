"""The `orch` and `ops` command lines: thin layers that parse, call one function, print."""
