"""Synthetic book prose: horizontal pages and spreads, vertical pages, labels tight around every printed line."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from linkage_pipeline.config import load_sources
from linkage_pipeline.synthetic.corpus import LABEL_COLUMNS
from linkage_pipeline.synthetic.fonts import (
    DENSE_DEMO_FONTS,
    DENSE_HELDOUT_FONTS,
    HELDOUT_FONTS,
)
from linkage_pipeline.synthetic.prose import PROSE_SOURCES, RUBY_WORDS, generate_prose

# Seed 1 with 6 pages: 3 horizontal (one a spread), 3 vertical; ruby on a spread, a single and a vertical page.
SMALL = {"seed": 1, "n_pages": 6}
RUBY_READINGS = set(RUBY_WORDS.values())
_NUMBER = re.compile(r"^(\d+|[〇一二三四五六七八九十百千]+)$")


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


def _by_page(out: Path, source: str) -> dict[str, list[dict[str, str]]]:
    pages: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _read(out / source / "labels.csv"):
        pages[row["page"]].append(row)
    return pages


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prose")
    return out, generate_prose(out, **SMALL)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prose_clean")
    return out, generate_prose(out, **SMALL, noise=0.0)


def test_same_seed_gives_identical_files(noisy: tuple[Path, dict], tmp_path: Path) -> None:
    out, summary = noisy
    again = generate_prose(tmp_path / "again", **SMALL)
    assert _digest(tmp_path / "again") == _digest(out)
    assert again["labels"] == summary["labels"] and again["ruby_pages"] == summary["ruby_pages"]
    other = generate_prose(tmp_path / "other", seed=2, n_pages=2)
    assert _read(tmp_path / "other" / "prose_vertical" / "labels.csv") != _read(out / "prose_vertical" / "labels.csv")
    assert other["pages"] == {"prose_horizontal": 1, "prose_vertical": 1}


def test_sources_and_summary(noisy: tuple[Path, dict]) -> None:
    out, summary = noisy
    registry = load_sources(out, strict=True)
    by_name = {s.name: s for s in registry.sources}
    assert set(by_name) == {"prose_horizontal", "prose_vertical"}
    assert by_name["prose_horizontal"].direction == "horizontal" and by_name["prose_horizontal"].role == "query"
    assert by_name["prose_vertical"].direction == "vertical" and by_name["prose_vertical"].role == "target"
    assert registry.linkages == ()
    assert summary["pages"] == {"prose_horizontal": 3, "prose_vertical": 3}
    n_rows = {name: len(_read(out / name / "labels.csv")) for name, _ in PROSE_SOURCES}
    assert sum(summary["labels"].values()) == sum(n_rows.values())
    assert summary["spreads"] == 1
    assert summary["ruby"] > 0 and len(summary["ruby_pages"]) == 3
    assert summary["seconds"] > 0
    # Set in the dense demo faces only (fallbacks included), never in a held-out one.
    assert summary["fonts_used"] and set(summary["fonts_used"]) <= set(DENSE_DEMO_FONTS)
    assert not set(summary["fonts_used"]) & (set(DENSE_HELDOUT_FONTS) | set(HELDOUT_FONTS))
    for name, _ in PROSE_SOURCES:
        files = sorted(p.name for p in (out / name / "pages").iterdir())
        assert [Path(f).stem for f in files] == ["page_001", "page_002", "page_003"]
        assert {Path(f).suffix for f in files} <= {".png", ".jpg"}
        assert set(_by_page(out, name)) == set(files)


def test_labels_roles_counts_and_bounds(noisy: tuple[Path, dict]) -> None:
    out, _ = noisy
    for name, _ in PROSE_SOURCES:
        with (out / name / "labels.csv").open(encoding="utf-8") as fh:
            assert tuple(next(csv.reader(fh))) == LABEL_COLUMNS
        for page, rows in _by_page(out, name).items():
            h, w = _grey(out / name / "pages" / page).shape
            roles = Counter(r["role"] for r in rows)
            assert set(roles) <= {"body", "heading"}, (name, page, roles)
            assert roles["body"] >= 10, (name, page, roles)
            for r in rows:
                x0, y0, x1, y1 = _box(r)
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (name, page, r)
                assert r["entity_id"] == "" and r["text"].strip(), r
                assert r["text"] not in RUBY_READINGS, r  # ruby is never a label


def test_spread_pages_have_a_gutter_and_two_page_numbers(noisy: tuple[Path, dict], clean: tuple[Path, dict]) -> None:
    out, _ = noisy
    spreads = 0
    for page, rows in _by_page(out, "prose_horizontal").items():
        img = _grey(out / "prose_horizontal" / "pages" / page)
        numbers = [r for r in rows if _NUMBER.match(r["text"])]
        first_line_top = min(int(r["y0"]) for r in rows if r not in numbers)
        assert all(int(r["y1"]) < first_line_top for r in numbers), page  # in the top margin
        if img.shape != (1400, 2000):
            assert img.shape == (1700, 1240) and len(numbers) == 1, (page, img.shape)
            continue
        spreads += 1
        assert len(numbers) == 2
        left, right = sorted(numbers, key=lambda r: int(r["x0"]))
        assert int(left["x1"]) < 500 and int(right["x0"]) > 1500  # near the outer top corners
        # No text crosses the gutter, and the paper darkens into it.
        assert all(int(r["x1"]) < 960 or int(r["x0"]) > 1040 for r in rows)
        paper = np.median(img[:, 300:700])
        gutter = np.median(img[:, 995:1005])
        assert gutter < paper - 25, (gutter, paper)
    assert spreads == 1
    # The clean rendering has no gutter shadow (noise 0 means no scan effects).
    clean_out, _ = clean
    for p in (clean_out / "prose_horizontal" / "pages").iterdir():
        img = _grey(p)
        if img.shape == (1400, 2000):
            assert abs(float(np.median(img[:, 995:1005])) - float(np.median(img[:, 300:700]))) < 2


def test_prose_lines_are_justified_with_short_paragraph_ends(noisy: tuple[Path, dict]) -> None:
    out, _ = noisy
    for name, direction in PROSE_SOURCES:
        for page, rows in _by_page(out, name).items():
            body = [r for r in rows if r["role"] == "body" and not _NUMBER.match(r["text"])]
            along = [(_box(r)[3] - _box(r)[1]) if direction == "vertical" else (_box(r)[2] - _box(r)[0]) for r in body]
            full = max(along)
            n_full = sum(a >= 0.9 * full for a in along)
            assert n_full >= 0.6 * len(body), (name, page)  # most lines run the full measure
            assert min(along) < 0.75 * full, (name, page)  # paragraphs end in short lines
            for r in body:
                assert r["text"][0] not in "、。", r  # punctuation hangs, it never starts a line
            text = "".join(r["text"] for r in body)
            assert text.count("。") >= 5 and text.count("、") >= text.count("。")
            assert any(p in text for p in ("は", "を", "に", "が", "の"))


def test_clean_boxes_are_tight_and_only_ruby_is_unlabelled(clean: tuple[Path, dict]) -> None:
    """Without degradation each box edge touches ink; the only ink outside boxes is ruby, next to a line."""
    out, summary = clean
    ruby_pages = set(summary["ruby_pages"])
    assert ruby_pages
    for name, direction in PROSE_SOURCES:
        for page, rows in _by_page(out, name).items():
            img = _grey(out / name / "pages" / page)
            paper = float(np.median(img))
            faint, strong = img < paper - 30, img < paper * 0.5
            covered = np.zeros_like(strong)
            for r in rows:
                x0, y0, x1, y1 = _box(r)
                crop = faint[y0:y1, x0:x1]
                assert crop[:2].any() and crop[-2:].any() and crop[:, :2].any() and crop[:, -2:].any(), r
                covered[y0:y1, x0:x1] = True
            _, _, stats, _ = cv2.connectedComponentsWithStats((strong & ~covered).astype(np.uint8), connectivity=8)
            comps = [s for s in stats[1:] if s[cv2.CC_STAT_AREA] >= 3]
            if f"{name}/{page}" not in ruby_pages:
                assert not comps, (name, page, len(comps))
                continue
            assert comps, (name, page)
            lines = [_box(r) for r in rows if r["role"] == "body" and not _NUMBER.match(r["text"])]
            for s in comps:
                cx0, cy0 = int(s[cv2.CC_STAT_LEFT]), int(s[cv2.CC_STAT_TOP])
                cx1, cy1 = cx0 + int(s[cv2.CC_STAT_WIDTH]), cy0 + int(s[cv2.CC_STAT_HEIGHT])
                if direction == "horizontal":  # just above a line, over its span
                    near = any(
                        y0 - 0.7 * (y1 - y0) <= cy0 and cy1 <= y0 + 2 and x0 - 20 <= cx0 and cx1 <= x1 + 20
                        for x0, y0, x1, y1 in lines
                    )
                else:  # just right of a column, along its span
                    near = any(
                        x1 - 2 <= cx0 and cx1 <= x1 + 0.7 * (x1 - x0) and y0 - 20 <= cy0 and cy1 <= y1 + 20
                        for x0, y0, x1, y1 in lines
                    )
                assert near, (name, page, (cx0, cy0, cx1, cy1))


def test_ruby_words_are_printed_in_the_text(clean: tuple[Path, dict]) -> None:
    out, summary = clean
    texts = [r["text"] for name, _ in PROSE_SOURCES for r in _read(out / name / "labels.csv")]
    assert sum(any(w in t for w in RUBY_WORDS) for t in texts) >= 10
    assert summary["ruby"] >= 5


def test_headings(noisy: tuple[Path, dict]) -> None:
    out, summary = noisy
    headings = [r for name, _ in PROSE_SOURCES for r in _read(out / name / "labels.csv") if r["role"] == "heading"]
    assert len(headings) == summary["labels"]["heading"] >= 3
    assert any("\u3000" in r["text"].strip("\u3000")[3:] for r in headings)  # some are letter-spaced
    for r in headings:
        assert re.match(r"^(第[一二三四五六七八九十]+[章節]|[一二三四五六七八九十]+、|（[一二三四五六七八九十]+）|"
                        r"[一二三四五六七八九十]+\u3000|\d+[.．\u3000])", r["text"]), r


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_pages": 1}, "n_pages"),
        ({"noise": 3.0}, "noise"),
        ({"fonts": ["BIZ UDMincho"]}, "held out"),
        ({"fonts": "IPAMincho"}, "sequence"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_prose(tmp_path, seed=0, **kwargs)
