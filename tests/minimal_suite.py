"""The small minimal-norm request the minimal-budget tests share: FMN (10 steps, eps_max 6/255) beside PGD.

FMN at 10 steps is weak (the sanity check that PGD must not beat it fails here, on purpose visible in
the tests that look at it); it keeps the tests fast. ``eps_max`` below the shipped models' largest ε*
leaves some images censored.
"""

EPS_MAX = 6 / 255
GRID = (1 / 255, 2 / 255, 4 / 255)
SUITE = f"""
description = "fmn beside pgd"

[[attack]]
name = "fmn"
steps = 10
eps_max = {EPS_MAX!r}

[[attack]]
name = "pgd"
steps = 3
"""
