"""The attacks' builders: ellrobust's parameter names mapped onto each implementation's own.

Every factory has one calling convention, ``factory(model, eps, params, num_classes, seed)``, and
returns an :class:`~.cascade.Attack` on [0, 1] images against a model that normalises internally, so
``eps`` is always in pixel units. Every parameter is passed explicitly: torchattacks' SPSA defaults
to eps = 0.3 in code while its docstring says 8/255, and a default nobody passed is a number nobody
chose. FGSM, PGD, EOT-PGD, APGD and Square are torchattacks'; SPSA (:mod:`.spsa`), FAB-T (:mod:`.fab`) and
the cascades (:mod:`.cascade`) are computed here. torchattacks is imported when an attack is built,
not when this module is: listing the attacks must not pay for it.
"""

from __future__ import annotations

from ellrobust.attacks.attention_fool import AttentionFool
from ellrobust.attacks.cascade import Attack, Cascade, Torchattack
from ellrobust.attacks.fab import FabTargeted
from ellrobust.attacks.patch_attack import PatchAttack
from ellrobust.attacks.patch_fool import PatchFool
from ellrobust.attacks.spsa import SPSA
from ellrobust.core.errors import UsageError
from ellrobust.core.parsing import parse_fraction


def resolve_step_size(step_size: object, eps: float) -> float:
    """``step_size`` is absolute (a number, pixel units) or relative to eps (``"0.15*eps"``).

    Relative is the default because a step that suits 8/255 is far too large for 1/255: suites and
    defaults write ``0.25*eps`` once and it holds at every budget of a sweep.
    """
    if isinstance(step_size, (int, float)):
        value = float(step_size)
    else:
        text = str(step_size).replace(" ", "")
        try:
            if text.endswith("*eps"):
                value = float(text[: -len("*eps")]) * eps
            elif text.endswith("eps"):
                value = float(text[: -len("eps")] or 1) * eps
            else:
                value = parse_fraction(text)
        except ValueError:
            raise UsageError(f"step size {step_size!r} is not a number or 'K*eps' (e.g. 2/255 or 0.25*eps).") from None
    if value <= 0:
        raise UsageError(f"step size must be positive (got {step_size!r}).")
    return value


def fgsm(model, eps, p, num_classes, seed) -> Attack:
    """torchattacks' FGSM: one signed gradient step of size eps."""
    import torchattacks

    return Torchattack(torchattacks.FGSM(model, eps=eps))


def pgd(model, eps, p, num_classes, seed) -> Attack:
    """torchattacks' L∞ PGD; restarts are run by :func:`~ellrobust.attacks.perturbation.perturb`."""
    import torchattacks

    alpha = resolve_step_size(p["step_size"], eps)
    steps, random_start = int(p["steps"]), bool(p["random_start"])
    return Torchattack(torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start))


def eot_pgd(model, eps, p, num_classes, seed) -> Attack:
    """torchattacks' EOTPGD: L∞ PGD whose every step sums the gradients of ``samples`` forward passes.

    A randomised model (dropout at test time, random input transforms, noise) gives a different gradient
    on every pass; one pass is one sample, and PGD follows the noise. The sum estimates the expected
    gradient (Expectation over Transformation, Athalye et al. 2018). ``samples`` is torchattacks'
    ``eot_iter``; restarts are run by :func:`~ellrobust.attacks.perturbation.perturb`, as for PGD.
    """
    import torchattacks

    alpha = resolve_step_size(p["step_size"], eps)
    steps, samples, random_start = int(p["steps"]), int(p["samples"]), bool(p["random_start"])
    return Torchattack(
        torchattacks.EOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=samples, random_start=random_start)
    )


def pgd_l2(model, eps, p, num_classes, seed) -> Attack:
    """torchattacks' L2 PGD (eps an L2 radius in pixel units); restarts as for :func:`pgd`."""
    import torchattacks

    alpha = resolve_step_size(p["step_size"], eps)
    steps, random_start = int(p["steps"]), bool(p["random_start"])
    return Torchattack(torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start))


def patch(model, eps, p, num_classes, seed) -> Attack:
    """ellrobust's adversarial patch (:mod:`.patch_attack`): ``eps`` squares at the worst of ``positions``."""
    return PatchAttack(model, eps, p, seed)


def patch_fool(model, eps, p, num_classes, seed) -> Attack:
    """Patch-Fool (:mod:`.patch_fool`) on ``eps`` patches, as the official code runs it."""
    return PatchFool(model, eps, p)


def attention_fool(model, eps, p, num_classes, seed) -> Attack:
    """Attention-Fool (:mod:`.attention_fool`) on ``eps`` patches: the query–key logits' loss."""
    return AttentionFool(model, eps, p)


def spsa(model, eps, p, num_classes, seed) -> Attack:
    """ellrobust's SPSA (:mod:`.spsa`): torchattacks' algorithm with passes sized to free memory."""
    return SPSA(
        model,
        eps=eps,
        delta=float(p["delta"]),
        lr=float(p["lr"]),
        steps=int(p["steps"]),
        samples=int(p["samples"]),
        max_batch_size=int(p["max_batch_size"]),
        seed=seed,
    )


def _apgd_ce_attack(model, eps, p, seed, restarts: int):
    import torchattacks

    steps = int(p["steps"])
    return torchattacks.APGD(model, norm=p["norm"], eps=eps, steps=steps, n_restarts=restarts, seed=seed, loss="ce")


def _apgd_t_attack(model, eps, p, num_classes, seed, restarts: int):
    """APGD-T over the ``target_classes`` most likely other classes (torchattacks alone would use all)."""
    import torchattacks

    attack = torchattacks.APGDT(
        model, norm=p["norm"], eps=eps, steps=int(p["steps"]), n_restarts=restarts, seed=seed, n_classes=num_classes
    )
    attack.n_target_classes = int(p["target_classes"])
    return attack


def apgd_ce(model, eps, p, num_classes, seed) -> Attack:
    """torchattacks' APGD with the cross-entropy loss."""
    return Torchattack(_apgd_ce_attack(model, eps, p, seed, int(p["restarts"])))


def apgd_t(model, eps, p, num_classes, seed) -> Attack:
    """torchattacks' APGD-T, over the top ``target_classes`` only."""
    return Torchattack(_apgd_t_attack(model, eps, p, num_classes, seed, int(p["restarts"])))


def fab_t(model, eps, p, num_classes, seed) -> Attack:
    """ellrobust's FAB-T (:mod:`.fab`): the reference's iterates without its per-iteration overheads."""
    steps, targets = int(p["steps"]), int(p["target_classes"])
    return FabTargeted(model, eps=eps, norm=str(p["norm"]), steps=steps, target_classes=targets)


def _square_attack(model, eps, p, seed, restarts: int, rescale_schedule: bool):
    import torchattacks

    return torchattacks.Square(
        model,
        norm=p["norm"],
        eps=eps,
        n_queries=int(p["queries"]),
        n_restarts=restarts,
        p_init=float(p.get("p_init", 0.8)),
        resc_schedule=rescale_schedule,
        seed=seed,
    )


def square(model, eps, p, num_classes, seed) -> Attack:
    """torchattacks' Square with its rescaled schedule (AutoAttack's Square keeps the fixed one)."""
    return Torchattack(_square_attack(model, eps, p, seed, int(p["restarts"]), rescale_schedule=True))


def apgd(model, eps, p, num_classes, seed) -> Attack:
    """APGD-CE then APGD-T on what APGD-CE left robust (no FAB-T, no Square: not AutoAttack, so not labelled so)."""
    return Cascade(
        model,
        (
            ("apgd-ce", Torchattack(_apgd_ce_attack(model, eps, p, seed, restarts=1))),
            ("apgd-t", Torchattack(_apgd_t_attack(model, eps, p, num_classes, seed, restarts=1))),
        ),
    )


def autoattack(model, eps, p, num_classes, seed) -> Attack:
    """AutoAttack, standard version, configured as Croce & Hein's reference implementation.

    APGD-CE, APGD-T (9 targets), FAB-T (9 targets), each 100 iterations and one restart, then
    Square with 5000 queries and p_init 0.8 on its fixed schedule (the reference passes
    ``resc_schedule=False``; torchattacks' AutoAttack would rescale it and use 10 iterations and every
    other class as a target). Run as a :class:`~.cascade.Cascade`, with FAB-T computed by
    :class:`~.fab.FabTargeted`.
    """
    return Cascade(
        model,
        (
            ("apgd-ce", Torchattack(_apgd_ce_attack(model, eps, p, seed, restarts=1))),
            ("apgd-t", Torchattack(_apgd_t_attack(model, eps, p, num_classes, seed, restarts=1))),
            ("fab-t", fab_t(model, eps, p, num_classes, seed)),
            ("square", Torchattack(_square_attack(model, eps, p, seed, restarts=1, rescale_schedule=False))),
        ),
    )
