"""The failure probe: signs that a gradient attack silently failed, read from the attacked model.

:mod:`ellrobust.attacks.failure_checks` probes a model on a batch of images (randomised outputs,
probabilities instead of logits, zero input gradients, a PGD loss that never moved). The attack stage
has the model and the images, so the probing runs here, and its findings go to the unit's diagnostics
(``extra["failure"]``), where the sanity checks (:mod:`ellrobust.attacks.sanity_checks`) read them and
write the named rows.

It probes once per gradient attack, model, m_grad mode and precision: on the unit of the attack's
smallest budget, on the first batch each rank attacks, with the clean images of that batch. The
findings describe the model, not the budget, so probing every budget would only repeat them; a
gradient-free attack is not probed (nothing of it depends on gradients).
"""

from __future__ import annotations

from ellrobust.attacks.failure_checks import merged, probe_failures
from ellrobust.measures.attack_probe import AttackedBatch, AttackProbe, AttackScope, attack_probe
from ellrobust.run.context import RunContext
from ellrobust.run.units import UnitResult


@attack_probe("failure")
class FailureProbe(AttackProbe):
    order = 90

    def __init__(self, scope: AttackScope) -> None:
        self.scope = scope
        self.found: list[dict] = []

    @staticmethod
    def identity(ctx: RunContext) -> dict[str, object]:
        """Units measured without the probe (``--no-sanity``) lack its findings: not the same unit."""
        return {"failure_checks": True} if ctx.config.sanity else {}

    @classmethod
    def open(cls, scope: AttackScope) -> FailureProbe | None:
        if not scope.ctx.config.sanity or scope.unit.prior or scope.request.definition.gradient_free:
            return None
        return cls(scope)

    def observe(self, batch: AttackedBatch) -> None:
        if self.found or not len(batch.images):
            return
        findings = probe_failures(self.scope.model.module, batch.images, eps=self.scope.unit.eps)
        self.found.append(findings.as_dict())

    def finish(self, result: UnitResult) -> None:
        found = merged([f for part in self.scope.ctx.dist.gather_objects(self.found) for f in part])
        if found:
            result.extra["failure"] = found
