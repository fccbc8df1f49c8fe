"""Unihan character variants and Japanese old/new forms (multimodal/variants.py)."""

from __future__ import annotations

import bz2
import zipfile
from pathlib import Path

import numpy as np
import pytest

from linkage_pipeline.multimodal import variants as V
from linkage_pipeline.synthetic.firms import OLD_NEW_PAIRS

_HAVE_UNIHAN = any(
    (V.UNIHAN_DIR / name).is_file() for name in ("Unihan_Variants.txt.bz2", "Unihan_Variants.txt", "Unihan.zip")
)
needs_unihan = pytest.mark.skipif(
    not _HAVE_UNIHAN,
    reason=f"Unihan files not in {V.UNIHAN_DIR}: install the Debian package unicode-data (.ci/setup does)",
)

_SYNTHETIC = """#
# Unihan_Variants.txt (test)
#
U+4E7E\tkSemanticVariant\tU+4E81<kMatthews,kMeyerWempe U+5E72<kFenn
U+4E7E\tkSimplifiedVariant\tU+5E72
U+4E7E\tkSpoofingVariant\tU+4E81
U+4F1A\tkSimplifiedVariant\tU+4F1A
U+4F1A\tkTraditionalVariant\tU+4F1A U+6703
U+5E72\tkTraditionalVariant\tU+4E7E U+5E79
U+6703\tkSimplifiedVariant\tU+4F1A
"""


def test_parse_synthetic_text_drops_sources_self_and_spoofing() -> None:
    entries = V.parse_unihan_variants(_SYNTHETIC, "test.txt")
    assert entries["kSemanticVariant"] == {"乾": ("亁", "干")}
    assert entries["kSimplifiedVariant"] == {"乾": ("干",), "會": ("会",)}  # 会 -> 会 (itself) dropped
    assert entries["kTraditionalVariant"] == {"会": ("會",), "干": ("乾", "幹")}
    assert entries["kZVariant"] == {} and entries["kSpecializedSemanticVariant"] == {}
    assert "kSpoofingVariant" not in entries


@pytest.mark.parametrize("packing", ["plain", "bz2", "zip", "dir"])
def test_load_from_plain_bz2_zip_or_directory(tmp_path: Path, packing: str) -> None:
    data = _SYNTHETIC.encode("utf-8")
    if packing == "plain":
        path = tmp_path / "Unihan_Variants.txt"
        path.write_bytes(data)
    elif packing == "bz2":
        path = tmp_path / "Unihan_Variants.txt.bz2"
        path.write_bytes(bz2.compress(data))
    elif packing == "zip":
        path = tmp_path / "Unihan.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("Unihan_Variants.txt", data)
    else:
        (tmp_path / "Unihan_Variants.txt.bz2").write_bytes(bz2.compress(data))
        path = tmp_path
    table = V.load_unihan_variants(path, japanese_pairs=())
    assert table.variants("干") == ("乾", "幹")
    assert table.variants("乾") == ("亁", "干")  # undirected: 干's traditional line makes 乾 a variant of 干
    assert table.variants("乾", kinds=("kSimplifiedVariant",)) == ("干",)
    classes = table.equivalence_classes(("kTraditionalVariant", "kSimplifiedVariant", "kSemanticVariant"))
    assert classes == (frozenset("亁乾干幹"), frozenset("会會"))
    assert table.normalise("會社乾幹", kinds=V.VARIANT_KINDS) == "会社乾乾"  # 会 is preferred; else the smallest, 乾 U+4E7E


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "Unihan_Variants.txt"
    path.write_text(_SYNTHETIC + "U+5E72\tkZVariant\tU+5E79 V+1234\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Unihan_Variants\.txt line 11: bad kZVariant value 'V\+1234'"):
        V.load_unihan_variants(path)
    path.write_text("# header\nU+5E72 kZVariant U+5E79\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: expected 'U\+XXXX<TAB>kField<TAB>value'"):
        V.load_unihan_variants(path)


def test_missing_file_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="unicode-data"):
        V.load_unihan_variants(tmp_path)


def test_unknown_kind_and_bad_rate() -> None:
    table = V.VariantTable(entries={"kZVariant": {"a": ("b",)}})
    with pytest.raises(ValueError, match="kFooVariant"):
        table.variants("a", kinds=("kFooVariant",))
    with pytest.raises(ValueError, match="rate"):
        table.substitute("a", np.random.default_rng(0), 1.5)


def test_jis_repertoire_by_codec() -> None:
    assert V.in_jis_x_0213("國") and V.in_jis_x_0213("沢") and V.in_jis_x_0213("𠮟")
    assert not V.in_jis_x_0213("发") and not V.in_jis_x_0213("泽")


@needs_unihan
def test_real_table_classes_and_normalise() -> None:
    table = V.load_unihan_variants()
    assert table.source.startswith(str(V.UNIHAN_DIR))
    assert len(table.entries["kSimplifiedVariant"]) > 6000 and len(table.entries["kZVariant"]) > 100
    unihan_kinds = ("kTraditionalVariant", "kSimplifiedVariant", "kZVariant", "kSemanticVariant")
    home = next(c for c in table.equivalence_classes(unihan_kinds) if "國" in c)
    assert "国" in home
    assert table.normalise("株式會社") == table.normalise("株式会社") == "株式会社"
    assert table.normalise("日本國有鐵道") == "日本国有鉄道"
    # 澤/沢 and 發/発 are related only through the Japanese pairs, and the 新字体 is the representative
    assert table.normalise("澤發") == "沢発"
    assert table.normalise("澤", kinds=unihan_kinds) == "泽"  # Unihan alone: the Chinese form
    assert table.normalise("abc 株") == "abc 株"


@needs_unihan
def test_real_table_substitute() -> None:
    table = V.load_unihan_variants()
    text = "株式會社日本國有鐵道大阪支店"
    assert table.substitute(text, np.random.default_rng(0), 0.0) == text
    changed = table.substitute(text, np.random.default_rng(0), 1.0)
    assert len(changed) == len(text)
    with_variants = [i for i, ch in enumerate(text) if table.variants(ch)]
    assert with_variants == [2, 6, 8, 11]  # 會 國 鐵 阪
    for i, (a, b) in enumerate(zip(text, changed, strict=True)):
        if i in with_variants:
            assert b != a and b in table.variants(a)
        else:
            assert b == a
    runs = [table.substitute(text, np.random.default_rng(seed), 0.5) for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    draws = {table.substitute(text, np.random.default_rng(seed), 0.5) for seed in range(20)}
    assert len(draws) > 5


@needs_unihan
def test_japanese_old_new() -> None:
    pairs = V.japanese_old_new()
    assert set(OLD_NEW_PAIRS) <= set(pairs)
    mapping = dict(pairs)
    assert len(mapping) == len(pairs) > 400
    assert mapping["國"] == "国" and mapping["學"] == "学" and mapping["澤"] == "沢"
    assert mapping["藝"] == "芸" and mapping["龍"] == "竜"  # from the 人名用漢字 old forms
    assert mapping["餘"] == "余" and mapping["聲"] == "声"  # derived from Unihan relations
    assert "发" not in mapping and "发" not in mapping.values()  # Chinese simplified, not Japanese
    assert "幾" not in mapping and "几" not in mapping  # 几 is 幾's Chinese simplification, not its 新字体
    assert all(V.in_jis_x_0213(new) for _, new in pairs)
    assert all(V.in_jis_x_0213(old) for old, _ in pairs)
    sources = V.japanese_old_new_sources()
    assert {s for _, s in sources.values()} >= {"hand", "jinmeiyo", "kSimplifiedVariant", "kSemanticVariant"}
    curated = V.japanese_old_new(kinds=())
    assert set(curated) < set(pairs) and len(curated) > 200
    assert V.japanese_old_new() == pairs  # deterministic (and cached)
