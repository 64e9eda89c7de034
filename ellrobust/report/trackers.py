"""``eval --log SCHEME:WHERE``: a finished run's numbers, verdict and figures in an experiment tracker.

Groups keep their runs in TensorBoard or MLflow and compare them there, so after the run every row of
``results.csv`` is logged as one scalar (step 0: a row is one number, not a curve), the verdict's
claims as text, and the report's figures as images. A registry maps each scheme to its back end
(``tensorboard:DIR``, ``mlflow:URI``); a back end's package is an optional extra, checked with the
scheme before the run starts, so a typo or a missing package costs nothing.

**Scalar names** are built from a row's key, so the same number of two runs lands on the same chart:
``<metric>/<model>/<method>`` then, where the row has them, ``vs_<other model>`` (a paired row),
``eps255_<ε in /255 units>``, ``severity_<s>``, ``layer_<l>``, ``m_grad_<mode>``, ``precision_<p>``;
``params_<8 hex digits of the canonical params JSON>`` is added only to rows of the run that differ in
nothing else (two PGD settings side by side). The metric comes first because TensorBoard groups charts
by the part before the first ``/``. Characters outside ``A-Z a-z 0-9 _ . -`` become ``_`` (what
MLflow accepts in a name and every file system in a path). Example:
``robust_accuracy/deit-elliptical/pgd/eps255_8/m_grad_detach``.

TensorBoard (``torch.utils.tensorboard``) writes to ``DIR/<run folder name>`` and stores scalars as
float32. MLflow logs a run named after the run folder in the experiment ``ellrobust`` of the
tracking URI; a local path or ``file:`` URI is a file store, which runs offline (MLflow 3 asks for an
opt-in, ``MLFLOW_ALLOW_FILE_STORE``, which is given for the call since the user named the store).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ellrobust.core.errors import UsageError
from ellrobust.core.files import check_destination
from ellrobust.core.registry import Registry
from ellrobust.request.spec import Caller, options_of
from ellrobust.results import KEY_FIELDS, load_results, records
from ellrobust.results import row_key as results_row_key

#: The MLflow experiment every run is logged to.
EXPERIMENT = "ellrobust"
#: MLflow's largest batch of metrics in one call.
_BATCH = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class Logged:
    """What a run gives a tracker.

    Attributes:
        name: The run's name there (its folder's name).
        scalars: Scalar name → value, one per row of ``results.csv``.
        verdict: The verdict's claims, as markdown lines.
        figures: Figure name → PNG file (valid while :func:`log_run` runs).
    """

    name: str
    scalars: dict[str, float]
    verdict: str
    figures: dict[str, Path]


@dataclass(frozen=True)
class Backend:
    """A tracker: what writes to it, and the package and extra it needs."""

    write: Callable[[str, Logged], str]
    package: str
    extra: str


@dataclass(frozen=True)
class Tracker:
    """One ``SCHEME:WHERE`` of ``--log``, its scheme known and its package installed."""

    scheme: str
    where: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.where}"


TRACKERS: Registry[Backend] = Registry("tracker")


# --- names ------------------------------------------------------------------------------------------


def _safe(text: object) -> str:
    part = _UNSAFE.sub("_", str(text))
    return part.replace(".", "_") if set(part) <= {"."} else part


def _base_name(record: dict) -> str:
    """The name of a row without its params (see the module's docstring)."""
    key = dict(zip(KEY_FIELDS, results_row_key(record), strict=True))
    parts = [record["metric"], key["model"], key["method"]]
    if key["baseline"]:
        parts.append(f"vs_{key['baseline']}")
    if key["eps"] is not None:
        parts.append(f"eps255_{round(key['eps'] * 255, 6):.6g}")
    parts += [f"{field}_{key[field]}" for field in ("severity", "layer") if key[field] is not None]
    parts += [f"{field}_{key[field]}" for field in ("m_grad", "precision") if key[field]]
    return "/".join(_safe(p) for p in parts)


def _digest(record: dict) -> str:
    """8 hex digits of a row's canonical params (as its key holds them)."""
    params = results_row_key(record)[KEY_FIELDS.index("params")]
    return hashlib.sha256(params.encode()).hexdigest()[:8]


def scalar_names(rows: list[dict]) -> list[str]:
    """Each row's scalar name, in order; params are named only where two rows would share a name."""
    bases = [_base_name(r) for r in rows]
    shared = {b for b in bases if bases.count(b) > 1}
    names = [f"{base}/params_{_digest(r)}" if base in shared else base for base, r in zip(bases, rows, strict=True)]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"two rows of the run would be logged as {twice!r}; give the models names that differ.")
    return names


# --- what is logged ---------------------------------------------------------------------------------


def _verdict_text(run_dir: Path) -> str:
    from ellrobust.report.claim_sentences import claim_line
    from ellrobust.report.writer import load_runs
    from ellrobust.verdict.rules import claims, elliptical_models

    run = load_runs([run_dir])[0]
    found = claims(run.table, elliptical_models(run.meta))
    if not found:
        return "No verdict: the run needs an elliptical and a plain model evaluated together."
    return "\n".join(f"- **{c.status.value}**: {claim_line(c)}" for c in found)


@contextlib.contextmanager
def prepared(run_dir: Path) -> Iterator[Logged]:
    """A run folder's :class:`Logged`; its figures are drawn as ``ellrobust report`` draws them, in a
    temporary folder that lasts as long as the context."""
    from ellrobust.report.writer import FIGURES_DIR, write_report

    rows = records(load_results(run_dir))
    scalars = {name: float("nan") if r["value"] is None else float(r["value"])
               for name, r in zip(scalar_names(rows), rows, strict=True)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ellrobust-figures-") as tmp:
        write_report([run_dir], Path(tmp))
        figures = {p.stem: p for p in sorted((Path(tmp) / FIGURES_DIR).glob("*.png"))}
        yield Logged(Path(run_dir).resolve().name, scalars, _verdict_text(run_dir), figures)


# --- requests and logging ---------------------------------------------------------------------------


def requested_trackers(value: object, caller: Caller) -> tuple[Tracker, ...]:
    """The trackers ``--log`` (or ``log=``) asks for, refused before the run if one cannot be used.

    Raises:
        UsageError: not ``SCHEME:WHERE``, an unknown scheme, a package that is not installed, or a
            TensorBoard folder that cannot be one.
    """
    option = options_of("eval")["log"]
    label = option.label(caller)
    targets = option.read(value, caller) if value else ()
    out = []
    for target in targets:
        scheme, where = target.split(":", 1)
        try:
            backend = TRACKERS.get(scheme)
        except UsageError as e:
            raise UsageError(f"{label} {target}: {e}") from None
        if importlib.util.find_spec(backend.package) is None:
            raise UsageError(
                f"{label} {target} needs the {backend.package} package; install it with "
                f'pip install "ellrobust[{backend.extra}]".'
            )
        if scheme == "tensorboard":
            check_destination(where, label, folder=True)
        out.append(Tracker(scheme, where))
    return tuple(out)


def log_run(run_dir: Path, trackers: tuple[Tracker, ...], label: str = "--log") -> list[str]:
    """Log a finished run to every tracker; returns one line per tracker saying where it went.

    Raises:
        UsageError: a tracker failed; the run folder is complete, and the same command run again
            reuses it and logs it.
    """
    if not trackers:
        return []
    lines = []
    with prepared(Path(run_dir)) as logged:
        for tracker in trackers:
            try:
                where = TRACKERS.get(tracker.scheme).write(tracker.where, logged)
            except Exception as e:  # any failure of a third-party writer after a finished run: say it in one line
                raise UsageError(
                    f"{label} {tracker}: logging failed ({type(e).__name__}: {' '.join(str(e).split())[:300]}); the "
                    f"results are in {run_dir}: fix the destination and run the same command again, which reuses them."
                ) from None
            figures = f"{len(logged.figures)} figure{'s' if len(logged.figures) != 1 else ''}"
            lines.append(f"logged: {len(logged.scalars)} numbers, the verdict and {figures} to {where}")
    return lines


# --- back ends --------------------------------------------------------------------------------------


def _tensorboard(where: str, logged: Logged) -> str:
    """Scalars, the verdict (text) and the figures (images) in ``WHERE/<run name>``, step 0."""
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(where).expanduser() / logged.name
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for name, value in logged.scalars.items():
            writer.add_scalar(name, value, global_step=0)
        writer.add_text("verdict", logged.verdict, global_step=0)
        for name, path in logged.figures.items():
            writer.add_image(f"figures/{name}", imread(path)[..., :3], global_step=0, dataformats="HWC")
    finally:
        writer.close()
    return f"TensorBoard {folder}"


def mlflow_uri(where: str) -> str:
    """The tracking URI of ``WHERE``: a local path or a relative ``file:`` URI as an absolute ``file:`` URI."""
    parsed = urlparse(where)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        return Path(unquote(parsed.path or where)).expanduser().resolve().as_uri()
    return where


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3's opt-in to the file store, for this call alone, when the user named a ``file:`` store."""
    if not uri.startswith("file:"):
        yield
        return
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


def _mlflow(where: str, logged: Logged) -> str:
    """A run of the experiment ``ellrobust``: metrics (step 0), ``verdict.md`` and ``figures/*.png`` as artifacts."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri(where)
    with _file_store_allowed(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        run_id = client.create_run(experiment_id, run_name=logged.name).info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(name, value, now, 0) for name, value in logged.scalars.items()]
            for start in range(0, len(metrics), _BATCH):
                client.log_batch(run_id, metrics=metrics[start : start + _BATCH])
            client.log_text(run_id, logged.verdict + "\n", "verdict.md")
            for path in logged.figures.values():
                client.log_artifact(run_id, str(path), "figures")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id)
    return f"MLflow {uri} (experiment {EXPERIMENT}, run {run_id})"


TRACKERS.add("tensorboard", Backend(_tensorboard, "tensorboard", "tensorboard"))
TRACKERS.add("mlflow", Backend(_mlflow, "mlflow", "mlflow"))
