"""The firm-name vocabulary and the synthetic two-source corpus: determinism, format, variation, errors."""

from __future__ import annotations

import csv
import hashlib
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from linkage_pipeline.synthetic import firms as synthetic_firms
from linkage_pipeline.synthetic.corpus import LABEL_COLUMNS, generate_corpus
from linkage_pipeline.synthetic.fonts import (
    DEMO_FONTS,
    HELDOUT_FONTS,
    MissingFontError,
    resolve_fonts,
)

TINY = {"seed": 3, "n_firms": 20, "n_list_pages": 3}


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("tiny")
    summary = generate_corpus(out, **TINY)
    return out, summary


# ------------------------------------------------------------------------------------------------ firms
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("株式會社", "株式会社"),
        ("販賣", "販売"),
        ("製鐵", "製鉄"),
        ("鑛業", "鉱業"),
        ("帝國", "帝国"),
        ("電氣", "電気"),
        ("製藥", "製薬"),
        ("化學", "化学"),
        ("金澤", "金沢"),
        ("横濱", "横浜"),
        ("廣島", "広島"),
        ("東洋紡績", "東洋紡績"),  # nothing to change
    ],
)
def test_to_new_forms(old: str, new: str) -> None:
    assert synthetic_firms.to_new_forms(old) == new


@pytest.mark.parametrize(
    ("printed", "key"),
    [
        ("東洋紡績株式會社", "東洋紡績"),
        ("株式会社東洋紡績", "東洋紡績"),
        ("（株）東洋紡績", "東洋紡績"),
        ("㈱東洋紡績", "東洋紡績"),
        ("日本製鐵合資會社", "日本製鉄"),
        ("有限会社明治製藥", "明治製薬"),
    ],
)
def test_name_key_ignores_legal_form_and_character_forms(printed: str, key: str) -> None:
    assert synthetic_firms.name_key(printed) == key


def test_old_new_pairs_are_real_single_character_pairs() -> None:
    assert synthetic_firms.old_new_pairs is synthetic_firms.OLD_NEW_PAIRS
    assert len(synthetic_firms.OLD_NEW_PAIRS) >= 80
    for old, new in synthetic_firms.OLD_NEW_PAIRS:
        assert len(old) == len(new) == 1 and old != new
    olds = [o for o, _ in synthetic_firms.OLD_NEW_PAIRS]
    assert len(olds) == len(set(olds))


def test_generate_firms_is_deterministic_and_distinct() -> None:
    a = synthetic_firms.generate_firms(200, seed=5)
    b = synthetic_firms.generate_firms(200, seed=5)
    c = synthetic_firms.generate_firms(200, seed=6)
    assert a == b
    assert a != c
    assert [f.entity_id for f in a] == [f"F{i:05d}" for i in range(200)]
    keys = [synthetic_firms.name_key(f.canonical) for f in a]
    assert len(set(keys)) == 200
    # Canonical names are old forms with the legal form where the firm has one.
    assert all(f.canonical.replace(f.legal_form, "") == f.core for f in a)
    assert any("會社" in f.canonical for f in a)


def test_generate_firms_contains_hard_negatives() -> None:
    firms = synthetic_firms.generate_firms(300, seed=0)
    cores = {f.core for f in firms}
    stems = Counter(f.stem for f in firms)
    assert stems.most_common(1)[0][1] >= 8  # many firms share a popular stem
    confusable = sum(
        1 for a, b in synthetic_firms.CONFUSABLE_INDUSTRIES for s in stems if s + a in cores and s + b in cores
    )
    assert confusable >= 10  # e.g. 東洋紡績 and 東洋紡織 both present
    stem_pairs = sum(
        1 for a, b in synthetic_firms.CONFUSABLE_STEMS for f in firms if f.stem == a and b + f.industry in cores
    )
    assert stem_pairs >= 5  # e.g. 日本製鋼 and 大日本製鋼


def test_vocabularies_are_disjoint() -> None:
    parts = {v: set(synthetic_firms.vocabulary_stems(v)) for v in ("demo", "train", "heldout")}
    assert parts["demo"].isdisjoint(parts["train"])
    assert parts["demo"].isdisjoint(parts["heldout"])
    assert parts["train"].isdisjoint(parts["heldout"])
    assert all(len(p) >= 30 for p in parts.values())
    assert set().union(*parts.values()) == set(synthetic_firms.vocabulary_stems("all"))
    demo = {synthetic_firms.name_key(f.canonical) for f in synthetic_firms.generate_firms(300, 0, vocabulary="demo")}
    train = {synthetic_firms.name_key(f.canonical) for f in synthetic_firms.generate_firms(1000, 0, vocabulary="train")}
    assert demo.isdisjoint(train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be >= 1"),
        ({"n": 10, "vocabulary": "nope"}, "unknown vocabulary"),
        ({"n": 10, "hard_negative_share": 1.5}, "hard_negative_share"),
        ({"n": 100000}, "at most"),
    ],
)
def test_generate_firms_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_firms.generate_firms(**kwargs)


def test_mention_styles() -> None:
    firms = synthetic_firms.generate_firms(100, seed=1)
    rng = np.random.default_rng(0)
    assert all(synthetic_firms.mention(f, rng, "canonical") == f.canonical for f in firms)
    listed = [(f, synthetic_firms.mention(f, rng, "list")) for f in firms for _ in range(3)]
    changed = [m for f, m in listed if m != f.canonical]
    assert len(changed) / len(listed) > 0.7
    assert any("（株）" in m or "㈱" in m for _, m in listed)
    assert any("株式会社" in m for _, m in listed)
    assert any(f.legal_form and synthetic_firms.strip_legal_form(m) == m for f, m in listed)  # legal form dropped
    # Every mention still names the same firm: same key, or one of the firm's short forms.
    for f, m in listed:
        assert synthetic_firms.name_key(m) in {synthetic_firms.name_key(f.core), *(synthetic_firms.name_key(a) for a in f.aliases)}
    with pytest.raises(ValueError, match="unknown mention style"):
        synthetic_firms.mention(firms[0], rng, "fancy")


def test_mention_is_deterministic_given_rng_state() -> None:
    firm = synthetic_firms.generate_firms(5, seed=2)[0]
    a = [synthetic_firms.mention(firm, np.random.default_rng(9), "list") for _ in range(3)]
    assert len(set(a)) == 1


# ------------------------------------------------------------------------------------------------ corpus
def test_corpus_files_and_sources_yaml(tiny: tuple[Path, object]) -> None:
    out, summary = tiny
    config = yaml.safe_load((out / "sources.yaml").read_text(encoding="utf-8"))
    assert config == {
        "sources": {
            "firm_directory": {
                "role": "target", "direction": "vertical", "language": "jpn", "layout": "morphology",
                "ocr": ["tesseract", "rapidocr"],
            },
            "supplier_lists": {
                "role": "query", "direction": "horizontal", "language": "jpn", "layout": "morphology",
                "ocr": ["tesseract", "rapidocr"],
            },
        },
        "linkages": [{"query": "supplier_lists", "target": "firm_directory"}],
    }
    assert len(list((out / "firm_directory" / "pages").glob("page_*.png"))) == summary.n_directory_pages
    assert len(list((out / "supplier_lists" / "pages").glob("page_*.png"))) == summary.n_list_pages == 3
    assert summary.n_firms == 20 and summary.n_directory_entries == 22 and summary.n_duplicated_firms == 2


@pytest.mark.parametrize(
    ("source", "roles"),
    [
        ("firm_directory", {"heading", "entry"}),
        ("supplier_lists", {"title", "heading", "supplier", "customer"}),
    ],
)
def test_labels_format(tiny: tuple[Path, object], source: str, roles: set[str]) -> None:
    out, _ = tiny
    path = out / source / "labels.csv"
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(LABEL_COLUMNS)
    rows = _read(path)
    assert {r["role"] for r in rows} == roles
    for r in rows:
        image = Image.open(out / source / "pages" / r["page"])
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        assert r["text"]
        assert (r["entity_id"] == "") == (r["role"] == "heading")
        # The box holds the printed name: dark ink inside it.
        crop = np.asarray(image.convert("L"))[y0:y1, x0:x1]
        assert crop.min() < 140
        if source == "firm_directory":
            assert y1 - y0 > 2 * (x1 - x0)  # vertical columns
        else:
            assert x1 - x0 > y1 - y0
    if source == "supplier_lists":
        per_page = Counter((r["page"], r["role"]) for r in rows)
        for page in {r["page"] for r in rows}:
            assert per_page[(page, "title")] == 1 and per_page[(page, "heading")] == 2


def test_boxes_are_tight_on_a_clean_rendering(tmp_path: Path) -> None:
    generate_corpus(tmp_path, seed=4, n_firms=8, n_list_pages=1, noise=0.0)
    for source in ("firm_directory", "supplier_lists"):
        for r in _read(tmp_path / source / "labels.csv"):
            page = np.asarray(Image.open(tmp_path / source / "pages" / r["page"]).convert("L"))
            x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
            ink = page[y0:y1, x0:x1] < 200
            # Ink touches all four sides (within a pixel), and there is no ink in a ring just outside.
            assert ink[:2].any() and ink[-2:].any() and ink[:, :2].any() and ink[:, -2:].any(), r
            ring = page[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3].copy()
            ring[min(3, y0) : min(3, y0) + (y1 - y0), min(3, x0) : min(3, x0) + (x1 - x0)] = 255
            assert (ring < 150).sum() == 0, r


def test_variation_absent_firms_and_duplicates(tiny: tuple[Path, object]) -> None:
    out, summary = tiny
    directory = _read(out / "firm_directory" / "labels.csv")
    lists = _read(out / "supplier_lists" / "labels.csv")
    dir_ids = Counter(r["entity_id"] for r in directory if r["role"] == "entry")
    dir_texts: dict[str, set[str]] = {}
    for r in directory:
        dir_texts.setdefault(r["entity_id"], set()).add(r["text"])
    mentions = [r for r in lists if r["role"] in ("supplier", "customer")]
    assert len(mentions) == summary.n_list_mentions
    assert sum(1 for c in dir_ids.values() if c == 2) == summary.n_duplicated_firms == 2
    absent = [r for r in mentions if r["entity_id"] not in dir_ids]
    assert len(absent) == summary.n_absent_mentions > 0
    present = [r for r in mentions if r["entity_id"] in dir_ids]
    differs = [r for r in present if r["text"] not in dir_texts[r["entity_id"]]]
    assert len(differs) >= len(present) // 2  # lists rarely print the directory's form of the name
    assert all(synthetic_firms.name_key(r["text"]) for r in mentions)  # a mention is never a bare legal form


def test_same_seed_gives_identical_bytes(tiny: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = tiny
    generate_corpus(tmp_path, **TINY)
    assert _digest(tmp_path) == _digest(out)


def test_other_seed_and_fonts_differ(tiny: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = tiny
    summary = generate_corpus(tmp_path, seed=4, n_firms=20, n_list_pages=3, fonts=HELDOUT_FONTS[:2])
    assert summary.fonts == HELDOUT_FONTS[:2]
    assert _read(tmp_path / "supplier_lists" / "labels.csv") != _read(out / "supplier_lists" / "labels.csv")


def test_rerun_removes_stale_pages(tmp_path: Path) -> None:
    generate_corpus(tmp_path, seed=1, n_firms=8, n_list_pages=3, noise=0.0)
    generate_corpus(tmp_path, seed=1, n_firms=8, n_list_pages=1, noise=0.0)
    assert [p.name for p in (tmp_path / "supplier_lists" / "pages").iterdir()] == ["page_001.png"]


def test_tiny_corpus_is_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    generate_corpus(tmp_path, **TINY)
    assert time.perf_counter() - t0 < 10.0


def test_demo_fonts_installed_and_distinct_from_heldout() -> None:
    assert len(DEMO_FONTS) >= 3
    assert set(DEMO_FONTS).isdisjoint(HELDOUT_FONTS)
    assert len({f.path for f in resolve_fonts(DEMO_FONTS)}) == len(DEMO_FONTS)


@pytest.mark.parametrize("families", [DEMO_FONTS, HELDOUT_FONTS])
def test_every_vocabulary_character_can_be_printed(families: tuple[str, ...]) -> None:
    from linkage_pipeline.synthetic.corpus import _Typeset

    typeset = _Typeset(resolve_fonts(families))
    chars = synthetic_firms.vocabulary_characters() + "仕入先販賣売得意之部都府縣県道"
    for font in typeset.fonts:
        for ch in chars:
            assert typeset.face(font, ch, 24).getbbox(ch) is not None, (font.family, ch)


def test_missing_font_error_names_family_and_package(tmp_path: Path) -> None:
    with pytest.raises(MissingFontError, match=r"No Such Mincho.*apt-get install|fc-list") as info:
        generate_corpus(tmp_path, seed=0, n_firms=8, n_list_pages=1, fonts=["No Such Mincho", "IPAMincho"])
    assert "No Such Mincho" in str(info.value) and "IPAMincho" not in str(info.value)
    with pytest.raises(MissingFontError, match="does not exist"):
        resolve_fonts([str(tmp_path / "missing.ttf")])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_firms": 2}, "n_firms must be >= 4"),
        ({"n_list_pages": 0}, "n_list_pages must be >= 1"),
        ({"absent_share": 1.0}, "absent_share"),
        ({"names_per_list": (5, 40)}, "names_per_list"),
        ({"scale": 5.0}, "scale"),
        ({"noise": -1.0}, "noise"),
        ({"fonts": []}, "fonts must be a non-empty sequence"),
        ({"fonts": "IPAMincho"}, "wrap it in a list"),
        ({"vocabulary": "nope"}, "unknown vocabulary"),
    ],
)
def test_generate_corpus_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_corpus(tmp_path, **({"n_firms": 8, "n_list_pages": 1} | kwargs))
