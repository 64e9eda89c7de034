"""The GPU path, exercised on the CPU: compiled attention that stays compiled, precision scopes that hold.

* ``ELLROBUST_COMPILE_ATTENTION=force`` compiles the elliptical scaling on the CPU, so the compiled
  path runs here. ``aot_eager`` (``ELLROBUST_COMPILE_BACKEND``) traces and partitions graphs like
  inductor without generating code: it counts graphs in seconds. One test compiles with inductor to
  compare the numbers.
* Precision scopes nest (fp32 inside bf16 is fp32), and cover backward passes (a hook in the backward
  reads the switches).
* Nothing touches CUDA before the run's worker pool forks (``torch.cuda`` calls recorded with mocks).
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from ellrobust.attacks import make_request
from ellrobust.attacks.fab import FabTargeted
from ellrobust.attacks.memory import PassSize, pass_bytes_per_image
from ellrobust.core.errors import UsageError
from ellrobust.core.precision import Precision, fp32_predictions, precision_scope
from ellrobust.engine.runner import EvalConfig, Evaluation
from ellrobust.measures.collapse_probe import CollapseConfig, collapse_metrics
from ellrobust.models import compiled, load_model
from ellrobust.models import vit as vit_module


@pytest.fixture
def fresh_compiler(monkeypatch):
    """Compiled functions with no graphs yet, counters at zero, and no decision about the compiler made."""
    monkeypatch.setattr(compiled, "STATS", compiled.CompileStats())
    monkeypatch.setattr(compiled, "_compiler_works", None)
    monkeypatch.setattr(
        vit_module, "_SCALINGS", {d: compiled.CompiledFunction(f.fn) for d, f in vit_module._SCALINGS.items()}
    )
    return compiled


@pytest.fixture
def forced(fresh_compiler, monkeypatch):
    """The compiled path on the CPU, traced by aot_eager (graphs are counted, no code is generated)."""
    monkeypatch.setenv(compiled.COMPILE_ENV, "force")
    monkeypatch.setenv(compiled.BACKEND_ENV, "aot_eager")
    return fresh_compiler


def _graphs_and_states() -> tuple[int, int]:
    return compiled.STATS.graphs, sum(f.states for f in vit_module._SCALINGS.values())


# --- when and how the attention compiles -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cpu", "cuda"),
    [("auto", False, True), ("1", False, True), ("force", True, True), ("0", False, False), ("off", False, False)],
)
def test_compile_mode_from_the_environment(fresh_compiler, monkeypatch, value, cpu, cuda):
    monkeypatch.setenv(compiled.COMPILE_ENV, value)
    assert compiled.use_compiled(torch.device("cpu")) is cpu
    assert compiled.use_compiled(torch.device("cuda")) is cuda


def test_a_bad_compile_mode_is_one_line(fresh_compiler, monkeypatch):
    monkeypatch.setenv(compiled.COMPILE_ENV, "sometimes")
    with pytest.raises(UsageError, match="ELLROBUST_COMPILE_ATTENTION must be auto, force or 0"):
        compiled.use_compiled(torch.device("cuda"))


def test_an_autoattack_like_unit_sequence_in_two_precisions_never_falls_back(forced, tmp_path):
    """Clean batches of two sizes, APGD/FAB/SPSA iterations with gradients and without, cascade verdicts,
    FAB's and SPSA's 2-image memory probes, a subset of one image, m_grad both, bf16 and fp32: more
    states than torch's recompile limit (8) for one cache, yet one graph per state and no eager call."""
    attacks = (
        make_request("autoattack", {"steps": 3, "queries": 10, "target_classes": 2}),
        make_request("spsa", {"steps": 1, "samples": 4}),
    )
    cfg = EvalConfig(
        models=("deit-elliptical", "deit"), n=13, batch_size=8, attacks=attacks, eps=(2 / 255,), m_grad="both",
        precision=("bf16", "fp32"), sanity=False,
    )  # fmt: skip
    Evaluation(cfg, tmp_path / "run").run()
    graphs, states = _graphs_and_states()
    assert graphs == states > 8  # one graph per state: the recompile limit of one shared cache would have been hit
    assert compiled.STATS.eager_calls == 0 and compiled.STATS.fallback is None
    attention = json.loads((tmp_path / "run" / "run.json").read_text())["attention"]
    assert attention["compiled"] and attention["compile_mode"] == "force" and attention["backend"] == "aot_eager"
    assert attention["graphs"] == graphs and attention["eager_calls"] == 0 and attention["fallback"] is None
    units = json.loads((tmp_path / "run" / "run.json").read_text())["units"]
    in_units = sum(u.get("compile_seconds", 0.0) for u in units)  # timed apart from the units' work
    assert 0 < in_units <= attention["compile_seconds"] + 1e-9  # the rest: the models' input check, before any unit


def test_a_default_cpu_run_records_an_eager_attention(fresh_compiler, monkeypatch, tmp_path):
    monkeypatch.delenv(compiled.COMPILE_ENV, raising=False)
    Evaluation(EvalConfig(models=("deit-elliptical",), n=8, sanity=False), tmp_path / "run").run()
    attention = json.loads((tmp_path / "run" / "run.json").read_text())["attention"]
    assert attention["compile_mode"] == "auto" and not attention["compiled"] and attention["graphs"] == 0
    assert attention["eager_calls"] > 0


def _nano() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_model("deit-nano-elliptical").eval()


def test_an_out_of_memory_error_inside_the_compiled_call_propagates_and_the_next_call_is_compiled(
    forced, monkeypatch, images
):
    """The memory sizer halves its passes on OOM: the error must reach it, and compilation must stay on."""
    real_backend = compiled._counting_backend
    raised = []

    def backend_running_out_of_memory_once(name):
        compile_graph = real_backend(name)

        def wrapper(gm, example_inputs):
            run = compile_graph(gm, example_inputs)

            def call(*args):
                if not raised:
                    raised.append(True)
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                return run(*args)

            return call

        return wrapper

    monkeypatch.setattr(compiled, "_counting_backend", backend_running_out_of_memory_once)
    model = _nano()
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
        model(images)
    assert compiled.STATS.fallback is None
    compiled_calls = compiled.STATS.compiled_calls
    with torch.no_grad():
        out = model(images)
    assert compiled.STATS.compiled_calls > compiled_calls and compiled.STATS.eager_calls == 0
    monkeypatch.setenv(compiled.COMPILE_ENV, "0")
    with torch.no_grad():
        torch.testing.assert_close(out, model(images))


def test_a_compiler_that_cannot_work_sends_the_whole_process_eager_with_a_warning(forced, monkeypatch, images):
    def broken(name):
        def compile_graph(gm, example_inputs):
            raise RuntimeError("Cannot find a working triton installation")

        return compile_graph

    monkeypatch.setattr(compiled, "_counting_backend", broken)
    model = _nano()
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="runs it eagerly"):
        out = model(images)
    assert "triton" in compiled.STATS.fallback and not compiled.use_compiled(torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(model(images), out)  # no second attempt, no second warning
    assert compiled.STATS.graphs == 0


def test_after_a_successful_compilation_a_compiler_error_propagates(forced, monkeypatch, images):
    model = _nano()
    with torch.no_grad():
        model(images)  # compiles: the process now knows its compiler works

    def broken(name):
        def compile_graph(gm, example_inputs):
            raise RuntimeError("the compiler broke in the middle of a run")

        return compile_graph

    monkeypatch.setattr(compiled, "_counting_backend", broken)
    with pytest.raises(Exception, match="broke in the middle"):
        model(images[:1])  # a new state: a new graph to compile
    assert compiled.STATS.fallback is None and compiled.use_compiled(torch.device("cpu"))


def test_compiled_and_eager_logits_agree_in_fp32_and_bf16(fresh_compiler, monkeypatch, images):
    """Inductor's code for the CPU, against eager: fp32 within 1e-5, bf16 within one bf16 step of the logits.

    In bf16 both round ``m`` and ``q ⊙ m`` at the same points (``emulate_precision_casts``); what may
    still differ is the order of the float32 sum over tokens.
    """
    model = load_model("deit-elliptical").eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv(compiled.COMPILE_ENV, "0")
    with torch.no_grad():
        eager = model(x)
        with precision_scope("bf16", "cpu"):
            eager_bf16 = model(x).float()
    monkeypatch.setenv(compiled.COMPILE_ENV, "force")
    monkeypatch.delenv(compiled.BACKEND_ENV, raising=False)
    with torch.no_grad():
        out = model(x)
        with precision_scope("bf16", "cpu"):
            out_bf16 = model(x).float()
    assert compiled.STATS.graphs == 2 and compiled.STATS.fallback is None
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    step = 2.0**-7 * eager_bf16.abs().max()  # one bf16 step at the logits' scale
    assert (out_bf16 - eager_bf16).abs().max() <= step


# --- precision scopes ------------------------------------------------------------------------------------


def test_an_fp32_scope_inside_bf16_is_fp32(images):
    model = load_model("deit-elliptical").eval()
    with torch.no_grad():
        reference = model(images)
        with precision_scope("bf16", "cpu"):
            assert model(images).dtype == torch.bfloat16
            with precision_scope("fp32", "cpu"):
                inner = model(images)
            with precision_scope("tf32", "cpu"):
                assert model(images).dtype == torch.float32
            verdict = fp32_predictions(model, images)
            assert torch.is_autocast_enabled("cpu")  # the outer scope is restored
    assert inner.dtype == torch.float32
    torch.testing.assert_close(inner, reference)
    assert verdict.tolist() == reference.argmax(1).tolist()


def _switches() -> tuple[str, str, bool]:
    return (
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
        torch.is_autocast_enabled("cpu"),
    )


class _SeesBackward(torch.nn.Module):
    """A model whose input gradient records the precision switches while the backward pass runs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[tuple[str, str, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            x.register_hook(lambda grad: self.seen.append(_switches()))
        return self.model(x)


@pytest.mark.parametrize(("precision", "matmul", "conv"), [("tf32", "tf32", "tf32"), ("fp32", "ieee", "ieee")])
def test_fab_runs_its_backward_inside_the_precision_scope(images, precision, matmul, conv):
    model = _SeesBackward(load_model("deit").eval())
    labels = model.model(images).argmax(1)
    FabTargeted(model, eps=8 / 255, steps=2, target_classes=2).run(images, labels, precision=precision)
    assert model.seen and set(model.seen) == {(matmul, conv, False)}
    assert _switches() == ("none", "tf32", False)  # torch's defaults again after the attack


def test_training_runs_its_backward_inside_the_precision_scope():
    from torch.utils.data import TensorDataset

    from ellrobust.models.training import TrainConfig, train

    model = _SeesBackward(load_model("deit-nano"))
    data = TensorDataset(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    real_forward = model.forward

    def forward(x):  # training images do not require grad: watch the logits' gradient instead
        logits = real_forward(x)
        logits.register_hook(lambda grad: model.seen.append(_switches()))
        return logits

    model.forward = forward
    train(model, data, TrainConfig(epochs=1, batch_size=4, warmup_epochs=0, precision=Precision.TF32))
    assert model.seen and set(model.seen) == {("tf32", "tf32", False)}


def test_collapse_metrics_are_computed_in_float32_outside_autocast(monkeypatch, images):
    """The blocks run in the configured precision; every metric sees float32 and no autocast."""
    import ellrobust.measures.collapse_probe as collapse_module

    seen = []
    real = collapse_module.token_cosine

    def spy(x):
        seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return real(x)

    monkeypatch.setattr(collapse_module, "token_cosine", spy)
    model = load_model("deit-elliptical").eval()
    layers = tuple(range(model.depth))
    fp32 = collapse_metrics(model, images, CollapseConfig(), layers)
    with precision_scope("bf16", "cpu"):  # an enclosing autocast does not reach the metrics either
        bf16 = collapse_metrics(model, images, CollapseConfig(precision="bf16"), layers)
    assert seen and all(flags == (torch.float32, False) for flags in seen)
    for key, values in fp32.items():
        assert bf16[key].dtype == torch.float32
        torch.testing.assert_close(bf16[key], values, rtol=0.05, atol=0.05)


def test_effective_rank_split_over_cores_equals_one_call(monkeypatch):
    from ellrobust.stats import collapse_metrics as metrics

    x = torch.randn(7, 20, 12, dtype=torch.float64)
    gram = metrics.token_gram(x)
    chunks, threads = [], []
    real = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda a: chunks.append(len(a)) or real(a))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    split = metrics.symmetric_eigenvalues(gram)
    monkeypatch.undo()
    assert chunks == [3, 3, 1] and threads == [1, 3]  # one chunk per core, one thread each; then restored
    torch.testing.assert_close(split, torch.linalg.eigvalsh(gram), rtol=1e-12, atol=1e-12)


# --- memory probes ----------------------------------------------------------------------------------------


def test_pass_size_clears_the_cache_after_the_failed_pass_is_released(monkeypatch):
    """``empty_cache`` inside ``except`` would run while the traceback still holds the failed pass's tensors."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(sys.exc_info()[0]))

    def fn(start: int, stop: int):
        if stop - start > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return stop - start

    size = PassSize(8)
    assert size.map(fn, 8) == [2, 2, 2, 2] and size.limit == 2
    assert calls == [None, None]  # once per halving, with no exception being handled


def test_the_memory_estimate_follows_the_attack_precision(images):
    model = load_model("deit-elliptical").eval()
    fp32 = pass_bytes_per_image(model, images, grad=False, precision=Precision.FP32)
    bf16 = pass_bytes_per_image(model, images, grad=False, precision=Precision.BF16)
    assert bf16 < 0.75 * fp32


# --- nothing touches CUDA before the pool forks ------------------------------------------------------------


def test_no_cuda_call_before_the_worker_pool_forks(monkeypatch, tmp_path):
    """With a GPU present (mocked), loading models and decoding must not initialise CUDA: forked workers
    would inherit a CUDA context they cannot use. ``fork_rng()`` without ``devices`` called into every GPU."""
    import ellrobust.engine.runner as engine

    events: list[str] = []
    for name in ("get_rng_state", "set_rng_state", "set_device", "init", "_lazy_init", "synchronize", "current_device"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _name=name, **k: events.append(f"cuda.{_name}"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    class RecordingPool(engine.WorkerPool):
        def __init__(self, *args, **kwargs):
            events.append("fork")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(engine, "WorkerPool", RecordingPool)
    Evaluation(EvalConfig(models=("deit-elliptical", "deit"), n=8, workers=1, sanity=False), tmp_path / "run").run()
    assert "fork" in events
    assert not [e for e in events[: events.index("fork")] if e.startswith("cuda.")]


def test_evaluation_joins_gloo_without_cuda_and_training_binds_its_gpu_for_nccl(monkeypatch):
    import torch.distributed as dist

    from ellrobust.core.distributed import init_distributed

    calls: list[tuple] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    info = init_distributed("cuda")
    assert calls == [("init", "gloo")] and info.joined
    info.bind_device("cuda")  # after the fork
    assert calls[-1] == ("set_device", 1)
    calls.clear()
    init_distributed("cuda", cuda_collectives=True)
    assert calls == [("set_device", 1), ("init", "nccl")]


def test_a_node_decodes_with_the_workers_of_all_its_ranks(monkeypatch, tmp_path):
    """Under torchrun the node's first rank decodes for every rank of the node: with all of their workers."""
    from PIL import Image

    import ellrobust.engine.runner as engine
    from ellrobust.data import load_dataset

    root = tmp_path / "folder"
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (40, 40), (40 * k, 90 * c, 7)).save(root / f"c{c}" / f"{k}.png")
    sizes = []

    class RecordingPool(engine.WorkerPool):
        def __init__(self, workers, shared=None):
            sizes.append(workers)
            super().__init__(workers, shared)

    class NodeRankZero:
        enabled, is_main, local_rank = True, True, 0

        def barrier(self) -> None:
            pass

    monkeypatch.setattr(engine, "WorkerPool", RecordingPool)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    data = load_dataset("imagefolder", None, str(root), 32)
    evaluation = Evaluation(
        EvalConfig(models=("deit-nano",), dataset="imagefolder", data_root=str(root), workers=1), tmp_path / "run"
    )
    store, pool = evaluation._open_store(data, list(range(6)), NodeRankZero())
    with pool:
        assert sizes == [2, 1]  # decoding: both ranks' workers; the run: this rank's
        assert evaluation.startup["decode_workers"] == 2 and store.decoded == 6
    store.close()


# --- --deterministic ---------------------------------------------------------------------------------------


def test_deterministic_mode_holds_during_the_run_and_is_recorded(monkeypatch, tmp_path):
    import ellrobust.measures.clean_accuracy as clean

    seen = []
    real = clean.CleanStage.run

    def spy(self, unit, ctx, seed):
        seen.append((torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        return real(self, unit, ctx, seed)

    monkeypatch.setattr(clean.CleanStage, "run", spy)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    common = dict(models=("deit",), n=8, attacks=(make_request("fgsm"),), eps=(2 / 255,), sanity=False)
    plain = Evaluation(EvalConfig(**common), tmp_path / "run").run()
    strict = Evaluation(EvalConfig(**common, deterministic=True), tmp_path / "run").run()
    assert seen == [(False, None), (True, ":4096:8")]
    assert strict.computed == plain.computed  # other units: nothing reused from the run without it
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["deterministic"] is True
    columns = ["model", "method", "eps", "metric", "value"]
    assert plain.table[columns].equals(strict.table[columns])  # the CPU was deterministic anyway


def test_an_operation_without_a_deterministic_kernel_is_one_line():
    from ellrobust.core.determinism import deterministic_mode

    with pytest.raises(UsageError, match="--deterministic: .* has no deterministic kernel"):
        with deterministic_mode():
            raise RuntimeError(
                "cumsum_cuda_kernel does not have a deterministic implementation, "
                "but you set 'torch.use_deterministic_algorithms(True)'."
            )
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(ValueError):  # other errors are left alone
        with deterministic_mode():
            raise ValueError("something else")
    x = torch.rand(3, 3, requires_grad=True)
    F.linear(x, x).sum().backward()  # torch is back to its defaults
