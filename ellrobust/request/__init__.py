"""Floor 4: the request: one frozen value saying what a run measures (:mod:`~ellrobust.request.config`),
and the TOML suites that fill it (:mod:`~ellrobust.request.suites`).
"""
