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
"""

from ellrobust.api import Results, evaluate
from ellrobust.models import load_model
from ellrobust.precision import Precision, precision_scope
from ellrobust.version import __version__

__all__ = ["Precision", "Results", "__version__", "evaluate", "load_model", "precision_scope"]
