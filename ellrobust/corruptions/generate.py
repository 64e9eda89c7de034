"""Corruptions generated on the fly with ``imagecorruptions-imaug``, reproducibly and in parallel.

Reproducibility: every image gets its own seed, derived from the run seed, the corruption, the
severity and the image's index in the dataset (:func:`image_seed`). The same command therefore gives
the same images whatever the batch size, the number of workers, the models or the ``--n`` subset.
Most corruptions draw from NumPy's global generator, which is seeded around each call and then
restored, so the caller's random state is left as it was. ``glass_blur`` (numba) and
``impulse_noise`` (scikit-image) draw from generators of their own and take the seed as an argument
(:attr:`~ellrobust.corruptions.catalog.Corruption.seed_argument`).

Pixels: datasets yield float CHW images in [0, 1]; ``imagecorruptions`` works on uint8 HWC images.
An image is rounded to uint8, corrupted by ``imagecorruptions.corrupt`` itself (so its output is the
library's, bit for bit) and scaled back to [0, 1]. ``corrupt`` ends with ``np.uint8(...)`` of the float
result, a truncation, exactly as make_imagenet_c.py's ``np.uint8(img)`` before it saves a file; the
``imagenet-c`` protocol then encodes that uint8 image as the released files were encoded (PIL JPEG,
quality 85, :func:`jpeg_round_trip`) and decodes it, in the worker that corrupted it, so the models see
the pixels a released ImageNet-C file holds; ``imagenet-c-raw`` skips the round trip.

Image size: the library refuses images under 32 px. Every corruption × severity was checked to keep
the shape of 32×32 images (the embedded digits and CIFAR-10), of odd and non-square sizes (33, 35×47,
64×40) and of 224 and 299 px images; the fork's ``frost``, ``zoom_blur`` and ``snow`` crop their
layers to the input size, so nothing is resized here, and a test holds every registered corruption
to that on 32 px images.

Parallelism: one image is one task (:class:`GenerateTask`) for the run's worker pool, which reads the
clean image from the run's image store, so a unit of 16 images still keeps every worker busy, and the
stage feeds each batch to every model of the run: an image is corrupted once per run, not once per
model. With ``--cache`` a finished batch is written to disk
(:class:`~ellrobust.corruptions.cache.ChunkCache`) and later runs read it back instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ellrobust.core.errors import UsageError
from ellrobust.core.registry import Registry
from ellrobust.core.workers import SHARED
from ellrobust.corruptions.batches import BatchPlan
from ellrobust.corruptions.cache import ChunkCache
from ellrobust.corruptions.catalog import CORRUPTIONS
from ellrobust.corruptions.protocol import CorruptionProtocol, resolve_protocol
from ellrobust.data.image_store import image_name

#: ``imagecorruptions.corrupt`` rejects smaller images.
MIN_SIZE = 32

#: Package that generates the images; its version is part of every cache key and result row.
LIBRARY = "imagecorruptions-imaug"


def library_version() -> str:
    """The installed ``imagecorruptions-imaug`` version (metadata only: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(LIBRARY)
    except PackageNotFoundError:
        return "unknown"


def image_seed(run_seed: int, corruption: str, severity: int, index: int) -> int:
    """A 32-bit seed for one image (NumPy and numba's ``np.random.seed`` both take uint32)."""
    digest = hashlib.sha256(f"{run_seed}:{corruption}:{severity}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator for one call and restore the previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def corrupt_image(
    image: np.ndarray,
    corruption: str,
    severity: int,
    seed: int,
    protocol: CorruptionProtocol | str = CorruptionProtocol.IMAGENET_C,
) -> np.ndarray:
    """Corrupt one uint8 HWC RGB image with ``protocol``'s constants; same shape and dtype out.

    ``imagenet-c`` (the default) also gives the image the released files' JPEG round trip, ``imagenet-c-raw``
    does not; ``auto`` resolves on the image's larger side (:func:`~ellrobust.corruptions.protocol.resolve_protocol`).

    Raises:
        UsageError: unknown corruption or protocol, or an image the protocol does not take
            (ImageNet-C: under 32 px; CIFAR-10-C: see :func:`ellrobust.corruptions.cifar10c.corrupt`).
    """
    generate = GENERATORS.get(resolve_protocol(protocol, max(image.shape[:2])))
    return generate(image, corruption, severity, seed)


def _imagenet_c(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """ImageNet-C's constants: ``imagecorruptions.corrupt`` itself, seeded (module docstring)."""
    spec = CORRUPTIONS.get(corruption)
    if min(image.shape[:2]) < MIN_SIZE:
        raise UsageError(
            f"corruptions need images of at least {MIN_SIZE}×{MIN_SIZE} px (got {image.shape[1]}×{image.shape[0]})."
        )
    from imagecorruptions import corrupt

    kwargs = {"seed": seed} if spec.seed_argument else {}
    with _numpy_seeded(seed):
        return corrupt(image, severity=severity, corruption_name=spec.name, **kwargs)


#: make_imagenet_c.py saves every corrupted image with PIL at this JPEG quality (with ``optimize=True``).
RELEASED_JPEG_QUALITY = 85


def jpeg_round_trip(image: np.ndarray, quality: int = RELEASED_JPEG_QUALITY) -> np.ndarray:
    """Encode a uint8 HWC RGB image as make_imagenet_c.py saves one and decode it again.

    PIL's encoder with make_imagenet_c.py's settings (quality 85, ``optimize=True``, which only shrinks the
    Huffman tables, and PIL's default 4:2:0 chroma subsampling at that quality), then PIL's decoder, as
    any reader of the released ``.JPEG`` files decodes them.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"), dtype=np.uint8)


def _imagenet_c_released(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """ImageNet-C as released: the library's corrupted uint8 image through the files' JPEG q85 round trip."""
    return jpeg_round_trip(_imagenet_c(image, corruption, severity, seed))


def _cifar_10_c(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """CIFAR-10-C's constants; imported on first use, like ``imagecorruptions`` (OpenCV, numba)."""
    from ellrobust.corruptions.cifar10c import corrupt

    return corrupt(image, corruption, severity, seed)


#: One generator per concrete protocol: (uint8 HWC image, corruption, severity, seed) → uint8 HWC image.
GENERATORS: Registry[Callable[[np.ndarray, str, int, int], np.ndarray]] = Registry("corruption protocol")
GENERATORS.add(CorruptionProtocol.IMAGENET_C, _imagenet_c_released)
GENERATORS.add(CorruptionProtocol.IMAGENET_C_RAW, _imagenet_c)
GENERATORS.add(CorruptionProtocol.CIFAR_10_C, _cifar_10_c)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Float CHW in [0, 1] → uint8 HWC, rounded (not truncated) to the nearest level.

    NumPy, not torch: for one small image, torch's intra-op thread pool costs more than the work
    (milliseconds per image on a busy machine, more than most corruptions themselves).
    """
    pixels = np.clip(image.detach().cpu().numpy(), 0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.rint(pixels).astype(np.uint8).transpose(1, 2, 0))


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [0, 1] (copied: library outputs and memory maps may be read-only)."""
    return torch.tensor(images).permute(0, 3, 1, 2).float().div(255)


def corrupt_tensor(image: torch.Tensor, corruption: str, severity: int, seed: int) -> torch.Tensor:
    """Corrupt one float CHW image in [0, 1]; returns float CHW in [0, 1] (multiples of 1/255)."""
    return from_uint8(corrupt_image(to_uint8(image), corruption, severity, seed)[None])[0]


#: Corruptions that compile code on first use (numba): run once before the workers fork.
_COMPILED = frozenset({"glass_blur"})


def warm_up(corruption: str, severity: int, protocol: str, image_size: int) -> None:
    """Import the generator and compile what it compiles, in this process, before workers fork.

    ``glass_blur`` compiles its numba kernel on first use (about a second, once per argument type,
    and its severities use two types). Compiled here, it is inherited by every forked worker instead
    of being compiled again in each one.
    """
    import imagecorruptions  # noqa: F401  (OpenCV, numba and scikit-image load once, here)

    if corruption in _COMPILED:
        corrupt_image(np.zeros((MIN_SIZE, MIN_SIZE, 3), np.uint8), corruption, severity, 0, protocol)


@dataclass(frozen=True)
class GenerateTask:
    """Corrupt the clean image at one position of the run's image store (in a worker, or inline)."""

    position: int
    corruption: str
    severity: int
    seed: int
    protocol: str

    def __call__(self) -> np.ndarray:
        store = SHARED["store"]
        return corrupt_image(store.uint8_hwc(self.position), self.corruption, self.severity, self.seed, self.protocol)[
            None
        ]

    def describe(self) -> str:
        return f"corrupting {image_name(self.position)} ({self.corruption}, severity {self.severity})"


@dataclass(frozen=True)
class CachedTask:
    """Read a batch of corrupted images that an earlier run stored in ``--cache``."""

    path: Path

    def __call__(self) -> np.ndarray:
        cached = ChunkCache.load(self.path)
        if cached is None:
            raise UsageError(
                f"the cached batch {str(self.path)!r} became unreadable during the run; delete it and re-run."
            )
        return cached[0]


class GeneratedSource:
    """Corruptions generated from the run's own (clean) images, optionally cached on disk.

    AlexNet normalisation applies when the clean data are ImageNet under ImageNet-C's constants
    (``imagenet-c`` or ``imagenet-c-raw``): an ``imagefolder`` dataset with 1000 classes (the AlexNet
    errors were measured on ImageNet-C, not on any folder of images).

    The rows' params name the protocol and, for ``imagenet-c``, the JPEG quality of its round trip
    (``jpeg_quality``), and so does the cache key: images of one protocol are never read back for another,
    nor units of a run folder that generated ``imagenet-c`` without the round trip reused.
    """

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.label = f"{LIBRARY} {library_version()}"
        self.protocol = ctx.corruption_protocol
        released = self.protocol == CorruptionProtocol.IMAGENET_C
        self.params = {"protocol": self.protocol} | ({"jpeg_quality": RELEASED_JPEG_QUALITY} if released else {})
        self.imagenet = (
            ctx.data.spec.name == "imagefolder"
            and ctx.data.num_classes == 1000
            and self.protocol in (CorruptionProtocol.IMAGENET_C, CorruptionProtocol.IMAGENET_C_RAW)
        )
        cfg = ctx.config
        library = f"{self.label} {self.protocol}" + (f" jpeg q{RELEASED_JPEG_QUALITY}" if released else "")
        self.cache = (
            ChunkCache.for_run(cfg.cache_dir, data_digest=ctx.data.digest, run_seed=cfg.seed, library=library)
            if cfg.cache_dir is not None
            else None
        )

    def check(self, corruptions: tuple[str, ...], severities: tuple[int, ...]) -> None:
        """Fail early, with one line, on images the protocol cannot corrupt.

        A corruption that cannot be generated at all (ImageNet-3DCC's) is refused earlier, with the
        request (:class:`~ellrobust.request.config.EvalConfig`), before any model or image is loaded.
        """
        from ellrobust.corruptions.cifar10c import MAX_SIDE, MIN_SIDE

        size, name = self.ctx.image_size, self.ctx.data.spec.name
        low, high = (MIN_SIDE, MAX_SIDE) if self.protocol == CorruptionProtocol.CIFAR_10_C else (MIN_SIZE, None)
        if size < low or (high is not None and size > high):
            limits = f"{low}–{high} px" if high is not None else f"at least {low} px"
            raise UsageError(
                f"dataset {name!r} has {size} px images; the {self.protocol} corruption protocol needs {limits} "
                "(see --corruption-protocol)."
            )

    def reserve(self, plans) -> None:
        """With ``--cache``, refuse at once when its disk cannot take every batch that ``plans`` will store."""
        stored = [plan for plan in plans if plan.on_finish is not None]  # a generated batch is cached when it finishes
        if self.cache is not None and stored:
            self.cache.require_space(
                sum(plan.generated for plan in stored), len(stored), int(np.prod(self.ctx.store.image_shape))
            )

    def batch_plan(self, corruption: str, severity: int, positions: list[int]) -> BatchPlan:
        idx = [self.ctx.indices[p] for p in positions]
        path = self.cache.path(corruption, severity, idx) if self.cache is not None else None
        if path is not None and path.is_file():
            return BatchPlan([CachedTask(path)])
        seed = self.ctx.config.seed
        tasks = [
            GenerateTask(p, corruption, severity, image_seed(seed, corruption, severity, i), self.protocol)
            for p, i in zip(positions, idx, strict=True)
        ]
        store = None if path is None else (lambda images, labels, path=path: self.cache.store(path, images, labels))
        return BatchPlan(tasks, generated=len(tasks), on_finish=store)
