"""Page loading: list a source's page files, vet each one, render PDF and multi-frame TIFF pages to PNG.

:func:`scan_pages` turns ``<source>/pages/`` into rows of ``page_images`` (``schema.PAGE_IMAGES``). Every file
is vetted on its own, and one that cannot be used becomes a :class:`Rejection` with the reason in words while
the rest of the source is still processed: unsupported extensions, empty files, content that is not an image,
truncated or corrupt images, decompression bombs (pixel count checked from the header before decoding),
encrypted or corrupt PDFs, blank pages, duplicate files, and symlinks pointing outside the source folder.

:func:`load_page_image` is how later stages read a page: the same decoding, EXIF orientation and mode
conversion that :func:`scan_pages` used to record ``width``/``height``, so coordinates agree.

:func:`~linkage_pipeline.documents.labels.read_labels` (in ``labels.py``) reads the optional ground truth
(``labels.csv`` or PASCAL VOC XML files, which may sit beside the pages and are skipped here).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageOps, UnidentifiedImageError

from linkage_pipeline.config import Rejection, SourceConfig
from linkage_pipeline.paths import atomic_write_bytes, safe_child
from linkage_pipeline.schema import PAGE_IMAGES

logger = logging.getLogger(__name__)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + PDF_SUFFIXES
#: Annotation files that may sit beside the pages (PASCAL VOC ``NAME.xml`` next to ``NAME.jpg``, as NDL-DocL ships
#: them): skipped by the page loader, read by :func:`linkage_pipeline.documents.labels.read_voc_labels`.
ANNOTATION_SUFFIXES = (".xml",)
#: Largest page (width x height) decoded or rendered; a 600 dpi A3 scan is about 35 million pixels.
DEFAULT_MAX_PIXELS = 60_000_000
DEFAULT_PDF_DPI = 200
#: A page is blank when less than this share of it is covered by ink (see :func:`ink_fraction`).
DEFAULT_MIN_INK_FRACTION = 1e-4
#: Grey levels a pixel must differ from the paper (the median level) to count as ink: low enough for faded
#: ink on yellowed paper, several standard deviations above ordinary scan noise.
INK_CONTRAST = 40

_STAGE = "page_images"
# Decoders are limited to the formats we accept: Pillow otherwise sniffs dozens of formats, and some (EPS)
# run external programs. (Multi-picture JPEGs from cameras open through "JPEG" as Pillow's MPO images.)
_PIL_FORMATS = ("PNG", "JPEG", "TIFF")
_PANDAS_DTYPES = {"VARCHAR": "str", "INTEGER": "int32"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError, ZeroDivisionError)


class InputRejected(Exception):
    """Raised inside the per-file helpers; the message becomes the rejection reason."""


# -- frames ------------------------------------------------------------------------------------------------


def empty_pages_frame() -> pd.DataFrame:
    """A ``page_images`` frame with no rows: exactly the ``schema.PAGE_IMAGES`` columns and dtypes."""
    return _pages_frame([])


def _pages_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {col: pd.Series([r[col] for r in rows], dtype=_PANDAS_DTYPES[typ]) for col, typ in PAGE_IMAGES.items()},
        columns=list(PAGE_IMAGES),
    )
    return frame.sort_values(["file", "page_number"], kind="stable").reset_index(drop=True)


# -- image decoding ----------------------------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data[:4] in _TIFF_MAGICS:
        return "TIFF"
    if b"%PDF-" in data[:1024]:
        return "PDF"
    return None


def _looks_like_text(data: bytes) -> bool:
    sample = data[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sample.
        try:
            text = sample[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return len(text) > 0 and printable / len(text) > 0.95


def _to_rgb_or_l(image: Image.Image) -> Image.Image:
    """Converts any decoded mode to ``L`` (grey) or ``RGB``; transparency is flattened onto white paper."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        # 16-bit and float scans: Pillow's own conversion clips to 0-255 and would turn them white.
        arr = np.asarray(image, dtype=np.float64)
        top = float(np.nanmax(arr)) if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            scale = 255.0
        elif top > 255.0:
            scale = 255.0 / 65535.0 if top <= 65535.0 else 255.0 / top
        else:
            scale = 1.0
        return Image.fromarray(np.clip(np.nan_to_num(arr) * scale, 0, 255).round().astype(np.uint8), "L")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        grey = mode in ("LA", "La")
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(paper, rgba)
        return flat.convert("L" if grey else "RGB")
    return image.convert("RGB")


def _decode_current_frame(image: Image.Image) -> Image.Image:
    """Fully decodes the current frame (so truncation shows now), applies EXIF orientation, normalises mode."""
    image.load()
    oriented = ImageOps.exif_transpose(image)
    return _to_rgb_or_l(oriented if oriented is not None else image)


def _check_pixels(width: int, height: int, max_pixels: int, what: str = "declared size") -> None:
    if width * height > max_pixels:
        raise InputRejected(
            f"decompression bomb: {what} {width}x{height} = {width * height:,} pixels exceeds "
            f"max_pixels={max_pixels:,}; expected a smaller page (raise max_pixels if it is genuine)"
        )


def load_page_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Reads one page image the way :func:`scan_pages` measured it.

    Args:
        path: a page file (PNG, JPEG, TIFF; for a multi-frame TIFF the first frame) or a rendered PDF page,
            i.e. ``page_images.image_path``.
        max_pixels: refuse images whose header declares more pixels than this.

    Returns:
        A fully loaded image in mode ``RGB`` or ``L`` (grey), EXIF orientation applied, transparency
        flattened onto white. Its size is ``(width, height)`` as recorded in ``page_images``.

    Raises:
        ValueError: when the header declares more than ``max_pixels`` pixels.
        OSError: when the file cannot be read or decoded (``PIL.UnidentifiedImageError`` is an ``OSError``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(Path(path), formats=_PIL_FORMATS) as image:
                _check_pixels(image.width, image.height, max_pixels)
                return _decode_current_frame(image)
        except (InputRejected, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{path}: {exc}") from None


def ink_fraction(image: Image.Image) -> float:
    """Share of the page covered by ink: 2x2 pixel blocks that all differ from the paper colour.

    A pixel is inked when its grey level differs from the paper colour (the median level) by more than
    :data:`INK_CONTRAST`; using the difference rather than darkness also counts white-on-black (negative)
    scans. Only 2x2 blocks of inked pixels count, so isolated one-pixel speckle and dust do not, while strokes
    two or more pixels wide do.

    Args:
        image: a page in any mode.

    Returns:
        A float in [0, 1]: inked 2x2 blocks over the number of pixels.
    """
    grey = image if image.mode == "L" else image.convert("L")
    arr = np.asarray(grey, dtype=np.uint8)
    if arr.size == 0:
        return 0.0
    hist = np.bincount(arr.ravel(), minlength=256)
    paper = int(np.searchsorted(np.cumsum(hist), arr.size / 2))
    lo, hi = max(paper - INK_CONTRAST, 0), min(paper + INK_CONTRAST, 255)
    mask = (arr < lo) | (arr > hi)
    if mask.shape[0] < 2 or mask.shape[1] < 2:
        return float(mask.mean())
    blocks = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:] & mask[1:, 1:]
    return int(np.count_nonzero(blocks)) / arr.size


def _check_ink(image: Image.Image, min_ink_fraction: float) -> None:
    share = ink_fraction(image)
    if share < min_ink_fraction:
        raise InputRejected(
            f"blank page (no ink found): {share:.4%} of pixels differ from the paper, "
            f"expected at least {min_ink_fraction:.4%}"
        )


def _encode_png(image: Image.Image, dpi: float | None = None) -> bytes:
    buf = io.BytesIO()
    if dpi is None:
        image.save(buf, format="PNG", optimize=False)
    else:
        image.save(buf, format="PNG", optimize=False, dpi=(dpi, dpi))
    return buf.getvalue()


# -- listing -----------------------------------------------------------------------------------------------


def _list_page_files(pages_dir: Path, source_root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Walks ``pages_dir``: (relative posix name, path) of every regular file, and (name, reason) problems.

    Symlinks are followed only when they resolve inside the source folder; folders reached twice (symlink
    loops) are scanned once.
    """
    files: list[tuple[str, Path]] = []
    problems: list[tuple[str, str]] = []
    visited = {pages_dir.resolve()}
    stack: list[tuple[Path, str]] = [(pages_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append((prefix.rstrip("/") or ".", f"folder could not be listed: {exc.strerror or exc}"))
            continue
        for entry in entries:
            rel = prefix + entry.name
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    try:
                        target = path.resolve()
                    except (OSError, RuntimeError):
                        problems.append((rel, "symlink loop; expected a link to a file inside the source folder"))
                        continue
                    if not (target == source_root or target.is_relative_to(source_root)):
                        problems.append(
                            (rel, f"symlink points outside the source folder (to {target}); expected a file inside {source_root}")
                        )
                        continue
                    if not target.exists():
                        problems.append((rel, f"broken symlink (target {target} does not exist)"))
                        continue
                if entry.is_dir(follow_symlinks=True):
                    real = path.resolve()
                    if real in visited:
                        problems.append((rel, f"folder {real} is already scanned (symlink loop or alias); skipped"))
                        continue
                    visited.add(real)
                    stack.append((path, rel + "/"))
                elif entry.is_file(follow_symlinks=True):
                    files.append((rel, path))
                else:
                    problems.append((rel, "not a regular file (socket, FIFO or device); expected a page image or PDF"))
            except OSError as exc:
                problems.append((rel, f"could not be read: {exc.strerror or exc}"))
    files.sort(key=lambda item: item[0])
    problems.sort(key=lambda item: item[0])
    return files, problems


# -- per-file processing -------------------------------------------------------------------------------------


class _Scanner:
    """State of one :func:`scan_pages` call: the source, limits, output rows and rejections."""

    def __init__(
        self, source: SourceConfig, render_dir: Path, max_pixels: int, pdf_dpi: float, min_ink_fraction: float
    ) -> None:
        self.source = source
        self.render_dir = render_dir
        self.max_pixels = max_pixels
        self.pdf_dpi = pdf_dpi
        self.min_ink_fraction = min_ink_fraction
        self.rows: list[dict[str, object]] = []
        self.rejected: list[Rejection] = []
        self.seen: dict[str, str] = {}

    def reject(self, file: str, reason: str) -> None:
        rejection = Rejection(source=self.source.name, file=file, stage=_STAGE, reason=reason)
        # Debug only: the caller reports the returned rejections (the page_images asset logs each one to its run),
        # so a warning here would show every rejection twice.
        logger.debug("rejected %s/%s: %s", self.source.name, file, rejection.reason)
        self.rejected.append(rejection)

    def add(self, file: str, page_number: int, page_id: str, image_path: Path, size: tuple[int, int], sha: str) -> None:
        self.rows.append(
            {
                "page_id": page_id,
                "source": self.source.name,
                "file": file,
                "page_number": page_number,
                "image_path": str(image_path),
                "width": int(size[0]),
                "height": int(size[1]),
                "sha256": sha,
            }
        )

    def scan_file(self, rel: str, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            shown = f"'{suffix}'" if suffix else "'' (no extension)"
            raise InputRejected(f"unsupported file type {shown}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            raise InputRejected("file name is not valid UTF-8; expected a UTF-8 file name (rename the file)") from None
        data = path.read_bytes()
        if not data:
            raise InputRejected("empty file (0 bytes)")
        sha = hashlib.sha256(data).hexdigest()
        first = self.seen.get(sha)
        if first is not None:
            raise InputRejected(f"duplicate of '{first}' (identical bytes); each page file should appear once")
        self.seen[sha] = rel
        kind = _sniff(data)
        if suffix in PDF_SUFFIXES:
            if kind != "PDF":
                found = f"a {kind} image" if kind else ("text" if _looks_like_text(data) else "unrecognised content")
                raise InputRejected(f"not a PDF: the file holds {found} (no %PDF- header); expected a PDF document")
            self.scan_pdf(rel, data, sha)
            return
        if kind == "PDF":
            raise InputRejected(f"the file holds a PDF but its extension is '{suffix}'; expected it named .pdf")
        if kind is None:
            if _looks_like_text(data):
                raise InputRejected("not an image: the file holds text; expected PNG, JPEG or TIFF data")
            raise InputRejected("not an image: unrecognised content (corrupt bytes?); expected PNG, JPEG or TIFF data")
        # Pillow quietly decodes a cut file when another library set LOAD_TRUNCATED_IMAGES, so check ends too.
        if kind == "PNG" and data.rfind(b"IEND") < 0:
            raise InputRejected("truncated image: the PNG has no IEND chunk (file cut short?)")
        if kind == "JPEG" and data.rfind(b"\xff\xd9") < 0:
            raise InputRejected("truncated image: the JPEG has no end-of-image marker (file cut short?)")
        self.scan_image(rel, path, data, sha)

    def scan_image(self, rel: str, path: Path, data: bytes, sha: str) -> None:
        with warnings.catch_warnings():
            # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that; both are rejections here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as image:
                    _check_pixels(image.width, image.height, self.max_pixels)
                    n_frames = int(getattr(image, "n_frames", 1)) if image.format == "TIFF" else 1
                    if n_frames <= 1:
                        page = _decode_current_frame(image)
                        _check_ink(page, self.min_ink_fraction)
                        self.add(rel, 0, sha[:16], path.absolute(), page.size, sha)
                        return
                    self.scan_frames(rel, image, n_frames, sha)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise InputRejected(f"decompression bomb: {exc}") from None
            except UnidentifiedImageError:
                raise InputRejected("not an image: Pillow cannot identify the content; expected PNG, JPEG or TIFF data") from None
            except MemoryError:
                raise InputRejected("image too large to decode in memory") from None
            except _DECODE_ERRORS as exc:
                raise InputRejected(f"corrupt or truncated image: {type(exc).__name__}: {exc}") from None

    def scan_frames(self, rel: str, image: Image.Image, n_frames: int, sha: str) -> None:
        for n in range(n_frames):
            page_id = f"{sha[:16]}-p{n}"
            try:
                image.seek(n)
                _check_pixels(image.width, image.height, self.max_pixels, what=f"frame {n} size")
                page = _decode_current_frame(image)
                _check_ink(page, self.min_ink_fraction)
                out = self.render_dir / f"{page_id}.png"
                if _usable_render(out, None, page.size) is None:
                    _write_render(out, _encode_png(page))
                self.add(rel, n, page_id, out, page.size, sha)
            except InputRejected as exc:
                self.reject(rel, f"page_number {n}: {exc}")
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                self.reject(rel, f"page_number {n}: decompression bomb: {exc}")
            except _DECODE_ERRORS as exc:
                self.reject(rel, f"page_number {n}: corrupt or truncated frame: {type(exc).__name__}: {exc}")

    def scan_pdf(self, rel: str, data: bytes, sha: str) -> None:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            # pypdfium2 also refuses a document that PDFium opened but found no pages in, with whatever error an
            # earlier document left behind (PDFium sets none on success): ask PDFium itself first.
            if _pdf_page_count(data) == 0:
                raise InputRejected(_NO_PAGES) from None
            code = getattr(exc, "err_code", None)
            if code == pdfium_c.FPDF_ERR_PASSWORD:
                raise InputRejected("encrypted PDF (password protected); expected an unencrypted PDF") from None
            if code == pdfium_c.FPDF_ERR_SECURITY:
                raise InputRejected("encrypted PDF (unsupported security handler); expected an unencrypted PDF") from None
            raise InputRejected(f"corrupt PDF ({exc}); expected a readable PDF document") from None
        try:
            n_pages = len(pdf)
            if n_pages == 0:
                raise InputRejected(_NO_PAGES)
            for n in range(n_pages):
                try:
                    self.scan_pdf_page(rel, pdf, n, sha)
                except InputRejected as exc:
                    self.reject(rel, f"page_number {n}: {exc}")
                except (pdfium.PdfiumError, *_DECODE_ERRORS) as exc:
                    self.reject(rel, f"page_number {n}: page could not be rendered: {type(exc).__name__}: {exc}")
        finally:
            pdf.close()

    def scan_pdf_page(self, rel: str, pdf: pdfium.PdfDocument, n: int, sha: str) -> None:
        page_id = f"{sha[:16]}-p{n}"
        out = self.render_dir / f"{page_id}.png"
        page = pdf[n]
        try:
            scale = self.pdf_dpi / 72.0
            w_pt, h_pt = page.get_size()
            if not (math.isfinite(w_pt) and math.isfinite(h_pt)) or w_pt <= 0 or h_pt <= 0:
                raise InputRejected(f"page has no area ({w_pt}x{h_pt} pt)")
            width, height = math.ceil(w_pt * scale), math.ceil(h_pt * scale)
            _check_pixels(width, height, self.max_pixels, what=f"render at {self.pdf_dpi:g} dpi")
            cached = _usable_render(out, self.pdf_dpi, None)
            if cached is not None:
                _check_ink(cached, self.min_ink_fraction)
                self.add(rel, n, page_id, out, cached.size, sha)
                return
            bitmap = page.render(scale=scale)
            try:
                rendered = _to_rgb_or_l(bitmap.to_pil())
            finally:
                bitmap.close()
        finally:
            page.close()
        _check_ink(rendered, self.min_ink_fraction)
        _write_render(out, _encode_png(rendered, dpi=self.pdf_dpi))
        self.add(rel, n, page_id, out, rendered.size, sha)


_NO_PAGES = "PDF has no pages; expected at least one page"


def _pdf_page_count(data: bytes) -> int | None:
    """The number of pages PDFium finds in a PDF, or ``None`` when it cannot open the document at all."""
    handle = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
    if not handle:
        return None
    try:
        return int(pdfium_c.FPDF_GetPageCount(handle))
    finally:
        pdfium_c.FPDF_CloseDocument(handle)


def _write_render(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise InputRejected(f"could not write the rendered page to {path}: {exc.strerror or exc}") from None


def _usable_render(path: Path, dpi: float | None, size: tuple[int, int] | None) -> Image.Image | None:
    """A previously rendered page at ``path`` if it decodes and matches ``dpi``/``size``, else None."""
    if not path.is_file():
        return None
    try:
        with Image.open(path, formats=("PNG",)) as image:
            if dpi is not None:
                found = image.info.get("dpi")
                # PNG stores pixels per metre as an integer, so the dpi read back is only approximately equal.
                if not found or abs(float(found[0]) - dpi) > 0.5:
                    return None
            if size is not None and image.size != size:
                return None
            return _decode_current_frame(image)
    except (*_DECODE_ERRORS, Image.DecompressionBombError):
        logger.warning("re-rendering unreadable cached page %s", path)
        return None


def scan_pages(
    source: SourceConfig,
    render_dir: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pdf_dpi: float = DEFAULT_PDF_DPI,
    min_ink_fraction: float = DEFAULT_MIN_INK_FRACTION,
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Lists and vets every page of one source.

    Files under ``<source.path>/pages/`` are walked recursively in sorted order. Accepted: ``.png .jpg .jpeg
    .tif .tiff .pdf`` (any case); annotation files (``.xml``, see :data:`ANNOTATION_SUFFIXES`) are skipped
    without a rejection. Each image is fully decoded to detect truncation; PDF pages (rendered with
    pypdfium2 at ``pdf_dpi``) and the frames of multi-frame TIFFs are written as ``<render_dir>/<page_id>.png``
    (atomically; an existing render of the same page id and dpi is reused). Anything unusable becomes a
    rejection (stage ``page_images``) and the rest of the source is still processed.

    Args:
        source: the source to scan.
        render_dir: folder for rendered PDF/TIFF pages; created if missing.
        max_pixels: largest page (width x height, checked from the header before decoding, or from the page
            size before rendering a PDF). Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million)
            also applies, so a larger value has no effect beyond it.
        pdf_dpi: resolution at which PDF pages are rendered.
        min_ink_fraction: pages with a smaller share of ink pixels (see :func:`ink_fraction`) are rejected as
            blank.

    Returns:
        ``page_images`` rows (exactly the ``schema.PAGE_IMAGES`` columns: strings as ``str``, integers as
        ``int32``; one row per page, sorted by ``file`` then ``page_number``) and the rejections in file order.
        ``page_id`` is ``sha256(file bytes)[:16]`` for single images and ``+ "-p<n>"`` for PDF and multi-frame
        TIFF pages; ``file`` is the path relative to ``pages/`` with ``/`` separators.

    Raises:
        ValueError: when ``max_pixels``, ``pdf_dpi`` or ``min_ink_fraction`` is out of range.
    """
    if not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels={max_pixels!r}; expected a positive integer")
    if not isinstance(pdf_dpi, (int, float)) or not 18 <= pdf_dpi <= 1200:
        raise ValueError(f"pdf_dpi={pdf_dpi!r}; expected a number between 18 and 1200")
    if not isinstance(min_ink_fraction, (int, float)) or not 0 <= min_ink_fraction < 1:
        raise ValueError(f"min_ink_fraction={min_ink_fraction!r}; expected a number in [0, 1)")
    render_dir = Path(render_dir).absolute()
    scanner = _Scanner(source, render_dir, max_pixels, float(pdf_dpi), float(min_ink_fraction))
    source_root = Path(source.path).resolve()
    pages_dir = Path(source.path) / "pages"
    try:
        safe_child(source_root, "pages")
    except ValueError:
        scanner.reject("pages", f"pages/ resolves to {pages_dir.resolve()}, outside the source folder {source_root}")
        return empty_pages_frame(), scanner.rejected
    if not pages_dir.is_dir():
        scanner.reject("pages", f"folder {pages_dir} not found; expected the source's page images and PDFs there")
        return empty_pages_frame(), scanner.rejected
    render_dir.mkdir(parents=True, exist_ok=True)

    files, problems = _list_page_files(pages_dir, source_root)
    problem_by_file = dict(problems)
    names = sorted({rel for rel, _ in files} | set(problem_by_file))
    paths = dict(files)
    for rel in names:
        # File names that are not UTF-8 arrive as surrogate escapes, which Parquet cannot store.
        shown = rel.encode("utf-8", "backslashreplace").decode("utf-8")
        if rel in problem_by_file:
            scanner.reject(shown, problem_by_file[rel])
            continue
        if Path(rel).suffix.lower() in ANNOTATION_SUFFIXES:
            logger.debug("skipped %s/%s: an annotation file, not a page", source.name, shown)
            continue
        try:
            scanner.scan_file(rel, paths[rel])
        except InputRejected as exc:
            scanner.reject(shown, str(exc))
        except OSError as exc:
            scanner.reject(shown, f"could not be read: {exc.strerror or exc}")
        except Exception as exc:  # one odd file must not lose the rest of the source
            logger.exception("unexpected error on %s/%s", source.name, shown)
            scanner.reject(shown, f"unexpected error: {type(exc).__name__}: {exc}")
    frame = _pages_frame(scanner.rows)
    logger.log(
        logging.WARNING if scanner.rejected else logging.INFO,
        "scanned source %s: %d pages from %d files, %d rejected",
        source.name, len(frame), sum(Path(n).suffix.lower() not in ANNOTATION_SUFFIXES for n in names),
        len(scanner.rejected),
    )
    return frame, scanner.rejected
