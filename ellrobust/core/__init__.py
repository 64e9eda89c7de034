"""Floor 0: the ground every layer stands on: errors, atomic files, parsing, precision, determinism,
workers, distributed runs, the generic registry and the version. Imports nothing of ellrobust above it.
"""
