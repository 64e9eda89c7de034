"""The run's image store: every selected image decoded and transformed once, kept as pixels.

Every stage, model, attack, budget and corruption of a run reads its batches from here; nothing
decodes an image a second time. At ImageNet scale that removes the dominant cost of a run with
several models and methods (each unit used to re-decode every JPEG through a fresh DataLoader).

* **Pixels**: 8-bit data (image folders, CIFAR-10) is stored as uint8 (N, C, H, W): the DeiT transform
  resizes and crops in PIL's uint8, so ``ToTensor`` gives exact multiples of 1/255 and nothing is lost;
  a 224 px image takes 147 kB instead of 588 kB as float32. Data that is not 8-bit (the embedded digits,
  up-sampled bilinearly) stays float32. Batches come out as float NCHW in [0, 1].
* **Where**: in shared anonymous memory up to a budget (half the available memory by default), beyond
  it in a memory-mapped file (in ``--cache`` when given, else in the run folder, removed when the run
  ends). Both are shared mappings, so the run's forked workers (:mod:`ellrobust.core.workers`) write decoded
  images straight into the store and later read clean images from it to corrupt them, without pickling
  pixels. In-memory tensor datasets need no decoding: the store holds their tensor.
* **Cache**: with ``--cache``, a completed store file is named by everything its pixels depend on
  (dataset digest, selected indices, shape) and reused by later runs instead of decoding again.
* **torchrun**: on-disk data is stored in a file that the first rank of each node fills and the other
  ranks of the node map, so a node decodes each image once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ellrobust.core.errors import DISK_ERRNOS, EllrobustError, UsageError, disk_error, quote
from ellrobust.core.files import atomic_write, require_free_space
from ellrobust.core.readback import read_json, reading
from ellrobust.core.worker_process import task_failed
from ellrobust.core.workers import SHARED, WorkerPool

#: Bump when the store file's layout changes.
STORE_FORMAT = 1
#: Images per decoding task: large enough to amortise a task's overhead, small enough to spread work.
DECODE_CHUNK = 16


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``), or 8 GiB if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 8 << 30


@dataclass
class ImageStore:
    """The selected images of a run, position ``p`` holding dataset index ``indices[p]``.

    Attributes:
        images: (N, C, H, W) uint8 (values k/255) or float32 (values in [0, 1]).
        labels: (N,) int64.
        location: ``memory``, ``tensor`` (the dataset's own tensor) or the path of the mapped file.
        decoded: images decoded by this process and its workers for this run (0 when reused).
    """

    images: np.ndarray
    labels: np.ndarray
    location: str
    decoded: int = 0
    _remove_on_close: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def batch(self, positions: list[int], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Float NCHW images in [0, 1] and int64 labels of ``positions``, on ``device``."""
        rows = np.asarray(positions, dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        y = torch.from_numpy(self.labels[rows])
        device = torch.device(device)
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = x.to(device)
        return (x.float().div_(255) if x.dtype == torch.uint8 else x.float()), y.to(device)

    def uint8_hwc(self, position: int) -> np.ndarray:
        """One image as uint8 HWC, what ``imagecorruptions`` takes (float pixels are rounded)."""
        image = self.images[position]
        if image.dtype != np.uint8:
            image = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.ascontiguousarray(image.transpose(1, 2, 0))

    def put(self, position: int, image: torch.Tensor) -> None:
        """Store one float CHW image in [0, 1]; 8-bit stores check that nothing is lost."""
        pixels = image.detach().cpu().numpy()
        if self.images.dtype == np.uint8:
            levels = np.rint(pixels * 255.0)
            if pixels.size and float(np.abs(pixels * 255.0 - levels).max()) > 1e-3:
                raise UsageError(
                    "the dataset yields pixels that are not multiples of 1/255; register it with pixel_dtype='float32'."
                )
            self.images[position] = np.clip(levels, 0, 255).astype(np.uint8)
        else:
            self.images[position] = pixels

    def close(self) -> None:
        """Release the mapping; a store file made only for this run is removed."""
        path, self._remove_on_close = self._remove_on_close, None
        if path is not None:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)


def image_name(position: int) -> str:
    """The image at a position of the run's selection, for messages: its file, else its dataset index
    (reads :data:`SHARED`)."""
    index = SHARED["indices"][position]
    samples = getattr(SHARED["dataset"], "samples", None)
    return f"image {samples[index][0]!r}" if samples is not None else f"image {index} of the dataset"


@dataclass(frozen=True)
class DecodeTask:
    """Decode and store the images at ``positions`` (run in a worker, or inline); returns their labels.

    An unexpected error names the image it happened on (the task holds :data:`DECODE_CHUNK` of them).
    """

    positions: tuple[int, ...]

    def __call__(self) -> list[tuple[int, int]]:
        dataset: Dataset = SHARED["dataset"]
        store: ImageStore = SHARED["store"]
        indices: list[int] = SHARED["indices"]
        out = []
        for p in self.positions:
            try:
                image, label = dataset[indices[p]]
                store.put(p, image)
            except EllrobustError:
                raise
            except Exception as exc:
                raise task_failed(f"decoding {image_name(p)}", exc) from exc
            out.append((p, int(label)))
        return out

    def describe(self) -> str:
        first, last = image_name(self.positions[0]), image_name(self.positions[-1])
        return (
            f"decoding {first}"
            if len(self.positions) == 1
            else f"decoding {len(self.positions)} images, {first} to {last}"
        )


@dataclass(frozen=True)
class StorePlan:
    """Where a run's store lives, decided before any worker forks (workers inherit the mapping).

    Attributes:
        budget: bytes the store may take in memory; a larger store goes to a file in ``folder``.
        folder: where store files go: ``--cache``'s ``images/`` folder, or the run folder.
        keep: the folder is ``--cache``: files there outlive the run and later runs reuse them.
        shared_file: the ranks of a node share one file (torchrun with data that needs decoding).
    """

    budget: int
    folder: Path
    keep: bool = False
    shared_file: bool = False

    def path(self, key: str) -> Path:
        host = f"-{socket.gethostname()}" if self.shared_file and not self.keep else ""
        return self.folder / f"images-{key}{host}.bin"


def plan_for(cache_dir: str | None, run_dir: Path, memory_budget_gb: float | None, *, shared_file: bool) -> StorePlan:
    """The store plan of a run from its options."""
    budget = int(memory_budget_gb * 2**30) if memory_budget_gb is not None else available_memory() // 2
    if cache_dir is not None:
        return StorePlan(budget, Path(cache_dir).expanduser() / "images", keep=True, shared_file=shared_file)
    return StorePlan(budget, run_dir, shared_file=shared_file)


def store_key(digest: str, indices: list[int], pixel_dtype: str) -> str:
    """A name for a store file from everything its pixels depend on (the digest names data and transform)."""
    h = hashlib.sha256(json.dumps({"format": STORE_FORMAT, "data": digest, "dtype": pixel_dtype}).encode())
    h.update(np.asarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def open_complete(path: Path, pixel_dtype: str) -> ImageStore | None:
    """A finished store file (its sidecar holds shape and labels), mapped read-only; None if absent.

    A store whose sidecar is damaged or whose file does not hold the sidecar's shape (a truncated copy
    of a ``--cache``) is one line naming both files: another run may have it mapped, so it is not
    rewritten behind that run's back.
    """
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    fix = f"delete it and {quote(meta_path.name)}, then run the same command (the images are decoded again)"
    meta = read_json(meta_path, "image store's description", fix)
    dtype = _dtype(pixel_dtype)
    with reading(path, "image store", fix):
        shape = tuple(int(s) for s in meta["shape"])
        labels = np.asarray(meta["labels"], dtype=np.int64)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if min(shape, default=0) <= 0 or len(labels) != shape[0] or path.stat().st_size != expected:
            raise ValueError(f"it holds {path.stat().st_size} bytes, its description {shape}, {len(labels)} labels")
        images = np.memmap(path, dtype=dtype, mode="r", shape=shape)
    return ImageStore(images, labels, str(path))


def _dtype(pixel_dtype: str) -> np.dtype:
    return np.dtype(np.uint8 if pixel_dtype == "uint8" else np.float32)


def allocate(
    dataset: Dataset, indices: list[int], digest: str, pixel_dtype: str, plan: StorePlan
) -> tuple[ImageStore, list[int]]:
    """Create the store and return it with the positions still to decode.

    A tensor dataset is wrapped (no decoding), and a finished store file is mapped read-only (no
    decoding). Otherwise the first image is decoded here to learn the shape, and stored, so it is
    not decoded again.
    """
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors[0], dataset.tensors[1]
        rows = torch.as_tensor(indices, dtype=torch.long)
        return ImageStore(images[rows].numpy(), labels[rows].numpy().astype(np.int64), "tensor"), []
    path = plan.path(store_key(digest, indices, pixel_dtype))
    done = open_complete(path, pixel_dtype)
    if done is not None:
        return done, []
    dtype = _dtype(pixel_dtype)
    first_image, first_label = dataset[indices[0]]
    shape = (len(indices), *tuple(first_image.shape))
    nbytes = int(np.prod(shape)) * dtype.itemsize
    labels = np.zeros(len(indices), dtype=np.int64)
    if nbytes <= plan.budget and not plan.shared_file and not plan.keep:
        buffer = mmap.mmap(-1, nbytes)  # anonymous and MAP_SHARED: forked workers write into it
        store = ImageStore(np.frombuffer(buffer, dtype=dtype).reshape(shape), labels, "memory")
    else:
        try:  # a signal (Ctrl-C, SIGTERM) while the file is new leaves no unfinished file behind
            reserve(path, nbytes)
            images = np.memmap(path, dtype=dtype, mode="r+", shape=shape)
            store = ImageStore(images, labels, str(path), _remove_on_close=None if plan.keep else path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    try:
        store.put(0, first_image)
        labels[0] = int(first_label)
        store.decoded = 1
        todo = list(range(1, len(indices)))
    except BaseException:
        store.close()
        raise
    return store, todo


def reserve(path: Path, nbytes: int) -> None:
    """Create the store file with all its ``nbytes`` allocated on disk, or refuse at once.

    A memory map over a sparse file would fail only when a page is first written, with SIGBUS in
    whichever process writes it (a worker, hours into decoding), if the disk has filled meanwhile.
    So the free space is checked first (the message says how much is needed) and the blocks are then
    allocated (``posix_fallocate``); file systems without it keep the sparse file.
    """

    require_free_space(
        path.parent,
        nbytes,
        "decoded images",
        fix="free space there, pass --cache DIR on a larger disk or raise --memory-budget",
    )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise disk_error(exc, path, "decoded images", nbytes) from exc
        raise
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            if exc.errno in DISK_ERRNOS:
                raise disk_error(exc, path, "decoded images", nbytes) from exc
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, nbytes)  # no allocation on this file system: a sparse file, checked above
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def fill(store: ImageStore, todo: list[int], pool: WorkerPool, advance: Callable[[int], None] | None = None) -> None:
    """Decode ``todo`` through the pool (inline without workers) into ``store``; labels come back.

    A store file is then finished: flushed, with its shape and labels in a sidecar, so that the other
    ranks of the node (and, in ``--cache``, later runs) can map it.
    """
    tasks = (DecodeTask(tuple(todo[i : i + DECODE_CHUNK])) for i in range(0, len(todo), DECODE_CHUNK))
    for done in pool.run(tasks):
        for p, label in done:
            store.labels[p] = label
        if advance is not None:
            advance(len(done))
    store.decoded += len(todo)
    if isinstance(store.images, np.memmap) and store.decoded:
        store.images.flush()
        meta = {"shape": list(store.images.shape), "labels": store.labels.tolist()}
        atomic_write(Path(store.location).with_suffix(".json"), json.dumps(meta) + "\n")
