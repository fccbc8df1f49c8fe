"""OCR engines behind one interface: tesseract (jpn / jpn_vert) and rapidocr (PP-OCR recognition on ONNX).

Each crop is one line of text (a firm name, a heading), so neither engine runs text detection. Engines are
chosen per document source by name (:func:`make_engine`); both read a batch of crops and return one
:class:`OcrResult` per crop, in order. A crop an engine cannot read yields ``OcrResult("", 0.0)`` and a warning
in the log; it never aborts the batch. Texts come back NFKC-normalised without spaces between Japanese
characters, so both engines and both orientations spell ``(株)`` the same way.

Measured on the demo corpus (``synthetic.corpus.generate_corpus(seed=0)``, labelled boxes cut with
``crops.crop_region``; character accuracy = 1 - CER against the NFKC label): rapidocr 0.979 on the
horizontal lists and 0.993 on the vertical directory (re-flowed), tesseract 0.926 and 0.933, at roughly a
third of the cost per crop for rapidocr. Tesseract is weak on old forms (氣, 鑛, 國, 會).

Two rules clean every reading (neither fitted to a corpus): tesseract's lines much thinner than the crop's thickest
are dropped (:data:`MIN_LINE_THICKNESS_SHARE`), and so are ruled lines read as bars (``_RULES``). Each text is
stored with its engine's :attr:`OcrEngine.reader`, so texts of another reader are read again, never mixed.

Nothing is downloaded at run time: tesseract uses the system's traineddata files and rapidocr the ONNX model
bundled in its wheel; a missing file raises :class:`EngineUnavailableError` saying what to install.
"""

from __future__ import annotations

import abc
import csv
import io
import logging
import math
import os
import re
import subprocess
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
from PIL import Image

from linkage_pipeline.documents.crops import encode_png, reflow_vertical
from linkage_pipeline.schema import TEXT_DIRECTIONS

logger = logging.getLogger(__name__)


#: Names accepted by :func:`make_engine`.
ENGINES: tuple[str, ...] = ("tesseract", "rapidocr")

UnicodeForm = Literal["NFC", "NFKC", "NFD", "NFKD"]

#: The recognition model in the rapidocr 3.10 wheel (multilingual PP-OCRv6 small; covers kanji, kana,
#: old forms such as 國 氣 鑛 會).
RAPIDOCR_REC_MODEL = "PP-OCRv6_rec_small.onnx"

# A crop whose grey levels span less than this holds no text; skipping it keeps engines from hallucinating.
_MIN_CONTRAST = 24

# Spaces the engines put between Japanese characters (any non-ASCII character on either side).
_CJK_SPACE = re.compile(r"(?<=[^\x00-\x7f])\s+|\s+(?=[^\x00-\x7f])")
#: Ruled lines read as characters: the vertical bar (U+007C, and U+FF5C, which NFKC folds into it) and the box-drawing
#: block (U+2500-U+257F). A rule beside a column falls inside the crop's margin; re-flowed cell by cell for rapidocr
#: it reads as a bar after every character (九|州|窯|業|...). No firm name prints them, so every reading drops them.
_RULES = re.compile("[|\uff5c\u2500-\u257f]")


class EngineUnavailableError(RuntimeError):
    """An OCR engine cannot run here: a binary, a language file, a package or a model file is missing."""


@dataclass(frozen=True)
class OcrResult:
    """What an engine read from one crop.

    Attributes:
        text: The text, without leading/trailing whitespace; ``""`` when nothing was read.
        confidence: The engine's confidence in [0, 1]; 0.0 when nothing was read.
    """

    text: str
    confidence: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")


EMPTY = OcrResult("", 0.0)


class OcrEngine(abc.ABC):
    """Reads batches of single-line crops.

    Subclasses implement :meth:`_read_batch` for crops already checked to be images with some contrast;
    :meth:`read` does the argument checks, skips blank crops and turns failures into empty results.
    """

    name: ClassVar[str]
    #: Unicode normal form applied to every text read (``None`` keeps the engine's raw output).
    unicode_form: UnicodeForm | None = "NFKC"

    @property
    def reader(self) -> str:
        """What produced a reading: the engine, its version and model, and how its output becomes one line.

        Kept beside every text in ``ocr_texts``: an incremental run reads a crop again when the reader differs
        from the one that read it (a new engine version, model or parsing rule), so one table never mixes
        readers. Subclasses add what changes their output; the base is the engine's name and normal form.
        """
        return f"{self.name} {self._text_rules()}"

    def _text_rules(self) -> str:
        """How :meth:`read` post-processes every engine's text (part of :attr:`reader`)."""
        return f"{self.unicode_form or 'raw'} no-rules"

    def read(self, images: Sequence[Image.Image], *, direction: str) -> list[OcrResult]:
        """Read one line of text from each crop.

        Args:
            images: Crops, any PIL mode and size; each holds one line (or one vertical column) of text.
            direction: ``"horizontal"`` (left to right) or ``"vertical"`` (top to bottom), for all crops.

        Returns:
            One :class:`OcrResult` per crop, in the order given; ``OcrResult("", 0.0)`` for a blank crop
            (grey levels spanning fewer than 24 of 256), one that is not a readable image, or one the engine
            failed on. Texts are in :attr:`unicode_form` (NFKC by default: full-width
            brackets and Latin letters become ASCII, so engines and orientations agree on ``(株)``).

        Raises:
            ValueError: If ``direction`` is not one of ``schema.TEXT_DIRECTIONS``.
            EngineUnavailableError: If the engine cannot run here at all (see :meth:`check_available`).
        """
        if direction not in TEXT_DIRECTIONS:
            raise ValueError(f"direction must be one of {TEXT_DIRECTIONS}, got {direction!r}")
        results: list[OcrResult] = [EMPTY] * len(images)
        todo: list[int] = []
        prepared: list[Image.Image] = []
        for i, img in enumerate(images):
            ready = _prepare(img, i)
            if ready is not None:
                todo.append(i)
                prepared.append(ready)
        if not prepared:
            return results
        try:
            batch = self._read_batch(prepared, direction)
        except EngineUnavailableError:
            raise
        except Exception:  # one bad crop must not lose the batch: retry one by one
            logger.warning(
                "%s: batch of %d crops failed; reading them one by one", self.name, len(prepared), exc_info=True
            )
            batch = [self._read_one_safely(img, direction, i) for i, img in zip(todo, prepared, strict=True)]
        for i, result in zip(todo, batch, strict=True):
            results[i] = self._normalize(result)
        return results

    def _normalize(self, result: OcrResult) -> OcrResult:
        text = result.text
        if self.unicode_form is not None:
            text = unicodedata.normalize(self.unicode_form, text)
        # Japanese names have no spaces; both engines sometimes put one between two characters.
        text = _CJK_SPACE.sub("", _RULES.sub("", text)).strip()
        if text == result.text:
            return result
        return OcrResult(text, result.confidence) if text else EMPTY

    def _read_one_safely(self, img: Image.Image, direction: str, index: int) -> OcrResult:
        try:
            return self._read_batch([img], direction)[0]
        except EngineUnavailableError:
            raise
        except Exception:
            logger.warning("%s: could not read crop %d (%dx%d)", self.name, index, *img.size, exc_info=True)
            return EMPTY

    @abc.abstractmethod
    def _read_batch(self, images: list[Image.Image], direction: str) -> list[OcrResult]:
        """Read crops (mode RGB, non-blank); one result per crop, in order."""

    @abc.abstractmethod
    def check_available(self) -> None:
        """Raise :class:`EngineUnavailableError` saying what to install if this engine cannot run."""


def _check_unicode_form(form: str | None) -> UnicodeForm | None:
    if form not in (None, "NFC", "NFKC", "NFD", "NFKD"):
        raise ValueError(f"unicode_form must be None, 'NFC', 'NFKC', 'NFD' or 'NFKD', got {form!r}")
    return cast("UnicodeForm | None", form)


def _prepare(img: Any, index: int) -> Image.Image | None:
    """RGB copy of a crop worth reading, or None (not an image, empty, or without contrast)."""
    if not isinstance(img, Image.Image):
        logger.warning("crop %d is a %s, not a PIL image; returning empty text", index, type(img).__name__)
        return None
    if img.width == 0 or img.height == 0:
        logger.warning("crop %d is empty (%dx%d); returning empty text", index, img.width, img.height)
        return None
    try:
        rgb = img.convert("RGB")
    except Exception:  # a broken or truncated image file is an unreadable crop
        logger.warning("crop %d could not be decoded; returning empty text", index, exc_info=True)
        return None
    grey = np.asarray(rgb.convert("L"))
    if int(grey.max()) - int(grey.min()) < _MIN_CONTRAST:
        return None
    return rgb


class TesseractEngine(OcrEngine):
    """Tesseract 5, one subprocess per crop, run in a thread pool.

    Horizontal crops are read with ``lang_horizontal`` and ``--psm 7`` (one text line); vertical crops with
    ``lang_vertical`` and ``--psm 5`` (one block of vertical text: jpn_vert reads nothing useful with psm 7).

    Args:
        lang_horizontal: Tesseract language for horizontal crops.
        lang_vertical: Tesseract language for vertical crops.
        workers: Threads (= concurrent tesseract processes); ``None`` means ``os.cpu_count()``.
        timeout_s: Seconds after which one tesseract call is abandoned (its crop reads as empty); 0 = never.
        omp_thread_limit: ``OMP_THREAD_LIMIT`` for the tesseract child processes (this process's own
            environment is left alone), so ``workers`` processes do not each start one OpenMP thread per core;
            ``None`` passes the environment through unchanged.
        unicode_form: Normal form of the texts returned (see :meth:`OcrEngine.read`); ``None`` = raw.
    """

    name = "tesseract"

    def __init__(
        self,
        lang_horizontal: str = "jpn",
        lang_vertical: str = "jpn_vert",
        *,
        workers: int | None = None,
        timeout_s: float = 60.0,
        omp_thread_limit: int | None = 1,
        unicode_form: str | None = "NFKC",
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 or None (= os.cpu_count()), got {workers}")
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0 seconds, got {timeout_s}")
        self.lang_horizontal = lang_horizontal
        self.lang_vertical = lang_vertical
        self.workers = workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.omp_thread_limit = omp_thread_limit
        self.unicode_form = _check_unicode_form(unicode_form)
        self._checked = False
        self._version = ""
        self._lock = threading.Lock()

    @property
    def reader(self) -> str:
        """Tesseract's version, both languages and page segmentation modes, the line rule and the normal form
        (checks that tesseract is available)."""
        self.check_available()
        return (f"tesseract {self._version} {self.lang_horizontal}/psm7 {self.lang_vertical}/psm5 "
                f"lines>={MIN_LINE_THICKNESS_SHARE:g} {self._text_rules()}")

    def __repr__(self) -> str:
        return (
            f"TesseractEngine(lang_horizontal={self.lang_horizontal!r}, "
            f"lang_vertical={self.lang_vertical!r}, workers={self.workers})"
        )

    def check_available(self) -> None:
        """Check the tesseract binary and both language files (once; cached after success).

        Raises:
            EngineUnavailableError: Naming the missing binary or language and the Debian/Ubuntu package.
        """
        if self._checked:
            return
        with self._lock:
            if self._checked:
                return
            try:
                import pytesseract
            except ImportError as exc:
                raise EngineUnavailableError(
                    "the tesseract engine needs the Python package pytesseract: pip install pytesseract"
                ) from exc
            try:
                version = pytesseract.get_tesseract_version()
                langs = set(pytesseract.get_languages(config=""))
            except (pytesseract.TesseractNotFoundError, OSError) as exc:
                raise EngineUnavailableError(
                    f"tesseract binary not found (looked for {pytesseract.pytesseract.tesseract_cmd!r}); "
                    "install it, e.g. apt-get install tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert"
                ) from exc
            for lang in (self.lang_horizontal, self.lang_vertical):
                if lang not in langs:
                    package = "tesseract-ocr-" + lang.replace("_", "-").lower()
                    raise EngineUnavailableError(
                        f"tesseract {version} has no {lang!r} traineddata (has {sorted(langs)}); "
                        f"install it, e.g. apt-get install {package}, or set TESSDATA_PREFIX"
                    )
            logger.info(
                "tesseract %s with %s/%s, %d workers", version, self.lang_horizontal, self.lang_vertical, self.workers
            )
            self._version = str(version)
            self._checked = True

    def _read_batch(self, images: list[Image.Image], direction: str) -> list[OcrResult]:
        self.check_available()
        if direction == "vertical":
            lang, psm = self.lang_vertical, "5"
        else:
            lang, psm = self.lang_horizontal, "7"
        if len(images) == 1 or self.workers == 1:
            return [self._read_one(img, lang, psm, direction) for img in images]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(images)), thread_name_prefix="tesseract") as pool:
            return list(pool.map(lambda img: self._read_one(img, lang, psm, direction), images))

    def _read_one(self, img: Image.Image, lang: str, psm: str, direction: str = "horizontal") -> OcrResult:
        import pytesseract

        # Run the binary directly rather than through pytesseract.image_to_data: this passes the image on
        # stdin (no temporary files) and sets OMP_THREAD_LIMIT for the child only. Without that limit each
        # process starts one OpenMP thread per core and a pool of them on 2 cores ran 18x slower (measured).
        cmd = [pytesseract.pytesseract.tesseract_cmd, "stdin", "stdout", "-l", lang, "--psm", psm, "tsv"]
        env = dict(os.environ)
        if self.omp_thread_limit is not None:
            env["OMP_THREAD_LIMIT"] = str(self.omp_thread_limit)
        try:
            proc = subprocess.run(
                cmd, input=encode_png(img), capture_output=True, env=env, timeout=self.timeout_s or None, check=False
            )
        except subprocess.TimeoutExpired:
            logger.warning("tesseract timed out after %.0f s on a %dx%d crop", self.timeout_s, *img.size)
            return EMPTY
        if proc.returncode != 0:
            logger.warning(
                "tesseract exited with %d on a %dx%d crop: %s",
                proc.returncode,
                *img.size,
                proc.stderr.decode(errors="replace").strip()[-500:],
            )
            return EMPTY
        return _from_tesseract_tsv(proc.stdout.decode("utf-8", errors="replace"), direction=direction)


#: A line tesseract reports in a crop is kept when it is at least this share as thick (across the reading
#: direction) as the crop's thickest line. A layout region holds one line, or columns of one type size; on a narrow
#: vertical column, jpn_vert with --psm 5 often reports a second "line" a few pixels thick at the crop's edge (the
#: margin's paper, a neighbour's stroke) and reads it as words that are not there. Ruby (furigana), at about half
#: the base size, sits at the boundary and is not part of a name either.
MIN_LINE_THICKNESS_SHARE = 0.5


def _from_tesseract_tsv(tsv: str, *, direction: str = "horizontal") -> OcrResult:
    """Join the words of tesseract's TSV output into one line.

    Words of a line much thinner than the crop's thickest (:data:`MIN_LINE_THICKNESS_SHARE`; thickness is the
    width of a vertical line, the height of a horizontal one) are dropped. Confidence is the mean confidence of
    the words kept, weighted by word length, divided by 100.
    """
    rows = list(csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE))
    side = "width" if direction == "vertical" else "height"
    thickness: dict[tuple[str | None, ...], int] = {}
    for row in rows:
        if row.get("level") == "4":
            try:
                thickness[_line_key(row)] = int(row.get(side) or 0)
            except ValueError:
                continue
    thickest = max(thickness.values(), default=0)
    words: list[str] = []
    weights: list[float] = []
    confs: list[float] = []
    for row in rows:
        text = (row.get("text") or "").strip()
        try:
            conf = float(row.get("conf") or -1)
        except ValueError:
            continue
        if not text or conf < 0:  # conf -1 marks page/block/line rows, not words
            continue
        line = thickness.get(_line_key(row))
        if line is not None and line < MIN_LINE_THICKNESS_SHARE * thickest:
            continue
        words.append(text)
        weights.append(len(text))
        confs.append(conf)
    if not words:
        return EMPTY
    text = _CJK_SPACE.sub("", " ".join(words)).strip()
    if not text:
        return EMPTY
    confidence = float(np.clip(np.average(confs, weights=weights) / 100.0, 0.0, 1.0))
    return OcrResult(text, confidence)


def _line_key(row: Mapping[str, str | None]) -> tuple[str | None, ...]:
    return (row.get("page_num"), row.get("block_num"), row.get("par_num"), row.get("line_num"))


class RapidOcrEngine(OcrEngine):
    """rapidocr 3.10 recognition only (PP-OCRv6 small, multilingual) on onnxruntime.

    The crop is already one line, so the detector and the angle classifier never run. Vertical crops are
    first re-flowed into a horizontal line with :func:`linkage_pipeline.documents.crops.reflow_vertical`.

    A crop's reading depends on the crop alone, never on which other crops share its batch: rapidocr's own
    batching pads every crop to the widest one in its batch, so the same crop read in an incremental run
    (only a new page's crops) and in a from-scratch run came back with another text in 1-2 % of crops (and
    another confidence in most). Here each crop is resized to the recogniser's input height as rapidocr does,
    padded (with rapidocr's padding value, 0 after normalisation) to its own width bucket (the resized width rounded up to a
    multiple of ``width_step``, at least the model's 320 px input width), and each bucket goes through the
    model as batches of its own, so padding never depends on the neighbours. The onnxruntime CPU kernels
    compute each batch row independently, so the batch size and a crop's position in the batch do not change
    its result either (checked in ``tests/unit/test_ocr.py``); on CUDA, cuDNN may pick different algorithms
    for different batch shapes, and bit-identical readings across batch sizes are not promised there.

    Args:
        batch_size: Crops per forward pass (at most; a width bucket with fewer crops runs a smaller batch).
        width_step: Bucket granularity in pixels of the resized crop (a multiple of 8, the model's horizontal
            stride). Smaller steps pad less but make more, smaller batches.
        device: ``"cpu"``, ``"cuda"``/``"cuda:N"`` (needs onnxruntime-gpu), or ``"auto"`` (CUDA when
            onnxruntime offers it, else CPU).
        threads: onnxruntime intra-op threads; ``None`` lets onnxruntime choose (one per core).
        model_path: A PP-OCR recognition ``.onnx`` with its character list in the model metadata; ``None``
            uses the model bundled in the rapidocr wheel. Never downloaded.
        unicode_form: Normal form of the texts returned (see :meth:`OcrEngine.read`); ``None`` = raw.
    """

    name = "rapidocr"

    def __init__(
        self,
        *,
        batch_size: int = 16,
        width_step: int = 32,
        device: str = "cpu",
        threads: int | None = None,
        model_path: str | os.PathLike[str] | None = None,
        unicode_form: str | None = "NFKC",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if width_step < 8 or width_step % 8:
            raise ValueError(f"width_step must be a positive multiple of 8 pixels, got {width_step}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        self.batch_size = batch_size
        self.width_step = width_step
        self.device = device
        self.threads = threads
        self.model_path = Path(model_path) if model_path is not None else None
        self.unicode_form = _check_unicode_form(unicode_form)
        self._rec: Any = None
        self._lock = threading.Lock()

    @property
    def reader(self) -> str:
        """The recognition model's file name, the vertical re-flow and the normal form (batching and device do not
        change what is read)."""
        model = self.model_path.name if self.model_path is not None else RAPIDOCR_REC_MODEL
        return f"rapidocr {model} reflow-vertical {self._text_rules()}"

    def __repr__(self) -> str:
        model = str(self.model_path) if self.model_path is not None else f"bundled {RAPIDOCR_REC_MODEL}"
        return (
            f"RapidOcrEngine(batch_size={self.batch_size}, width_step={self.width_step}, "
            f"device={self.device!r}, model={model!r})"
        )

    def _model_file(self) -> Path:
        if self.model_path is not None:
            return self.model_path
        try:
            import rapidocr
        except ImportError as exc:
            raise EngineUnavailableError(
                "the rapidocr engine needs the Python packages rapidocr==3.10.0 and onnxruntime: "
                "pip install rapidocr==3.10.0 onnxruntime"
            ) from exc
        return Path(rapidocr.__file__).resolve().parent / "models" / RAPIDOCR_REC_MODEL

    def _use_cuda(self) -> tuple[bool, int]:
        import onnxruntime

        has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if self.device == "cpu" or (self.device == "auto" and not has_cuda):
            return False, 0
        if not has_cuda:
            raise EngineUnavailableError(
                f"device {self.device!r} asked for, but onnxruntime offers only "
                f"{onnxruntime.get_available_providers()}; install onnxruntime-gpu or use device='cpu'"
            )
        return True, int(self.device.partition(":")[2] or 0)

    def check_available(self) -> None:
        """Check rapidocr, onnxruntime and the local recognition model, without loading it.

        Raises:
            EngineUnavailableError: If a package or the model file is missing, or the model lacks its
                character list (rapidocr would then try to download one).
        """
        model = self._model_file()
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise EngineUnavailableError("the rapidocr engine needs onnxruntime: pip install onnxruntime") from exc
        if not model.is_file():
            raise EngineUnavailableError(
                f"rapidocr recognition model {model} is missing; rapidocr==3.10.0 ships it in its wheel "
                "(pip install --force-reinstall rapidocr==3.10.0). This project never downloads models at run time."
            )
        self._use_cuda()

    def _load(self) -> Any:
        """rapidocr's text recogniser (session, input shape, CTC decoder), loaded once."""
        if self._rec is not None:
            return self._rec
        with self._lock:
            if self._rec is not None:
                return self._rec
            self.check_available()
            from rapidocr import RapidOCR

            use_cuda, device_id = self._use_cuda()
            model = self._model_file()
            params: dict[str, Any] = {
                "Global.use_det": False,
                "Global.use_cls": False,
                "Global.log_level": "warning",
                # An explicit model_path bypasses rapidocr's download-if-missing logic.
                "Rec.model_path": str(model),
                "EngineConfig.onnxruntime.use_cuda": use_cuda,
                "EngineConfig.onnxruntime.cuda_ep_cfg.device_id": device_id,
            }
            if self.threads is not None:
                params["EngineConfig.onnxruntime.intra_op_num_threads"] = self.threads
            ocr = RapidOCR(params=params)
            # Private, but the only way to load the recogniser eagerly, so failures surface here, not mid-batch.
            rec = ocr._load_rec_model()
            if rec.postprocess_op is None or not rec.session.have_key():
                raise EngineUnavailableError(
                    f"{model} carries no character list in its metadata; rapidocr would download one. "
                    "Use a PP-OCR .onnx exported with its character list."
                )
            if len(rec.rec_image_shape) != 3 or rec.rec_image_shape[0] != 3:
                raise EngineUnavailableError(
                    f"{model}: rapidocr recogniser input shape {rec.rec_image_shape}, expected (3, H, W)"
                )
            logger.info("rapidocr recognition model %s loaded (cuda=%s)", model, use_cuda)
            self._rec = rec
            return rec

    def _read_batch(self, images: list[Image.Image], direction: str) -> list[OcrResult]:
        rec = self._load()
        if direction == "vertical":
            images = [reflow_vertical(img) for img in images]
        _, height, min_width = (int(v) for v in rec.rec_image_shape)
        lines = [_rec_input(img, height) for img in images]
        buckets: dict[int, list[int]] = {}
        for i, line in enumerate(lines):
            width = max(min_width, -(-line.shape[2] // self.width_step) * self.width_step)
            buckets.setdefault(width, []).append(i)
        results = [EMPTY] * len(images)
        for width, members in sorted(buckets.items()):
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                # Zero is rapidocr's padding value (mid-grey after its (x / 255 - 0.5) / 0.5 normalisation).
                batch = np.zeros((len(chunk), 3, height, width), dtype=np.float32)
                for row, i in enumerate(chunk):
                    batch[row, :, :, : lines[i].shape[2]] = lines[i]
                decoded, _ = rec.postprocess_op(rec.session(batch), False)
                for i, (text, score) in zip(chunk, decoded, strict=True):
                    text = str(text).strip()
                    results[i] = OcrResult(text, float(np.clip(score, 0.0, 1.0))) if text else EMPTY
        return results


def _rec_input(img: Image.Image, height: int) -> np.ndarray:
    """One crop as the PP-OCR recogniser wants it, before padding (as rapidocr's ``resize_norm_img``).

    Args:
        img: An RGB crop holding one horizontal line.
        height: The recogniser's input height (48 for PP-OCRv6).

    Returns:
        float32 array of shape ``(3, height, w)``, BGR, values in [-1, 1], ``w = ceil(height * W / H)``.
    """
    import cv2

    # rapidocr follows OpenCV: BGR channel order, bilinear resize, then (x / 255 - 0.5) / 0.5.
    bgr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])
    width = max(1, math.ceil(height * img.width / img.height))
    resized = cv2.resize(bgr, (width, height)).astype(np.float32)
    return (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5


_ENGINE_CLASSES: dict[str, type[OcrEngine]] = {"tesseract": TesseractEngine, "rapidocr": RapidOcrEngine}


def make_engine(name: str, **options: Any) -> OcrEngine:
    """Build an OCR engine by name (models load lazily, on the first read).

    Args:
        name: One of :data:`ENGINES` (case-insensitive).
        **options: Keyword arguments of :class:`TesseractEngine` or :class:`RapidOcrEngine`.

    Returns:
        The engine.

    Raises:
        ValueError: If the name is unknown (the message lists the known ones) or an option is not accepted.
    """
    key = str(name).strip().lower()
    if key not in _ENGINE_CLASSES:
        raise ValueError(f"unknown OCR engine {name!r}; expected one of: {', '.join(ENGINES)}")
    cls = _ENGINE_CLASSES[key]
    try:
        return cls(**options)
    except TypeError as exc:
        import inspect

        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(f"bad options {sorted(options)} for OCR engine {key!r}; accepted: {accepted}") from exc


def check_engine_available(name: str, **options: Any) -> None:
    """Check that an engine can run here, without reading anything.

    Args:
        name: One of :data:`ENGINES`.
        **options: As for :func:`make_engine` (e.g. the tesseract languages to check).

    Raises:
        ValueError: If the name is unknown.
        EngineUnavailableError: If a binary, language file, package or model is missing; the message says
            what to install.
    """
    make_engine(name, **options).check_available()
