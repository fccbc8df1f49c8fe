"""Page loading: good pages of every kind, one case per bad input kind, labels.csv validation."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw

from linkage_pipeline.config import SourceConfig
from linkage_pipeline.documents.labels import read_labels
from linkage_pipeline.documents.pages import (
    empty_pages_frame,
    ink_fraction,
    load_page_image,
    scan_pages,
)
from linkage_pipeline.schema import PAGE_IMAGES

# -- builders ----------------------------------------------------------------------------------------------


def page_image(width: int = 120, height: int = 80, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A white page with a few black 'text lines'; ``seed`` moves them so each page has its own bytes."""
    im = Image.new(mode, (width, height), "white")
    draw = ImageDraw.Draw(im)
    for i in range(3):
        y = 10 + i * (height // 4) + seed % 5
        draw.rectangle((10 + seed % 7, y, width - 15, y + 4), fill="black")
    return im


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` grey pixels (its data is never decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user: bytes = b"secret", owner: bytes = b"owner") -> bytes:
    """A one-page PDF encrypted with the Standard security handler (RC4 40-bit, revision 2), user password set.

    pypdfium2 cannot write encrypted files, so the file is written by hand (PDF 1.7 spec, algorithms 3.2-3.4).
    The page has no content stream, so nothing else needs encrypting.
    """

    def pad(pw: bytes) -> bytes:
        return (pw + _PAD)[:32]

    file_id = hashlib.md5(b"linkage-test").digest()
    perms = -44
    o_entry = _rc4(hashlib.md5(pad(owner)).digest()[:5], pad(user))
    key = hashlib.md5(pad(user) + o_entry + struct.pack("<i", perms) + file_id).digest()[:5]
    u_entry = _rc4(key, _PAD)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (o_entry.hex().encode(), u_entry.hex().encode(), perms),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    hex_id = file_id.hex().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        hex_id,
        hex_id,
        xref,
    )
    return bytes(out)


def pdf_bytes(*pages: Image.Image, resolution: float = 100.0) -> bytes:
    return encode(pages[0], "PDF", save_all=True, append_images=list(pages[1:]), resolution=resolution)


def make_source(root: Path, name: str = "src", direction: str = "horizontal") -> SourceConfig:
    folder = root / name
    (folder / "pages").mkdir(parents=True)
    return SourceConfig(name=name, role="query", direction=direction, path=folder.resolve())


def page_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def zero_page_pdf() -> bytes:
    """A well-formed PDF whose page tree is empty (``/Count 0``), as PDFium writes a new document."""
    buffer = io.BytesIO()
    pdfium.PdfDocument.new().save(buffer)
    return buffer.getvalue()


GOOD_PNG = encode(page_image(120, 80, seed=1), "PNG")
GOOD_JPEG = encode(page_image(96, 64, seed=2), "JPEG", quality=95)


@pytest.fixture
def source(tmp_path: Path) -> SourceConfig:
    """A source with two good pages: a.png (120x80) and b.jpg (96x64)."""
    src = make_source(tmp_path)
    (src.path / "pages" / "a.png").write_bytes(GOOD_PNG)
    (src.path / "pages" / "b.jpg").write_bytes(GOOD_JPEG)
    return src


def assert_good_pages(frame: pd.DataFrame, src: SourceConfig) -> None:
    expected = pd.DataFrame(
        {
            "page_id": [page_id(GOOD_PNG), page_id(GOOD_JPEG)],
            "file": ["a.png", "b.jpg"],
            "page_number": [0, 0],
            "width": [120, 96],
            "height": [80, 64],
            "image_path": [str(src.path / "pages" / "a.png"), str(src.path / "pages" / "b.jpg")],
            "sha256": [hashlib.sha256(GOOD_PNG).hexdigest(), hashlib.sha256(GOOD_JPEG).hexdigest()],
        }
    )
    got = frame[frame["file"].isin(["a.png", "b.jpg"])].reset_index(drop=True)
    for col in expected:
        assert got[col].tolist() == expected[col].tolist(), col
    assert (got["source"] == src.name).all()


def assert_contract(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(PAGE_IMAGES)
    for col, typ in PAGE_IMAGES.items():
        if typ == "INTEGER":
            assert frame[col].dtype == np.int32, col
        else:
            assert pd.api.types.is_string_dtype(frame[col].dtype), col


# -- bad inputs: one case per kind -------------------------------------------------------------------------


def _write(name: str, data: bytes) -> Callable[[Path, Path], str]:
    def make(pages: Path, tmp: Path) -> str:
        (pages / name).write_bytes(data)
        return name

    return make


def _symlink_outside(pages: Path, tmp: Path) -> str:
    outside = tmp / "outside.png"
    outside.write_bytes(encode(page_image(50, 50, seed=9), "PNG"))
    (pages / "link.png").symlink_to(outside)
    return "link.png"


def _broken_symlink(pages: Path, tmp: Path) -> str:
    (pages / "gone.png").symlink_to(pages.parent / "missing.png")
    return "gone.png"


def _symlink_loop(pages: Path, tmp: Path) -> str:
    (pages / "loop").symlink_to(pages, target_is_directory=True)
    return "loop"


def _non_utf8_name(pages: Path, tmp: Path) -> str:
    with open(os.path.join(os.fsencode(pages), b"bad\xff.png"), "wb") as fh:
        fh.write(encode(page_image(50, 50, seed=4), "PNG"))
    return "bad\\udcff.png"


def _corrupt_png_body() -> bytes:
    data = bytearray(encode(page_image(60, 40, seed=3), "PNG"))
    start = data.index(b"IDAT") + 4
    for i in range(start, start + 20):
        data[i] ^= 0xFF
    return bytes(data)


def _corrupt_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return b"\xff\xd8\xff\xe0" + rng.bytes(400) + b"\xff\xd9"


_BLANK_SPECKLED = np.full((80, 120), 250, np.uint8)
_BLANK_SPECKLED[np.random.default_rng(1).integers(0, 80, 6), np.random.default_rng(2).integers(0, 120, 6)] = 0

BAD_INPUTS = [
    ("zero_byte", _write("empty.png", b""), "empty file (0 bytes)"),
    ("truncated_png", _write("cut.png", GOOD_PNG[: len(GOOD_PNG) // 2]), "truncated image: the PNG has no IEND chunk"),
    (
        "truncated_png_data",  # cut inside the pixel data but ending in IEND: only decoding finds it
        _write("cut_data.png", GOOD_PNG[: len(GOOD_PNG) // 2] + png_chunk(b"IEND", b"")),
        "corrupt or truncated image: OSError: image file is truncated",
    ),
    ("truncated_jpeg", _write("cut.jpg", GOOD_JPEG[: len(GOOD_JPEG) // 2]), "truncated image: the JPEG has no end-of-image marker"),
    ("corrupt_png_body", _write("corrupt.png", _corrupt_png_body()), "corrupt or truncated image"),
    ("corrupt_jpeg", _write("corrupt.jpg", _corrupt_jpeg()), "corrupt or truncated image"),
    ("random_bytes_jpg", _write("random.jpg", np.random.default_rng(5).bytes(2048)), "not an image: unrecognised content"),
    ("text_named_png", _write("notes.png", "社名一覧\nfirm names\n".encode() * 20), "not an image: the file holds text"),
    ("unsupported_ext", _write("notes.txt", b"hello"), "unsupported file type '.txt'; expected one of .png, .jpg"),
    ("no_extension", _write("README", b"hello"), "unsupported file type '' (no extension)"),
    ("encrypted_pdf", _write("locked.pdf", encrypted_pdf()), "encrypted PDF (password protected)"),
    ("corrupt_pdf", _write("broken.pdf", b"%PDF-1.4\n1 0 obj garbage\n%%EOF"), "corrupt PDF"),
    ("zero_page_pdf", _write("nothing.pdf", zero_page_pdf()), "PDF has no pages"),
    ("image_named_pdf", _write("fake.pdf", GOOD_PNG[:100] + b"x"), "not a PDF: the file holds a PNG image"),
    ("pdf_named_png", _write("doc.png", pdf_bytes(page_image(seed=6))), "the file holds a PDF but its extension is '.png'"),
    ("bomb_over_max_pixels", _write("bomb.png", bomb_png(8000, 8000)), "decompression bomb: declared size 8000x8000"),
    ("bomb_over_pillow_limit", _write("huge.png", bomb_png(100_000, 100_000)), "decompression bomb"),
    ("blank_white", _write("blank.png", encode(Image.new("L", (120, 80), 255), "PNG")), "blank page (no ink found)"),
    ("blank_speckled", _write("speckle.png", encode(Image.fromarray(_BLANK_SPECKLED), "PNG")), "blank page (no ink found)"),
    ("duplicate", _write("c_copy.png", GOOD_PNG), "duplicate of 'a.png' (identical bytes)"),
    ("symlink_outside", _symlink_outside, "symlink points outside the source folder"),
    ("broken_symlink", _broken_symlink, "broken symlink"),
    ("symlink_loop", _symlink_loop, "already scanned"),
    ("non_utf8_name", _non_utf8_name, "file name is not valid UTF-8"),
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_and_good_pages_survive(
    source: SourceConfig, tmp_path: Path, make: Callable[[Path, Path], str], fragment: str
) -> None:
    bad_name = make(source.path / "pages", tmp_path)
    frame, rejected = scan_pages(source, tmp_path / "render")
    assert [(r.source, r.file, r.stage) for r in rejected] == [(source.name, bad_name, "page_images")]
    assert fragment in rejected[0].reason
    assert len(frame) == 2
    assert_good_pages(frame, source)
    assert_contract(frame)


def test_zero_page_pdf_is_reported_as_no_pages_not_corrupt(source: SourceConfig, tmp_path: Path) -> None:
    (source.path / "pages" / "nothing.pdf").write_bytes(zero_page_pdf())
    (source.path / "pages" / "broken.pdf").write_bytes(zero_page_pdf()[:60])
    _, rejected = scan_pages(source, tmp_path / "render")
    reasons = {r.file: r.reason for r in rejected}
    assert reasons["nothing.pdf"] == "PDF has no pages; expected at least one page"
    assert reasons["broken.pdf"].startswith("corrupt PDF")


def test_encrypted_pdf_fixture_opens_with_its_password() -> None:
    # Guards the hand-written fixture: the rejection must come from the password, not from a broken file.
    pdf = pdfium.PdfDocument(encrypted_pdf(), password="secret")
    assert len(pdf) == 1
    pdf.close()


def test_pages_folder_symlinked_outside_the_source_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "a.png").write_bytes(GOOD_PNG)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "pages").symlink_to(outside, target_is_directory=True)
    src = SourceConfig(name="src", role="query", direction="horizontal", path=folder)
    frame, rejected = scan_pages(src, tmp_path / "render")
    assert frame.empty and list(frame.columns) == list(PAGE_IMAGES)
    assert len(rejected) == 1 and "outside the source folder" in rejected[0].reason


def test_missing_pages_folder_is_a_rejection(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    src = SourceConfig(name="src", role="query", direction="horizontal", path=folder)
    frame, rejected = scan_pages(src, tmp_path / "render")
    assert frame.empty
    assert [r.file for r in rejected] == ["pages"] and "not found" in rejected[0].reason


# -- good inputs -------------------------------------------------------------------------------------------


def test_pdf_pages_are_rendered_one_row_each(source: SourceConfig, tmp_path: Path) -> None:
    data = pdf_bytes(page_image(300, 200, seed=1), page_image(150, 250, seed=2), resolution=100)
    (source.path / "pages" / "doc.pdf").write_bytes(data)
    render = tmp_path / "render"
    frame, rejected = scan_pages(source, render, pdf_dpi=100)
    assert rejected == []
    pdf_rows = frame[frame["file"] == "doc.pdf"].reset_index(drop=True)
    assert pdf_rows["page_number"].tolist() == [0, 1]
    assert pdf_rows["page_id"].tolist() == [f"{page_id(data)}-p0", f"{page_id(data)}-p1"]
    assert list(zip(pdf_rows["width"], pdf_rows["height"], strict=True)) == [(300, 200), (150, 250)]
    for row in pdf_rows.itertuples():
        assert row.image_path == str(render / f"{row.page_id}.png")
        assert load_page_image(Path(row.image_path)).size == (row.width, row.height)
    assert frame["file"].tolist() == ["a.png", "b.jpg", "doc.pdf", "doc.pdf"]
    assert_good_pages(frame, source)


def test_pdf_render_is_reused_and_redone_when_dpi_changes(source: SourceConfig, tmp_path: Path) -> None:
    (source.path / "pages" / "doc.pdf").write_bytes(pdf_bytes(page_image(300, 200, seed=1), resolution=100))
    render = tmp_path / "render"
    first, _ = scan_pages(source, render, pdf_dpi=100)
    rendered = Path(first.loc[first["file"] == "doc.pdf", "image_path"].item())
    stamp = rendered.stat().st_mtime_ns
    again, _ = scan_pages(source, render, pdf_dpi=100)
    pd.testing.assert_frame_equal(first, again)
    assert rendered.stat().st_mtime_ns == stamp
    finer, _ = scan_pages(source, render, pdf_dpi=150)
    width, height = finer.loc[finer["file"] == "doc.pdf", ["width", "height"]].values.tolist()[0]
    assert abs(width - 450) <= 1 and abs(height - 300) <= 1  # pdfium rounds the scaled size up


def test_blank_pdf_page_is_rejected_and_the_other_page_kept(source: SourceConfig, tmp_path: Path) -> None:
    data = pdf_bytes(page_image(300, 200, seed=1), Image.new("RGB", (300, 200), "white"), resolution=100)
    (source.path / "pages" / "doc.pdf").write_bytes(data)
    frame, rejected = scan_pages(source, tmp_path / "render", pdf_dpi=100)
    assert frame.loc[frame["file"] == "doc.pdf", "page_number"].tolist() == [0]
    assert [(r.file, r.reason.split(":")[0]) for r in rejected] == [("doc.pdf", "page_number 1")]
    assert "blank page (no ink found)" in rejected[0].reason


def test_pdf_page_too_large_to_render_is_rejected(source: SourceConfig, tmp_path: Path) -> None:
    (source.path / "pages" / "doc.pdf").write_bytes(pdf_bytes(page_image(300, 200, seed=1), resolution=100))
    frame, rejected = scan_pages(source, tmp_path / "render", pdf_dpi=1200, max_pixels=1_000_000)
    assert "doc.pdf" not in frame["file"].tolist()
    assert len(rejected) == 1 and "decompression bomb: render at 1200 dpi" in rejected[0].reason
    assert_good_pages(frame, source)


def test_multi_frame_tiff_gives_one_page_per_frame(source: SourceConfig, tmp_path: Path) -> None:
    frames = [page_image(100, 70, seed=1), page_image(90, 60, seed=2), page_image(80, 50, seed=3)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    (source.path / "pages" / "scan.tiff").write_bytes(data)
    render = tmp_path / "render"
    frame, rejected = scan_pages(source, render)
    assert rejected == []
    rows = frame[frame["file"] == "scan.tiff"]
    assert rows["page_id"].tolist() == [f"{page_id(data)}-p{n}" for n in range(3)]
    assert rows[["width", "height"]].values.tolist() == [[100, 70], [90, 60], [80, 50]]
    for row in rows.itertuples():
        assert np.array_equal(np.asarray(load_page_image(Path(row.image_path))), np.asarray(frames[row.page_number]))


@pytest.mark.parametrize(
    ("name", "data", "size", "mode"),
    [
        ("single.TIF", encode(page_image(70, 50, seed=4), "TIFF"), (70, 50), "RGB"),
        ("upper.PNG", encode(page_image(64, 48, seed=5), "PNG"), (64, 48), "RGB"),
        ("photo.JPEG", encode(page_image(64, 48, seed=6), "JPEG"), (64, 48), "RGB"),
        ("grey.png", encode(page_image(64, 48, seed=7, mode="L"), "PNG"), (64, 48), "L"),
        ("bilevel.png", encode(page_image(64, 48, seed=8, mode="1"), "PNG"), (64, 48), "L"),
        ("palette.png", encode(page_image(64, 48, seed=9).convert("P"), "PNG"), (64, 48), "RGB"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_single_images_of_each_kind(
    source: SourceConfig, tmp_path: Path, name: str, data: bytes, size: tuple[int, int], mode: str
) -> None:
    (source.path / "pages" / name).write_bytes(data)
    frame, rejected = scan_pages(source, tmp_path / "render")
    assert rejected == []
    row = frame[frame["file"] == name].iloc[0]
    assert (row["page_id"], row["page_number"], (row["width"], row["height"])) == (page_id(data), 0, size)
    assert row["image_path"] == str(source.path / "pages" / name)
    image = load_page_image(Path(row["image_path"]))
    assert (image.size, image.mode) == (size, mode)


def test_exif_orientation_is_applied_to_width_and_height(source: SourceConfig, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    data = encode(page_image(120, 60, seed=3), "JPEG", exif=exif)
    (source.path / "pages" / "rotated.jpg").write_bytes(data)
    frame, _ = scan_pages(source, tmp_path / "render")
    row = frame[frame["file"] == "rotated.jpg"].iloc[0]
    assert (row["width"], row["height"]) == (60, 120)
    assert load_page_image(Path(row["image_path"])).size == (60, 120)


def test_transparent_and_16_bit_pages_are_normalised(source: SourceConfig, tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((5, 5, 50, 12), fill=(0, 0, 0, 255))
    deep = Image.fromarray(np.where(np.asarray(page_image(64, 48, mode="L")) > 0, 60000, 0).astype(np.uint16))
    (source.path / "pages" / "alpha.png").write_bytes(encode(rgba, "PNG"))
    (source.path / "pages" / "deep.png").write_bytes(encode(deep, "PNG"))
    frame, rejected = scan_pages(source, tmp_path / "render")
    assert rejected == []
    alpha = load_page_image(source.path / "pages" / "alpha.png")
    assert alpha.mode == "RGB" and alpha.getpixel((60, 40)) == (255, 255, 255) and alpha.getpixel((10, 8)) == (0, 0, 0)
    grey = load_page_image(source.path / "pages" / "deep.png")
    assert grey.mode == "L" and grey.getpixel((60, 40)) == round(60000 * 255 / 65535) and grey.getpixel((12, 12)) == 0


def test_nested_folders_and_inside_symlinks(source: SourceConfig, tmp_path: Path) -> None:
    (source.path / "pages" / "vol1").mkdir()
    nested = encode(page_image(50, 40, seed=11), "PNG")
    (source.path / "pages" / "vol1" / "p1.png").write_bytes(nested)
    (source.path / "extra").mkdir()
    linked = encode(page_image(50, 40, seed=12), "PNG")
    (source.path / "extra" / "x.png").write_bytes(linked)
    (source.path / "pages" / "linked.png").symlink_to(source.path / "extra" / "x.png")
    frame, rejected = scan_pages(source, tmp_path / "render")
    assert rejected == []
    assert frame["file"].tolist() == ["a.png", "b.jpg", "linked.png", "vol1/p1.png"]
    assert frame.set_index("file").loc["vol1/p1.png", "page_id"] == page_id(nested)


def test_scanning_twice_gives_identical_frames(source: SourceConfig, tmp_path: Path) -> None:
    (source.path / "pages" / "doc.pdf").write_bytes(pdf_bytes(page_image(300, 200, seed=1), page_image(seed=2)))
    (source.path / "pages" / "junk.txt").write_bytes(b"x")
    first = scan_pages(source, tmp_path / "render")
    second = scan_pages(source, tmp_path / "render")
    pd.testing.assert_frame_equal(first[0], second[0])
    assert first[1] == second[1]


def test_empty_pages_folder_gives_an_empty_frame_with_the_contract(tmp_path: Path) -> None:
    frame, rejected = scan_pages(make_source(tmp_path), tmp_path / "render")
    assert frame.empty and rejected == []
    assert_contract(frame)
    assert_contract(empty_pages_frame())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_pixels": 0}, "max_pixels=0; expected a positive integer"),
        ({"pdf_dpi": 5000}, "pdf_dpi=5000; expected a number between 18 and 1200"),
        ({"min_ink_fraction": 1.5}, "min_ink_fraction=1.5; expected a number in [0, 1)"),
    ],
)
def test_bad_arguments_raise(source: SourceConfig, tmp_path: Path, kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        scan_pages(source, tmp_path / "render", **kwargs)


def test_load_page_image_refuses_a_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(8000, 8000))
    with pytest.raises(ValueError, match="decompression bomb"):
        load_page_image(path)


def test_ink_fraction_separates_text_from_paper_noise() -> None:
    rng = np.random.default_rng(0)
    paper = np.clip(rng.normal(225, 6, (400, 300)), 0, 255).astype(np.uint8)  # yellowed, noisy paper
    assert ink_fraction(Image.fromarray(paper)) == 0.0
    inked = paper.copy()
    inked[40:44, 30:90] = 150  # one short, faded stroke
    assert ink_fraction(Image.fromarray(inked)) > 1e-3
    negative = np.full((400, 300), 10, np.uint8)
    negative[40:44, 30:90] = 240  # white text on a black (negative) scan
    assert ink_fraction(Image.fromarray(negative)) > 1e-3


# -- labels.csv --------------------------------------------------------------------------------------------

LABEL_HEADER = "page,x0,y0,x1,y1,text,entity_id,role\n"
GOOD_LABEL_ROWS = "a.png,10,10,60,20,三井物産株式会社,007,title\nb.jpg,5,5,40,15,仕入先,,heading\n"


def write_labels(src: SourceConfig, body: str, header: str = LABEL_HEADER) -> None:
    (src.path / "labels.csv").write_text(header + body, encoding="utf-8")


def test_labels_good_rows_keep_ids_and_empty_entities(source: SourceConfig) -> None:
    (source.path / "labels.csv").write_text(
        "\ufeffpage,x0,y0,x1,y1,text,entity_id,role,note\n"
        "a.png,10,10,60.4,20,三井物産株式会社,007,Title,x\n"
        "\n"
        "b.jpg,5,5,40,15,仕入先,,heading,\n",
        encoding="utf-8",
    )
    labels, rejected = read_labels(source)
    assert rejected == []
    assert labels is not None
    assert labels.columns.tolist() == ["page", "page_number", "x0", "y0", "x1", "y1", "text", "entity_id", "role"]
    assert labels["entity_id"].iloc[0] == "007" and pd.isna(labels["entity_id"].iloc[1])
    assert labels[["x0", "y0", "x1", "y1"]].values.tolist() == [[10, 10, 60, 20], [5, 5, 40, 15]]
    assert labels["role"].tolist() == ["title", "heading"]
    assert labels["x0"].dtype == np.int32


BAD_LABEL_ROWS = [
    ("non_numeric", "a.png,ten,10,60,20,x,1,entry\n", "row 3 (line 4): field 'x0': 'ten' is not a number"),
    ("nan", "a.png,10,nan,60,20,x,1,entry\n", "row 3 (line 4): field 'y0': 'nan' is not a finite number"),
    ("negative", "a.png,-3,10,60,20,x,1,entry\n", "row 3 (line 4): field 'x0': '-3' is negative"),
    ("inverted_x", "a.png,60,10,10,20,x,1,entry\n", "row 3 (line 4): field 'x1': inverted or empty box, x1 (10) must be greater than x0 (60)"),
    ("empty_y", "a.png,10,20,60,20,x,1,entry\n", "row 3 (line 4): field 'y1': inverted or empty box"),
    ("unknown_role", "a.png,10,10,60,20,x,1,boss\n", "row 3 (line 4): field 'role': 'boss' is not one of title, heading, supplier, customer, entry"),
    ("unknown_page", "z.png,10,10,60,20,x,1,entry\n", "row 3 (line 4): field 'page': 'z.png' is not a page file of this source"),
    ("escaping_page", "../../etc/passwd,10,10,60,20,x,1,entry\n", "field 'page': '../../etc/passwd' is not a page file"),
    ("empty_page", ",10,10,60,20,x,1,entry\n", "row 3 (line 4): field 'page' is empty"),
    ("too_many_fields", "a.png,10,10,60,20,x,1,entry,extra\n", "row 3 (line 4): has 9 fields; expected 8"),
]


@pytest.mark.parametrize(("row", "fragment"), [c[1:] for c in BAD_LABEL_ROWS], ids=[c[0] for c in BAD_LABEL_ROWS])
def test_bad_label_rows_are_rejected_and_good_rows_kept(source: SourceConfig, row: str, fragment: str) -> None:
    write_labels(source, GOOD_LABEL_ROWS + row)
    labels, rejected = read_labels(source)
    assert labels is not None and labels["page"].tolist() == ["a.png", "b.jpg"]
    assert [(r.file, r.stage) for r in rejected] == [("labels.csv", "region_labels")]
    assert fragment in rejected[0].reason


def test_labels_checked_against_given_page_files(source: SourceConfig) -> None:
    write_labels(source, GOOD_LABEL_ROWS)
    labels, rejected = read_labels(source, page_files=["a.png"])
    assert labels is not None and labels["page"].tolist() == ["a.png"]
    assert "'b.jpg' is not a page file" in rejected[0].reason


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("page,x0,y0,x1,y1,text,role\na.png,1,1,5,5,x,entry\n", "missing column(s) entity_id"),
        ("", "empty file; expected a header row"),
    ],
)
def test_unusable_labels_file_is_one_rejection(source: SourceConfig, content: str, fragment: str) -> None:
    (source.path / "labels.csv").write_text(content, encoding="utf-8")
    labels, rejected = read_labels(source)
    assert labels is None and len(rejected) == 1 and fragment in rejected[0].reason


def test_no_labels_file(source: SourceConfig) -> None:
    assert read_labels(source) == (None, [])
