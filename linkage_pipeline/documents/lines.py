"""Text lines from a pretrained detector: the PP-OCR DB text detector shipped inside the rapidocr wheel.

The model is ``PP-OCRv6_det_small.onnx`` from ``rapidocr/models/`` (PaddleOCR's PP-OCR text detector, Apache
License 2.0, converted to ONNX and packaged by RapidOCR, Apache License 2.0). It is read from the installed wheel,
never downloaded, and run on onnxruntime's CPU provider.

DB (differentiable binarisation) predicts, for every pixel, the probability that it lies inside a shrunk text
line. Here the page is scaled so its longer side is at most 960 pixels (PaddleOCR's default detection size)
unless that would shrink the type below :data:`MIN_DETECTION_TYPE` pixels, thresholded at 0.3, and each
connected blob of the map is one line: its box is grown back by DB's unclip distance (``area * 1.5 /
perimeter``), scaled to the page, and its score is the mean probability inside the blob (blobs under 0.6 are
dropped: PaddleOCR's ``box_thresh``). The thresholds are PaddleOCR's defaults, not fitted to our pages.

The detector only finds lines. Which line is a title, a heading, a firm name or other text, and where a line of
several names is cut, is decided afterwards (:mod:`linkage_pipeline.documents.layout`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: Longest page side the detector sees (PaddleOCR's ``det_limit_side_len`` with ``det_limit_type='max'``).
DETECTION_SIDE = 960
#: Smallest type size (pixels, across the line) the page is shrunk to; larger pages are scaled less.
MIN_DETECTION_TYPE = 20.0
#: Largest side the detector is ever run at (bounds the cost of a huge scan of tiny type).
MAX_DETECTION_SIDE = 2048
#: DB post-processing: probability threshold, minimum mean probability of a line, unclip ratio (PaddleOCR's).
PROB_THRESHOLD = 0.3
BOX_THRESHOLD = 0.6
UNCLIP_RATIO = 1.5
MODEL_FILE = "PP-OCRv6_det_small.onnx"


class DetectorUnavailable(RuntimeError):
    """The PP-OCR detector model could not be found or loaded."""


@dataclass(frozen=True)
class Line:
    """One detected text line in page pixels (``x1``/``y1`` exclusive) with its mean DB probability."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float


def model_path() -> Path:
    """Path of the DB detector inside the installed rapidocr wheel.

    Raises:
        DetectorUnavailable: If rapidocr is not installed or its wheel lacks the model.
    """
    try:
        import rapidocr
    except ImportError as exc:  # pragma: no cover - rapidocr is a dependency
        raise DetectorUnavailable("the ppocr detector needs the rapidocr package (pip install rapidocr)") from exc
    path = Path(rapidocr.__file__).parent / "models" / MODEL_FILE
    if not path.is_file():
        raise DetectorUnavailable(f"{path} not found: the installed rapidocr wheel does not ship {MODEL_FILE}")
    return path


@lru_cache(maxsize=1)
def _session():  # noqa: ANN202 - onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DetectorUnavailable(f"could not load {model_path()}: {exc}") from exc


def detection_scale(height: int, width: int, type_size: float) -> float:
    """Scale at which the detector sees the page (see the module docstring)."""
    scale = min(1.0, DETECTION_SIDE / max(height, width))
    if type_size * scale < MIN_DETECTION_TYPE:
        scale = min(1.0, MIN_DETECTION_TYPE / max(type_size, 1.0))
    return min(scale, MAX_DETECTION_SIDE / max(height, width))


def probability_map(gray: np.ndarray, scale: float) -> np.ndarray:
    """DB text probability (float32, the scaled page's size rounded to multiples of 32) of a uint8 grey page."""
    h, w = gray.shape
    nh = max(32, int(round(h * scale / 32)) * 32)
    nw = max(32, int(round(w * scale / 32)) * 32)
    small = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x = (small.astype(np.float32) / 255.0 - 0.5) / 0.5
    x = np.repeat(x[None, None], 3, axis=1)
    session = _session()
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return np.asarray(out[0, 0], dtype=np.float32)


def lines_from_map(prob: np.ndarray, page_shape: tuple[int, int]) -> list[Line]:
    """Line boxes (page pixels) from a DB probability map: one per connected blob above the threshold."""
    h, w = page_shape
    ph, pw = prob.shape
    sx, sy = w / pw, h / ph
    mask = (prob > PROB_THRESHOLD).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 1:
        return []
    sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=n)
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if min(bw, bh) < 2:
            continue
        score = float(sums[i] / area)
        if score < BOX_THRESHOLD:
            continue
        # DB shrinks each line by D = A (1 - r^2) / L when training; it is grown back by A * ratio / L.
        d = bw * bh * UNCLIP_RATIO / (2.0 * (bw + bh))
        x0 = max(0, int(np.floor((x - d) * sx)))
        y0 = max(0, int(np.floor((y - d) * sy)))
        x1 = min(w, int(np.ceil((x + bw + d) * sx)))
        y1 = min(h, int(np.ceil((y + bh + d) * sy)))
        if x1 > x0 and y1 > y0:
            out.append(Line(x0, y0, x1, y1, score))
    return out


def detect_lines(gray: np.ndarray, type_size: float) -> list[Line]:
    """Text lines of a uint8 grey page (dark ink on light paper) whose type is about ``type_size`` pixels."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"gray must be a uint8 (H, W) array, got {gray.dtype} {gray.shape}")
    scale = detection_scale(*gray.shape, type_size)
    return lines_from_map(probability_map(gray, scale), gray.shape)
