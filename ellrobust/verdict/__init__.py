"""Floor 8: judgements in numbers, no formatting: the claims of the verdict (:mod:`~ellrobust.verdict.rules`),
the CI regression check (:mod:`~ellrobust.verdict.regression`) and the results table as both read it
(:mod:`~ellrobust.verdict.results_view`).
"""
