"""Floor 7: the engine: plans the units of the registered measures, runs and saves them resumably, and
builds the results table (:mod:`~ellrobust.engine.runner`).
"""
