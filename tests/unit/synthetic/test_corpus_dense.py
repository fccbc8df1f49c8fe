"""The dense corpus style: entries with body lines, inline supply-chain lists, mixed formats, typefaces."""

from __future__ import annotations

import csv
import hashlib
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from linkage_pipeline.documents.pages import SUPPORTED_SUFFIXES
from linkage_pipeline.synthetic.corpus import LABEL_COLUMNS, generate_corpus
from linkage_pipeline.synthetic.entries import (
    FIELD_GAP,
    INLINE_SEPARATOR,
    entry_fields,
    kanji_number,
    wrap_fields,
)
from linkage_pipeline.synthetic.firms import generate_firms, name_key
from linkage_pipeline.synthetic.fonts import (
    DEMO_FONTS,
    DENSE_DEMO_FONTS,
    DENSE_HELDOUT_FONTS,
    HELDOUT_FONTS,
    MissingFontError,
    corpus_fonts,
)

SMALL = {"seed": 5, "n_firms": 24, "n_list_pages": 8, "style": "dense"}
NAME_ROLES = ("supplier", "customer")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.int16)


def _box(row: dict[str, str]) -> tuple[int, int, int, int]:
    return int(row["x0"]), int(row["y0"]), int(row["x1"]), int(row["y1"])


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("dense")
    return out, generate_corpus(out, **SMALL)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("dense_clean")
    return out, generate_corpus(out, **(SMALL | {"noise": 0.0}))


# ------------------------------------------------------------------------------------------------ entries
@pytest.mark.parametrize(
    ("n", "text"), [(0, "〇"), (1, "一"), (10, "十"), (35, "三十五"), (120, "百二十"), (1500, "千五百"), (20000, "二萬")]
)
def test_kanji_number(n: int, text: str) -> None:
    assert kanji_number(n) == text


def test_kanji_number_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="0..99999"):
        kanji_number(100000)


def test_entry_fields_and_wrapping() -> None:
    rng = np.random.default_rng(7)
    partners = ["東洋紡績株式會社", "大日本製藥", "中央物産", "（株）日東商事"]
    n_fields = []
    for _ in range(200):
        fields = entry_fields(rng, "神奈川縣", partners)
        n_fields.append(len(fields))
        assert fields[0].startswith("所在地" + FIELD_GAP + "神奈川縣")
        lines = wrap_fields(fields, 12)
        assert all(0 < len(line) <= 12 for line in lines)
        assert not any(line[0] in INLINE_SEPARATOR + FIELD_GAP for line in lines)
        # Wrapping keeps every character but the blanks at breaks.
        assert "".join(lines).replace(FIELD_GAP, "") == "".join(fields).replace(FIELD_GAP, "")
    assert min(n_fields) >= 3 and max(n_fields) >= 7
    with pytest.raises(ValueError, match="width"):
        wrap_fields(["所在地"], 3)


# ------------------------------------------------------------------------------------------------- corpus
def test_dense_is_deterministic(noisy: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = noisy
    again = generate_corpus(tmp_path / "again", **SMALL)
    assert _digest(out) == _digest(tmp_path / "again")
    other = generate_corpus(tmp_path / "other", **(SMALL | {"seed": 6, "n_list_pages": 2}))
    assert _read(tmp_path / "other" / "supplier_lists" / "labels.csv") != _read(out / "supplier_lists" / "labels.csv")
    assert again.style == other.style == "dense"


def test_sparse_stays_the_default(tmp_path: Path) -> None:
    summary = generate_corpus(tmp_path, seed=3, n_firms=8, n_list_pages=1)
    assert summary.style == "sparse"
    assert summary.fonts == DEMO_FONTS
    cfg = yaml.safe_load((tmp_path / "sources.yaml").read_text(encoding="utf-8"))
    assert {s["layout"] for s in cfg["sources"].values()} == {"morphology"}
    assert {p.suffix for p in tmp_path.rglob("page_*")} == {".png"}
    with pytest.raises(ValueError, match="style"):
        generate_corpus(tmp_path, style="tabular")


def test_dense_sources_and_label_format(noisy: tuple[Path, object]) -> None:
    out, summary = noisy
    cfg = yaml.safe_load((out / "sources.yaml").read_text(encoding="utf-8"))
    assert cfg["sources"]["firm_directory"] | {} == {
        "role": "target", "direction": "vertical", "language": "jpn", "layout": "ppocr",
        "ocr": ["tesseract", "rapidocr"],
    }
    assert cfg["sources"]["supplier_lists"]["layout"] == "ppocr"
    for src in ("firm_directory", "supplier_lists"):
        with (out / src / "labels.csv").open(encoding="utf-8") as fh:
            assert fh.readline().strip() == ",".join(LABEL_COLUMNS)
    assert summary.n_body_lines == sum(r["role"] == "body" for r in _read(out / "firm_directory" / "labels.csv"))


def test_roles_and_entries_with_body_lines(noisy: tuple[Path, object]) -> None:
    out, summary = noisy
    rows = _read(out / "firm_directory" / "labels.csv")
    roles = Counter(r["role"] for r in rows)
    assert set(roles) == {"heading", "entry", "body"}
    assert roles["entry"] == summary.n_directory_entries >= summary.n_firms
    assert all(r["entity_id"] == "" for r in rows if r["role"] in ("heading", "body"))
    assert all(r["entity_id"].startswith("F") and r["text"] for r in rows if r["role"] == "entry")
    # Each entry is followed by 3 to 8 body lines (its address, capital, officers ...), in print order.
    runs, current = [], None
    for r in rows:
        if r["role"] == "entry":
            if current is not None:
                runs.append(current)
            current = 0
        elif r["role"] == "body" and current is not None:
            current += 1
        elif r["role"] == "heading" and current is not None:
            runs.append(current)
            current = None
    runs.append(current)
    assert len(runs) == roles["entry"]
    assert min(runs) >= 3 and max(runs) <= 8
    bodies = [r["text"] for r in rows if r["role"] == "body"]
    assert sum(b.startswith("所在地") for b in bodies) == roles["entry"]
    assert any(b.startswith("資本金") or "資本金" in b for b in bodies)
    assert any("萬圓" in b or "千圓" in b for b in bodies)
    assert any(b.startswith(("仕入先", "販賣先", "得意先")) for b in bodies)
    lists = _read(out / "supplier_lists" / "labels.csv")
    assert {r["role"] for r in lists} == {"title", "heading", "supplier", "customer"}
    headings = {r["text"] for r in lists if r["role"] == "heading"}
    assert any("仕入先" in h for h in headings) and any(("販賣先" in h or "販売先" in h or "得意先" in h) for h in headings)
    assert any(h not in ("仕入先", "販賣先", "販売先", "得意先") for h in headings)  # 【仕入先】, ◎販賣先 ...


def test_same_firms_and_mentions_as_sparse(noisy: tuple[Path, object], tmp_path: Path) -> None:
    out, summary = noisy
    sparse = generate_corpus(tmp_path, **(SMALL | {"style": "sparse"}))
    assert sparse.n_directory_entries == summary.n_directory_entries
    assert sparse.n_list_mentions == summary.n_list_mentions
    assert sparse.n_absent_mentions == summary.n_absent_mentions

    def named(root: Path, src: str) -> Counter:
        return Counter(
            (r["text"], r["entity_id"], r["role"]) for r in _read(root / src / "labels.csv") if r["entity_id"]
        )

    assert named(tmp_path, "firm_directory") == named(out, "firm_directory")
    assert named(tmp_path, "supplier_lists") == named(out, "supplier_lists")


def test_list_names_are_whole_names(noisy: tuple[Path, object]) -> None:
    out, summary = noisy
    firms = {f.entity_id: f for f in generate_firms(summary.n_firms + summary.n_absent_firms, SMALL["seed"])}
    for r in _read(out / "supplier_lists" / "labels.csv"):
        if r["role"] in NAME_ROLES:
            f = firms[r["entity_id"]]
            keys = {name_key(f.canonical), *(name_key(a) for a in f.aliases)}
            assert name_key(r["text"]) in keys, r  # never cut inside a name, never a separator in it
            assert not set(r["text"]) & set("、，・\u3000")


def test_formats_are_mixed_and_readable(noisy: tuple[Path, object]) -> None:
    out, _ = noisy
    files = sorted(out.rglob("page_*"))
    suffixes = Counter(p.suffix for p in files)
    assert set(suffixes) <= set(SUPPORTED_SUFFIXES)
    assert len(suffixes) >= 2, suffixes
    for p in files:
        with Image.open(p) as im:
            assert im.format in ("PNG", "JPEG", "TIFF")
            assert im.width == 1240 and 1240 <= im.height <= 1754
    for src in ("firm_directory", "supplier_lists"):
        pages = {r["page"] for r in _read(out / src / "labels.csv")}
        assert pages == {p.name for p in (out / src / "pages").iterdir()}


def test_boxes_inside_pages_and_around_ink(noisy: tuple[Path, object]) -> None:
    out, _ = noisy
    n_boxes = 0
    darkest: list[float] = []
    for src in ("firm_directory", "supplier_lists"):
        by_page = defaultdict(list)
        for r in _read(out / src / "labels.csv"):
            by_page[r["page"]].append(r)
        for page, rows in by_page.items():
            img = _grey(out / src / "pages" / page)
            h, w = img.shape
            paper = float(np.median(img))
            for r in rows:
                x0, y0, x1, y1 = _box(r)
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, r
                crop = img[y0:y1, x0:x1]
                # The printed text is inside: the box holds ink (faded in worn patches, dark elsewhere).
                assert crop.min() < paper - 35, r
                darkest.append(float(crop.min()) - paper)
                n_boxes += 1
    assert n_boxes > 300
    assert np.median(darkest) < -100


def _ink_masks(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    paper = float(np.median(img))
    return img < paper - 30, img < paper * 0.5


def test_clean_boxes_are_tight_and_hold_all_text(clean: tuple[Path, object]) -> None:
    """Without degradation each box edge touches ink and every dark pixel is in a box, a rule or a separator."""
    out, _ = clean
    n_separator_gaps = 0
    for src in ("firm_directory", "supplier_lists"):
        by_page = defaultdict(list)
        for r in _read(out / src / "labels.csv"):
            by_page[r["page"]].append(r)
        for page, rows in by_page.items():
            img = _grey(out / src / "pages" / page)
            faint, strong = _ink_masks(img)
            covered = np.zeros_like(strong)
            for r in rows:
                x0, y0, x1, y1 = _box(r)
                crop = faint[y0:y1, x0:x1]
                # Tight: ink in the outermost two rows and columns on every side.
                assert crop[:2].any() and crop[-2:].any() and crop[:, :2].any() and crop[:, -2:].any(), r
                covered[y0:y1, x0:x1] = True
            loose = strong & ~covered
            if src == "firm_directory":
                # Only rules are left: thin straight lines (every uncovered row or column segment is long).
                ys, xs = np.nonzero(loose)
                if len(ys):
                    rows_hit = Counter(ys.tolist())
                    cols_hit = Counter(xs.tolist())
                    assert all(rows_hit[y] > 100 or cols_hit[x] > 100 for y, x in zip(ys, xs, strict=True))
                continue
            names = sorted(
                (_box(r) for r in rows if r["role"] in NAME_ROLES), key=lambda b: (b[1] + b[3]) / 2
            )
            # No two name boxes overlap; between neighbours on a line lies the separator's ink (unless a blank).
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (page, a, b)
            lines = defaultdict(list)
            for b in names:
                lines[round((b[1] + b[3]) / 2 / 12)].append(b)
            for line in lines.values():
                line.sort()
                for a, b in itertools.pairwise(line):
                    gap = loose[min(a[1], b[1]) : max(a[3], b[3]), a[2] : b[0]]
                    n_separator_gaps += bool(gap.any())
    assert n_separator_gaps >= 10


def test_several_names_per_line(noisy: tuple[Path, object]) -> None:
    out, _ = noisy
    per_line = Counter()
    for r in _read(out / "supplier_lists" / "labels.csv"):
        if r["role"] in NAME_ROLES:
            _, y0, _, y1 = _box(r)
            per_line[(r["page"], round((y0 + y1) / 2 / 40))] += 1
    assert max(per_line.values()) >= 3
    assert sum(n >= 2 for n in per_line.values()) >= 5


def test_heldout_uses_no_demo_typeface(tmp_path: Path) -> None:
    assert not set(DENSE_HELDOUT_FONTS) & (set(DENSE_DEMO_FONTS) | set(DEMO_FONTS))
    assert not set(HELDOUT_FONTS) & set(DENSE_DEMO_FONTS)
    assert corpus_fonts("dense", heldout=True) == DENSE_HELDOUT_FONTS
    summary = generate_corpus(
        tmp_path, style="dense", seed=2, n_firms=8, n_list_pages=2, vocabulary="heldout",
        fonts=corpus_fonts("dense", heldout=True),
    )
    assert summary.fonts_used and set(summary.fonts_used) <= set(DENSE_HELDOUT_FONTS)


def test_demo_uses_many_typefaces(noisy: tuple[Path, object]) -> None:
    _, summary = noisy
    assert summary.fonts == DENSE_DEMO_FONTS
    assert set(summary.fonts_used) <= set(DENSE_DEMO_FONTS)
    assert len(summary.fonts_used) >= 6


def test_missing_font_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingFontError, match="not installed"):
        generate_corpus(tmp_path / "x", style="dense", n_firms=8, n_list_pages=1, fonts=["No Such Mincho"])
    assert not (tmp_path / "x").exists()
