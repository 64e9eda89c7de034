"""Small functions under ``torch.compile`` that stay compiled: one graph per state, never a silent fallback.

The elliptical attention compiles its metric and query scaling on CUDA (:mod:`ellrobust.models.vit`):
eager CUDA launches a kernel per elementwise op where the compiled function is one fused reduction
and one pass. Left to itself, ``torch.compile`` keeps one cache of graphs per *code object* and guards
every graph on the global state it was traced in: grad mode, autocast, the TF32 flag, deterministic
mode, the number of CPU threads, and each input's dtype, strides and sizes (batch 1 always gets a
graph of its own). One AutoAttack unit in two precisions passes the 8 graphs of torch's recompile
limit, and a shared cache would then fail mid-run. Here the guards are made explicit instead:

* :func:`state_key` names the state and the input layout a call runs in. Each key gets a compiled
  copy of the function with a *code object of its own*, hence its own cache: exactly one graph per
  key, the batch size marked dynamic (sizes above 1 share the graph), so the recompile limit is never
  reached, however many precisions, grad modes and batch sizes a run mixes.
* Whether to compile is decided once per process. If the very first compilation fails (no Triton,
  no C compiler, an unsupported GPU), a warning says so and every call of the process runs eagerly,
  so a run never mixes the two paths. After a compilation has succeeded, any error propagates.
* Out-of-memory errors always propagate unchanged: they are the memory sizer's signal
  (:class:`~ellrobust.attacks.memory.PassSize` halves its passes on them), not a compiler failure.
* Compiled and eager results round at the same points (inductor's ``emulate_precision_casts``): in
  bf16 they differ only by the order of float32 sums, not by a dropped rounding step.
* :data:`STATS` counts graphs, compile seconds and calls; the engine records them in run.json.

``ELLROBUST_COMPILE_ATTENTION`` chooses: ``auto`` (default: compile on CUDA only, where it pays),
``force`` (compile on every device, e.g. to test the compiled path on a CPU) or ``0`` (never).
``ELLROBUST_COMPILE_BACKEND`` names the ``torch.compile`` backend (default ``inductor``; ``aot_eager``
traces and counts graphs without generating code, which the tests use).
"""

from __future__ import annotations

import os
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum

import torch

from ellrobust.core.errors import UsageError

COMPILE_ENV = "ELLROBUST_COMPILE_ATTENTION"
BACKEND_ENV = "ELLROBUST_COMPILE_BACKEND"
DEFAULT_BACKEND = "inductor"


class CompileMode(StrEnum):
    """``ELLROBUST_COMPILE_ATTENTION``: where the compiled path runs."""

    AUTO = "auto"  # CUDA only
    FORCE = "force"  # every device
    OFF = "0"  # nowhere


_MODE_ALIASES = {"1": CompileMode.AUTO, "": CompileMode.AUTO, "off": CompileMode.OFF, "false": CompileMode.OFF}


def compile_mode() -> CompileMode:
    """The mode from the environment; a value that is none of them is a one-line error."""
    raw = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    try:
        return _MODE_ALIASES.get(raw) or CompileMode(raw)
    except ValueError:
        raise UsageError(f"{COMPILE_ENV} must be auto, force or 0 (got {raw!r}).") from None


@dataclass
class CompileStats:
    """What the compiled functions of this process did, for run.json.

    Attributes:
        graphs: graphs compiled (one per state key that occurred).
        compile_seconds: wall time of the calls that compiled a graph.
        compiled_calls: calls that ran a compiled graph.
        eager_calls: calls that ran eagerly (compiled path off for the device, or after a fallback).
        fallback: why this process runs eagerly although compiling was asked for, or None.
    """

    graphs: int = 0
    compile_seconds: float = 0.0
    compiled_calls: int = 0
    eager_calls: int = 0
    fallback: str | None = None

    def snapshot(self) -> dict:
        return asdict(self)


STATS = CompileStats()

#: Whether this process's first compilation succeeded (True), failed (False), or has not happened (None).
_compiler_works: bool | None = None


def use_compiled(device: torch.device) -> bool:
    """Whether calls on ``device`` take the compiled path in this process."""
    mode = compile_mode()
    if mode is CompileMode.OFF or _compiler_works is False:
        return False
    return mode is CompileMode.FORCE or device.type == "cuda"


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    if not torch.is_autocast_enabled(device_type):
        return False, None
    return True, torch.get_autocast_dtype(device_type)


def state_key(*tensors: torch.Tensor) -> tuple:
    """Everything a compiled graph is guarded on, as torch.compile sees it for these inputs.

    The global state (grad mode, autocast on the inputs' device, TF32 matmuls, deterministic mode,
    CPU threads, default dtype) and, per input, device, dtype, requires_grad, strides and every size
    except the batch size, which is dynamic above 1 (size 1 is always specialised, hence its flag).
    """
    device = tensors[0].device
    matmul = torch.backends.cuda.matmul
    tf32 = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
    state = (
        torch.is_grad_enabled(),
        _autocast_state(device.type),
        tf32,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
        torch.get_default_dtype(),
    )
    layout = tuple(
        (t.device, t.dtype, t.requires_grad, t.shape[0] == 1, tuple(t.shape[1:]), t.stride()) for t in tensors
    )
    return state, layout


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors behind it, outermost first (compilers wrap what went wrong inside them)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _is_out_of_memory(exc: BaseException) -> torch.OutOfMemoryError | None:
    """The out-of-memory error behind ``exc``, if any."""
    return next((e for e in _causes(exc) if isinstance(e, torch.OutOfMemoryError)), None)


def _describe(exc: BaseException) -> str:
    """The innermost error's type and first line: what actually failed, not the compiler's wrapper."""
    root = _causes(exc)[-1]
    lines = str(root).strip().splitlines()
    return f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__


def _counting_backend(name: str) -> Callable:
    """The named ``torch.compile`` backend, counting and timing the graphs it compiles."""

    def compile_graph(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        STATS.graphs += 1
        if name == "inductor":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(gm, example_inputs, config_patches={"emulate_precision_casts": True})
        return torch._dynamo.lookup_backend(name)(gm, example_inputs)

    return compile_graph


def _own_code(fn: Callable, tag: int) -> Callable:
    """A copy of ``fn`` with a code object of its own, so that torch.compile gives it its own cache."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}__state{tag}", co_qualname=f"{fn.__qualname__}__state{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


class CompiledFunction:
    """``fn`` (tensors in, tensors out) compiled once per :func:`state_key`, or run eagerly.

    Args:
        fn: a function of tensors that ``torch.compile(fullgraph=True)`` can trace; the first
            dimension of every input is the batch.
    """

    def __init__(self, fn: Callable[..., object]) -> None:
        self.fn = fn
        self._compiled: dict[tuple, Callable] = {}

    @property
    def states(self) -> int:
        """States this function has been compiled for so far (one graph each)."""
        return len(self._compiled)

    def __call__(self, *tensors: torch.Tensor):
        if torch.compiler.is_compiling() or not use_compiled(tensors[0].device):
            STATS.eager_calls += 1  # eager here, or traced as part of a caller's own compiled graph
            return self.fn(*tensors)
        key = state_key(*tensors)
        compiled = self._compiled.get(key)
        if compiled is None:
            return self._compile_and_call(key, tensors)
        STATS.compiled_calls += 1
        return compiled(*tensors)

    def _compile_and_call(self, key: tuple, tensors: tuple[torch.Tensor, ...]):
        """The first call in a new state: compile its graph, run it, and settle the process's choice."""
        global _compiler_works
        backend = os.environ.get(BACKEND_ENV, DEFAULT_BACKEND)
        compiled = torch.compile(
            _own_code(self.fn, len(self._compiled)), backend=_counting_backend(backend), fullgraph=True
        )
        self._compiled[key] = compiled
        if tensors[0].shape[0] > 1:
            for t in tensors:
                torch._dynamo.mark_dynamic(t, 0)
        start = time.perf_counter()
        try:
            out = compiled(*tensors)
        except Exception as exc:
            oom = _is_out_of_memory(exc)
            if oom is not None:
                raise oom from None  # the next call of this state compiles or runs again, still compiled
            del self._compiled[key]
            if _compiler_works:
                raise
            _compiler_works = False
            STATS.fallback = _describe(exc)
            warnings.warn(
                f"compiling the elliptical attention failed ({STATS.fallback}); this process runs it eagerly "
                f"(the same numbers, slower on CUDA). Set {COMPILE_ENV}=0 to skip the attempt.",
                RuntimeWarning,
                stacklevel=3,
            )
            STATS.eager_calls += 1
            return self.fn(*tensors)
        _compiler_works = True
        STATS.compile_seconds += time.perf_counter() - start
        STATS.compiled_calls += 1
        return out
