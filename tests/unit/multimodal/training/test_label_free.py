"""Label-free training crops (knowledge-made views of printed names) and the CLIP stage's instance loss."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.tiny import TINY

from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.training import label_free as lf
from linkage_pipeline.multimodal.training.losses import clip_loss
from linkage_pipeline.multimodal.training.trainer import (
    TrainConfig,
    load_checkpoint_state,
    train,
)
from linkage_pipeline.synthetic.firms import OLD_NEW_PAIRS
from linkage_pipeline.synthetic.fonts import find_font


@pytest.fixture(scope="module")
def names_set():
    return lf.build_label_free_set(10, 3, seed=3)


def test_variant_pairs_come_from_unicode_data_not_the_generators_list() -> None:
    pairs = lf.variant_pairs()
    assert pairs["會"] == "会" and pairs["会"] == "會" and pairs["國"] == "国"
    # the generator's hand list is not copied in: some of its pairs Unihan does not give are absent
    hand_only = [(old, new) for old, new in OLD_NEW_PAIRS if pairs.get(old) != new]
    assert ("澤", "沢") in hand_only and 20 <= len(hand_only) <= 40
    rng = np.random.default_rng(0)
    assert lf.swap_forms("會國", rng, 1.0, pairs) == "会国" and lf.swap_forms("会国", rng, 1.0, pairs) == "會國"
    assert lf.swap_forms("株式會社國光", rng, 0.0, pairs) == "株式會社國光"


def test_legal_forms_are_found_and_reprinted_around_the_same_name() -> None:
    assert lf.find_legal_form("東洋紡績株式會社") == (4, 8, 0)
    assert lf.find_legal_form("（株）東洋紡績") == (0, 3, 0)
    assert lf.find_legal_form("東洋紡績") is None
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        out = lf.vary_legal_form("東洋紡績株式會社", rng)
        found = lf.find_legal_form(out)
        core = out if found is None else out[: found[0]] + out[found[1]:]
        assert core == "東洋紡績"
        assert found is None or found[2] == 0  # still a kabushiki kaisha, never another legal form
        seen.add(out)
    assert "東洋紡績" in seen and "㈱東洋紡績" in seen and "東洋紡績（株）" in seen
    assert lf.vary_legal_form("東洋紡績", rng) == "東洋紡績"


def test_glyph_confusions_find_look_alikes_by_rendering() -> None:
    font = find_font("IPAMincho")
    table = lf.glyph_confusions("未末東西日曰", font.path, font.index, k=1)
    assert table["未"] == "末" and table["日"] == "曰"
    rng = np.random.default_rng(2)
    assert lf.glyph_noise("未来", rng, table, 0.0) == "未来"
    noisy = [lf.glyph_noise("未未未未未未", rng, table, 1.0) for _ in range(50)]
    assert all(set(t) <= {"未", "末"} for t in noisy) and any("末" in t for t in noisy)


def test_label_free_set_has_one_class_per_name_and_knowledge_made_views(names_set) -> None:
    data = names_set
    assert len(data) == 30 and data.labels.tolist() == [i // 3 for i in range(30)]
    assert [f.canonical for f in data.firms] == data.true_texts[::3]  # the first view keeps the printed name
    assert set(data.directions) == {"horizontal", "vertical"}
    assert data.info["knowledge"] == {k: True for k in lf.KNOWLEDGE} and data.info["variant_pairs"] > 500
    assert len(data.info["fonts"]) >= 20
    plain = lf.build_label_free_set(10, 3, seed=3, knowledge=lf.Knowledge.without("variants", "legal_forms",
                                                                                "glyph_noise", "typefaces"))
    assert plain.true_texts == [t for t in plain.true_texts[::3] for _ in range(3)]
    assert plain.texts == [unicodedata.normalize("NFKC", t) for t in plain.true_texts]
    assert len(plain.info["fonts"]) == 1 and plain.info["error_rate"] == 0.0
    with pytest.raises(ValueError, match="unknown knowledge source"):
        lf.Knowledge.without("pictures")
    with pytest.raises(ValueError, match="views >= 2"):
        lf.build_label_free_set(10, 1)


def test_string_neighbours_pair_each_name_with_the_most_similar() -> None:
    names = ["東洋紡績", "三井物産", "東洋紡織", "三井物産株式會社"]
    nb = lf.string_neighbours(names, 2)
    assert nb.tolist() == [[0, 2], [1, 3], [2, 0], [3, 1]]
    with pytest.raises(ValueError, match="k must be in"):
        lf.string_neighbours(names, 5)


def test_clip_loss_with_labels_counts_every_view_of_a_class_as_positive() -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    unique = torch.arange(6)
    assert float(clip_loss(img, txt, 2.0, unique)) == pytest.approx(float(clip_loss(img, txt, 2.0)), rel=1e-6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    swapped = txt[[1, 0, 3, 2, 5, 4]]  # each text paired with the other view of its class
    assert float(clip_loss(img, swapped, 2.0, labels)) == pytest.approx(float(clip_loss(img, txt, 2.0, labels)),
                                                                        rel=1e-5)
    with pytest.raises(ValueError, match="labels must be"):
        clip_loss(img, txt, 2.0, torch.arange(5))


def test_clip_stage_with_instance_loss_trains_on_groups_and_resumes(names_set, tmp_path: Path) -> None:
    config = TrainConfig(stage="clip", lr=1e-3, batch_size=12, m=3, k=2, epochs=12, t0=1000, checkpoint_every=5,
                         instance_weight=1.0)
    enc = MultimodalEncoder.create(seed=11, **TINY)
    result = train(enc, names_set, config, checkpoint_dir=tmp_path)
    assert result.steps == len(result.losses) >= 12 and np.isfinite(result.losses).all()
    assert np.mean(result.losses[-3:]) < 0.8 * np.mean(result.losses[:3])
    state = load_checkpoint_state(tmp_path)
    # hard-negative sets by string similarity are kept with the checkpoint, so a resumed run sees the same batches
    assert len(state["neighbours"]) == 10 and all(row[0] == i for i, row in enumerate(state["neighbours"]))


def test_open_names_cover_the_japanese_kanji_lists_and_avoid_the_evaluation_stems() -> None:
    from linkage_pipeline.multimodal import variants
    from linkage_pipeline.synthetic.firms import (
        INDUSTRY_WORDS,
        to_new_forms,
        vocabulary_characters,
    )

    kanji, katakana = lf.open_inventory()
    lists = variants.load_japanese_lists()
    assert set(kanji) <= lists.joyo | lists.jinmeiyo and len(kanji) >= 2500 and "ア" in katakana
    names = lf.open_names(3000, seed=4)
    assert len(set(names)) == 3000 and names == lf.open_names(3000, seed=4) and names != lf.open_names(3000, seed=5)
    legal = "".join(f for forms in lf.LEGAL_FORM_LEXICON for f in forms)
    words = "".join(INDUSTRY_WORDS) + to_new_forms("".join(INDUSTRY_WORDS))
    allowed = set(kanji) | set(katakana) | set(legal) | set(words)
    assert all(set(n) <= allowed for n in names)
    used = {c for n in names for c in n}
    # most of the lists are seen, and far more than the few hundred characters our firm generator prints
    assert len(used & set(kanji)) > 0.9 * len(kanji) and len(used - set(vocabulary_characters())) > 2000
    reserved = lf._reserved_stems()
    assert "東洋" in reserved or "三井" in reserved
    assert not any(r in n for n in names for r in reserved)
    assert not any(n[0] in "ァィゥェォッャュョンヲー" for n in names)
    with pytest.raises(ValueError, match="n must be >= 1"):
        lf.open_names(0, seed=1)


def test_half_of_the_label_free_names_are_open_and_the_ablation_turns_them_off() -> None:
    from linkage_pipeline.synthetic.firms import vocabulary_characters

    known = set(vocabulary_characters())
    mixed = lf._names(400, 7, lf.OPEN_SHARE)
    plain = lf._names(400, 7)
    assert all(set(unicodedata.normalize("NFKC", n)) <= {unicodedata.normalize("NFKC", c) for c in known}
               | set("（）()㈱㈲㈾㈴") for n in plain)
    changed = sum(a != b for a, b in zip(mixed, plain, strict=True))
    assert 160 <= changed <= 240  # about half, at seeded positions
    outside = sum(not set(n) <= known | set("（）()㈱㈲㈾㈴") for n in mixed)
    assert 0.8 * changed <= outside <= changed  # open names print characters our generator never does
    data = lf.build_label_free_set(6, 2, seed=3, knowledge=lf.Knowledge.without("open_vocabulary"))
    assert data.info["open_share"] == 0.0 and data.info["open_characters"] == 0
    assert [f.canonical for f in data.firms] == lf._names(6, 3)
