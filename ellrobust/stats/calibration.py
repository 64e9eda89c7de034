"""Calibration of a classifier's max-softmax confidence, and top-k hits, from per-image numbers.

Two calibration errors, because the literature reports both and they are not interchangeable:

* **ECE** (:func:`expected_calibration_error`, Guo et al. 2017): the L1 expected calibration error
  over 15 *equal-width* bins of the confidence, exactly as torchmetrics'
  ``multiclass_calibration_error(preds, target, num_classes, n_bins=15, norm="l1")`` bins it: an image
  of confidence c falls in bin ``searchsorted(edges, c, side="right") - 1`` with the 16 float32 edges
  of ``torch.linspace(0, 1, 16)``, so a confidence of exactly 1.0 has a 16th bin of its own, as it
  does there. Computed here from (confidence, correct) pairs, since the bootstrap needs nothing else.
* **RMS calibration error** (:func:`rms_calibration_error`): what the Elliptical-Attention paper's
  code reports, ``calib_err(confidence, correct, p='2')`` of hendrycks/natural-adv-examples
  (``calibration_tools.py``, Apache-2.0): images sorted by confidence, *adaptive* bins of 100
  consecutive images (the last one takes the remainder), the squared gap between mean confidence and
  accuracy weighted by the bin's share of the images, summed, square-rooted. That code loops over
  ``range(len(bins) - 1)``, so its last bin (the most confident images) never counts and the weights
  sum to less than 1; this is reproduced on purpose, so the number is the paper's number. Two
  deviations, both where the reference gives no usable number: fewer than 200 images give NaN (the
  reference raises below 100 and returns a vacuous 0 between 100 and 199, where no bin counts), and
  tied confidences are ordered by image (the reference's ``np.argsort`` leaves their order to
  quicksort); without ties the two agree exactly.

Both take optional integer ``weights`` (how often each image counts): a bootstrap resample is the
same images with multiplicities, so :class:`Calibration` bins and sorts once and each resample costs
a few ``bincount`` calls. A non-finite confidence (NaN logits) makes both errors NaN: the images of a
broken model have no calibration to speak of, and the sanity check ``finite_logits`` says why.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Equal-width bins of the expected calibration error (Guo et al. 2017; torchmetrics' ``n_bins``).
ECE_BINS = 15
#: Images per adaptive bin of the RMS calibration error (``beta`` of the paper's ``calib_err``).
RMS_BIN_SIZE = 100
#: Below this many images no calibration interval is claimed (NaN): the RMS error needs two bins of
#: :data:`RMS_BIN_SIZE` to exist at all, and at such n the binning noise of either error dominates.
MIN_CALIBRATION_IMAGES = 2 * RMS_BIN_SIZE
#: Top-k accuracy's k (the paper's Acc@5). With fewer classes, every image is a top-k hit (k is
#: clipped to the number of classes, as ``timm.utils.accuracy`` clips it).
TOP_K = 5


#: torchmetrics' bin edges: ``torch.linspace(0, 1, 16)`` in float32 (numpy's float32 linspace differs in
#: the last bit), as float64, where float32 confidences compare with them exactly as in float32.
EDGES = torch.linspace(0, 1, ECE_BINS + 1, dtype=torch.float32).double().numpy()


def top_k_hits(logits: torch.Tensor, labels: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Per image, whether the label is among the ``k`` largest logits (False where a logit is not finite)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(1) & logits.isfinite().all(1)


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Per image, the largest softmax probability (the confidence both calibration errors bin), in float32."""
    return logits.float().softmax(dim=1).max(1).values


class Calibration:
    """One model's (confidence, correct) on a set of images, binned and sorted once for many weightings."""

    def __init__(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        self.confidence = np.asarray(confidence, dtype=np.float64)
        self.correct = np.asarray(correct, dtype=np.float64)
        if self.confidence.shape != self.correct.shape or self.confidence.ndim != 1:
            raise ValueError(f"confidence {self.confidence.shape} and correct {self.correct.shape} must be equal 1-d")
        self.finite = bool(np.isfinite(self.confidence).all())
        self._bins = np.searchsorted(EDGES, self.confidence, side="right") - 1 if self.finite else None
        self._order = np.argsort(self.confidence, kind="stable")

    @property
    def n(self) -> int:
        return self.confidence.size

    def _weights(self, weights: np.ndarray | None) -> np.ndarray:
        return np.ones(self.n) if weights is None else np.asarray(weights, dtype=np.float64)

    def ece(self, weights: np.ndarray | None = None) -> float:
        """The L1 expected calibration error over :data:`ECE_BINS` equal-width bins (NaN with no image).

        Σ_bins (count / N) · |accuracy − mean confidence| = Σ_bins |Σ correct − Σ confidence| / N.
        """
        w = self._weights(weights)
        total = w.sum()
        if not self.finite or total == 0:
            return math.nan
        slots = ECE_BINS + 1
        gap = np.bincount(self._bins, w * (self.correct - self.confidence), minlength=slots)
        return float(np.abs(gap).sum() / total)

    def rms(self, weights: np.ndarray | None = None, bin_size: int = RMS_BIN_SIZE) -> float:
        """The paper's RMS calibration error over adaptive bins of ``bin_size`` images (NaN below two bins).

        The weighted images, in order of confidence, are the sorted images each repeated its weight
        times; a bin's sums are differences of prefix sums of that sequence, read at multiples of
        ``bin_size`` without building it.
        """
        w = self._weights(weights)[self._order]
        total = int(round(w.sum()))
        bins = total // bin_size
        if not self.finite or bins < 2:
            return math.nan
        conf, hit = self.confidence[self._order], self.correct[self._order]
        before = np.concatenate([[0.0], np.cumsum(w)])  # images counted before each sorted image
        starts = np.arange(bins) * bin_size  # where each bin starts; the last bin is never counted
        j = np.searchsorted(before[1:], starts, side="left")  # the sorted image each start falls in
        taken = starts - before[j]  # how many of its copies lie before the start

        def prefix(values: np.ndarray) -> np.ndarray:
            return np.concatenate([[0.0], np.cumsum(w * values)])[j] + taken * values[j]

        gaps = np.diff(prefix(conf) - prefix(hit)) / bin_size
        return float(math.sqrt(np.sum(bin_size / total * gaps**2)))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """ECE of one model's max-softmax ``confidence`` and top-1 ``correct`` flags (see :class:`Calibration`)."""
    return Calibration(confidence, correct).ece()


def rms_calibration_error(confidence: np.ndarray, correct: np.ndarray, bin_size: int = RMS_BIN_SIZE) -> float:
    """The paper's RMS calibration error (``calib_err(..., p='2')``; see :class:`Calibration`)."""
    return Calibration(confidence, correct).rms(bin_size=bin_size)
