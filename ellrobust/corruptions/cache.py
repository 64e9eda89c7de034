"""On-disk cache of generated corrupted batches (``--cache DIR``).

Corrupting ImageNet-sized images costs far more than a forward pass of a small model, and the
images do not depend on the models: a cached batch is reused by any later run on the same data.

A batch file is named by a hash of everything its pixels depend on: the dataset digest, the
corruption, the severity, the run seed, the dataset indices of its images and the
``imagecorruptions-imaug`` version. A different ``--n``, seed or library version therefore misses the
cache instead of reading stale images. Files are ``.npz`` (uint8 NHWC images + int64 labels),
written atomically so that an interrupted or concurrent run never leaves half a file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ellrobust.core.files import atomic_write, require_free_space

#: Bump when the file format or the generation procedure changes.
CACHE_FORMAT = 1
#: Bytes of a batch file besides its pixels and labels (zip and .npy headers), rounded up.
FILE_OVERHEAD = 1024


@dataclass(frozen=True)
class ChunkCache:
    """A cache folder plus the run-wide part of every key (data, seed, library)."""

    root: Path
    run_key: str

    @classmethod
    def for_run(cls, root: str | Path, *, data_digest: str, run_seed: int, library: str) -> ChunkCache:
        ident = {"format": CACHE_FORMAT, "data": data_digest, "seed": run_seed, "library": library}
        return cls(Path(root).expanduser(), json.dumps(ident, sort_keys=True))

    def path(self, corruption: str, severity: int, indices: list[int]) -> Path:
        """The file of one batch: ``<root>/<corruption>/s<severity>/<hash>.npz``."""
        h = hashlib.sha256(self.run_key.encode())
        h.update(f"|{corruption}|{severity}|".encode())
        h.update(np.asarray(indices, dtype=np.int64).tobytes())
        return self.root / corruption / f"s{severity}" / f"{h.hexdigest()[:32]}.npz"

    @staticmethod
    def load(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached batch, or None when absent or unreadable (it is then regenerated)."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as f:
                return f["images"], f["labels"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None

    def store(self, path: Path, images: np.ndarray, labels: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, images=images, labels=labels)
        atomic_write(path, buf.getvalue())

    def require_space(self, images: int, batches: int, image_bytes: int) -> None:
        """Refuse at once when the cache's disk cannot take ``batches`` new files holding ``images`` images.

        Called before generation starts: a cache that fills its disk would otherwise stop the run in
        the middle of a unit (one line, but after the work), and a run should not fill a disk anyway.
        """
        needed = images * (image_bytes + np.dtype(np.int64).itemsize) + batches * FILE_OVERHEAD
        require_free_space(
            self.root,
            needed,
            "corrupted images to cache",
            fix="free space there, pass --cache on a larger disk, or run without --cache",
        )
