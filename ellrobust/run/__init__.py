"""Floor 5: the contract between the engine and the measures: units of work, what each yields
(:mod:`~ellrobust.run.units`), and the context a measure reads while it runs (:mod:`~ellrobust.run.context`).
"""
