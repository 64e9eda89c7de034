"""ellrobust: is an Elliptical Attention ViT more robust than the same DeiT?

The library API; the ``ellrobust`` command is a thin layer over it::

    import ellrobust
    results = ellrobust.evaluate({"mine": net, "deit-elliptical": "deit-elliptical"}, attacks="pgd", n=200)
    results.table, results.examples, results.verdict     # rows, per-example outcomes, claims
    model = ellrobust.load_model("deit-elliptical")      # shipped, trained on the embedded digits
    logits = model(images)                               # images: float (B, 3, 32, 32) in [0, 1]
    with ellrobust.precision_scope("bf16", "cuda"):       # autocast for fast attack iterations
        ...

``evaluate`` takes registered names, checkpoints or any ``torch.nn.Module`` on [0, 1] images
(:mod:`ellrobust.api`).

The package is built in floors, one folder each (several share floor 3); a floor imports only its own
and those below, and each folder's docstring names its floor (``tests/test_structure.py`` checks both):

    0 core/         errors, files, parsing, precision, determinism, workers, distributed, registry
    1 stats/        pure statistics: intervals, paired tests, power, Holm, ε*, mCE, calibration, OOD
    2 results/      the typed row, the per-image table, the results table on disk
    3 models/ data/ corruptions/ attacks/     the registered families
    4 request/      what a run asks for: the frozen request and the TOML suites
    5 run/          units and the context a measure reads
    6 measures/     one module per measured family, and their paired statistics
    7 engine/       plans, runs and resumes the units; builds the results table
    8 verdict/      claims and the CI check, in numbers
    9 report/       neutral tables, rich and markdown back ends, figures, the document
   10 api.py        ellrobust.evaluate
   11 cli/          the Typer commands
"""

from ellrobust.api import Results, evaluate
from ellrobust.core.precision import Precision, precision_scope
from ellrobust.core.version import __version__
from ellrobust.models import load_model

__all__ = ["Precision", "Results", "__version__", "evaluate", "load_model", "precision_scope"]
