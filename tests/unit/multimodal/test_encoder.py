"""Unit tests of linkage_pipeline.multimodal (encoder, tokenizer, checkpoints): tokenizer, embedding API, our format, HF-CLIP and rinna loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.tiny import TINY
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from linkage_pipeline.multimodal.checkpoints import (
    load_encoder,
    load_hf_clip,
    load_rinna_clip,
)
from linkage_pipeline.multimodal.encoder import (
    MultimodalEncoder,
    file_sha256,
    pool_embeddings,
)
from linkage_pipeline.multimodal.tokenizer import build_char_tokenizer
from linkage_pipeline.multimodal.towers import RinnaDualEncoder


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(max_length=24)


@pytest.fixture(scope="module")
def encoder() -> MultimodalEncoder:
    return MultimodalEncoder.create(seed=3, **TINY)


def _crops(n: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = (int(rng.integers(60, 140)), 24) if i % 2 == 0 else (24, int(rng.integers(60, 140)))
        img = Image.new("L", (w, h), 230)
        d = ImageDraw.Draw(img)
        for j in range(4):
            x, y = (6 + 12 * j, 6) if w > h else (6, 6 + 12 * j)
            d.rectangle((x, y, x + 8, y + 10), fill=int(rng.integers(10, 90)))
        out.append(img)
    return out


TEXTS = ["東洋紡績株式會社", "日本鐵道", "(株)明治製菓", "", "大日本印刷（株）"]
DIRS = ["horizontal", "vertical", "horizontal", "vertical", "horizontal"]


@pytest.mark.parametrize("text", ["株式會社", "日本鐵道會社", "明治製藥", "東洋紡", "ABC-12", "ひらがなカタカナ"])
def test_tokenizer_round_trip_keeps_old_forms(tokenizer, tmp_path: Path, text: str) -> None:
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(str(tmp_path))
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    ids = reloaded(text)["input_ids"]
    assert ids == tokenizer(text)["input_ids"]
    tokens = reloaded.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "[UNK]" not in tokens
    assert "".join(tokens[1:-1]) == text


def test_tokenizer_normalises_like_ocr_and_marks_unknown(tokenizer) -> None:
    # NFKC: full-width brackets and the circled ㈱ read as (株), as the OCR engines return them.
    assert tokenizer.convert_ids_to_tokens(tokenizer("㈱")["input_ids"])[1:-1] == ["(", "株", ")"]
    assert tokenizer("（株）")["input_ids"] == tokenizer("(株)")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("😀")["input_ids"])[1] == "[UNK]"
    assert tokenizer("東 洋")["input_ids"] == tokenizer("東洋")["input_ids"]


def test_build_tokenizer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_length must be >= 3"):
        build_char_tokenizer(max_length=2)


def test_embeddings_are_unit_norm_and_pooled_weight_semantics(encoder: MultimodalEncoder) -> None:
    crops = _crops()
    img = encoder.encode_images(crops, directions=DIRS)
    txt = encoder.encode_texts(TEXTS)
    assert img.shape == txt.shape == (5, 16) and img.dtype == np.float32
    for w in (0.0, 0.3, 0.5, 1.0):
        pooled = encoder.encode_pooled(crops, TEXTS, w, directions=DIRS)
        np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_pooled(crops, TEXTS, 1.0, directions=DIRS), img, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_pooled(crops, TEXTS, 0.0, directions=DIRS), txt, atol=1e-5)
    half = img + txt
    np.testing.assert_allclose(
        encoder.encode_pooled(crops, TEXTS, 0.5, directions=DIRS),
        half / np.linalg.norm(half, axis=1, keepdims=True),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="weight must be in"):
        encoder.encode_pooled(crops, TEXTS, 1.5)
    with pytest.raises(ValueError, match="one text per image"):
        encoder.encode_pooled(crops, TEXTS[:2])
    assert encoder.encode_texts([]).shape == (0, 16)


def test_batching_and_length_sorting_do_not_change_embeddings(encoder: MultimodalEncoder) -> None:
    crops = _crops()
    np.testing.assert_allclose(
        encoder.encode_texts(TEXTS, batch_size=2), encoder.encode_texts(TEXTS, batch_size=64), atol=1e-5
    )
    np.testing.assert_allclose(encoder.encode_images(crops, batch_size=2), encoder.encode_images(crops), atol=1e-5)
    single = np.concatenate([encoder.encode_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(single, encoder.encode_texts(TEXTS), atol=1e-5)


@pytest.fixture(scope="module", params=["tiny_vit", "tiny_cnn", "shipped"])
def any_encoder(request) -> MultimodalEncoder:
    if request.param == "shipped":
        from linkage_pipeline.multimodal.checkpoints import shipped_model_dir

        return load_encoder(shipped_model_dir())
    return MultimodalEncoder.create(seed=3, **TINY, vision_tower=request.param.removeprefix("tiny_"))


def test_an_embedding_does_not_depend_on_what_is_embedded_with_it(any_encoder: MultimodalEncoder) -> None:
    """A text or crop embedded alone, among longer texts or other crops, first or last of a batch or in a short last
    batch, gives the same bits: an incremental run (a new page's crops embedded on their own) must equal a run that
    embeds every crop at once. Before, a batch was padded to its longest text and ran on as many rows as it had,
    and the float rounding followed those shapes."""
    enc = any_encoder
    short = "明治製菓"
    longer = ["東洋紡績株式會社大阪支店", "大日本印刷株式會社東京工場", "日本鐵道株式會社", "三菱重工業株式會社長崎造船所",
              "(株)日立製作所", "住友金属工業株式會社", "帝國人造絹絲株式會社", "東京瓦斯株式會社", "鐘淵紡績株式會社",
              "日本郵船株式會社", "王子製紙株式會社"]
    alone = enc.encode_texts([short], batch_size=8)[0]
    for texts in ([*longer[:3], short, *longer[3:]], [*longer, short], [short, *longer], [*longer[:9], short]):
        at = texts.index(short)
        np.testing.assert_array_equal(enc.encode_texts(texts, batch_size=8)[at], alone)
    twice = enc.encode_texts([short, *longer, short], batch_size=8)
    np.testing.assert_array_equal(twice[0], twice[-1])

    crops = _crops(12)
    crop_alone = enc.encode_images(crops[:1], directions=DIRS[:1], batch_size=8)[0]
    dirs = [DIRS[i % 2] for i in range(12)]
    for order in ([0, *range(1, 12)], [*range(1, 12), 0], [*range(1, 10), 0]):
        got = enc.encode_images([crops[i] for i in order], directions=[dirs[i] for i in order], batch_size=8)
        np.testing.assert_array_equal(got[order.index(0)], crop_alone)


def test_texts_are_padded_to_a_length_of_their_own(encoder: MultimodalEncoder) -> None:
    assert [encoder.padded_length(n) for n in (1, 2, 8, 9, 16, 17, 24)] == [8, 8, 8, 16, 16, 24, 24]
    tokens = encoder.tokenize(["日本", "明治製菓"], length=16)
    assert tokens["input_ids"].shape == (2, 16) and tokens["attention_mask"].sum(dim=1).tolist() == [4, 6]
    with pytest.raises(ValueError, match="shorter than the longest text"):
        encoder.tokenize(["明治製菓"], length=3)


def test_vertical_crops_are_reflowed_and_padded_not_squashed(encoder: MultimodalEncoder) -> None:
    column = _crops(2)[1]
    assert column.height > column.width
    px_v = encoder.prepare_image(column, "vertical")
    assert px_v.shape == (3, 32, 32) and px_v.dtype == np.float32
    assert not np.allclose(px_v, encoder.prepare_image(column, "horizontal"))
    with pytest.raises(ValueError, match="direction must be"):
        encoder.prepare_image(column, "diagonal")


def test_save_load_gives_identical_embeddings_and_card(encoder: MultimodalEncoder, tmp_path: Path) -> None:
    model_id = encoder.save(tmp_path / "m", card={"data": {"n_firms": 3}, "metrics": {"top1": 0.5}})
    assert model_id == file_sha256(tmp_path / "m" / "model.safetensors")
    loaded = MultimodalEncoder.load(tmp_path / "m", device="cpu")
    assert loaded.model_id == model_id
    crops = _crops()
    np.testing.assert_array_equal(
        loaded.encode_pooled(crops, TEXTS, directions=DIRS), encoder.encode_pooled(crops, TEXTS, directions=DIRS)
    )
    card = json.loads((tmp_path / "m" / "model_card.json").read_text(encoding="utf-8"))
    assert card["model_id"] == model_id and card["metrics"] == {"top1": 0.5} and card["n_parameters"] > 0
    assert "code_version" in card and card["data"] == {"n_firms": 3}
    assert load_encoder(tmp_path / "m").model_id == model_id
    assert not list((tmp_path / "m").glob("*.bin"))
    # Same weights, same id; the id is of the weights, not of the folder.
    assert encoder.save(tmp_path / "m2") == model_id


def test_load_rejects_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing"):
        MultimodalEncoder.load(tmp_path)
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickle"):
        load_hf_clip(tmp_path)


def test_hf_clip_checkpoint_loads_from_a_local_directory(tokenizer, tmp_path: Path) -> None:
    from transformers import CLIPModel

    from linkage_pipeline.multimodal.towers import small_clip_config

    torch.manual_seed(0)
    reference = CLIPModel(small_clip_config(len(tokenizer), **TINY)).eval()
    reference.save_pretrained(str(tmp_path), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp_path))
    enc = load_hf_clip(tmp_path, device="cpu")
    assert enc.model_id == file_sha256(tmp_path / "model.safetensors")
    assert enc.preprocessing.image_size == 32
    crops = _crops(3)
    px = enc.pixel_values(crops)
    with torch.no_grad():
        expected = reference.visual_projection(reference.vision_model(pixel_values=px).pooler_output).numpy()
        ids = enc.tokenize(TEXTS[:3])
        expected_t = reference.text_projection(reference.text_model(**ids).pooler_output).numpy()
    np.testing.assert_allclose(
        enc.encode_images(crops), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5
    )
    np.testing.assert_allclose(
        enc.encode_texts(TEXTS[:3]), expected_t / np.linalg.norm(expected_t, axis=1, keepdims=True), atol=1e-5
    )
    assert load_encoder(tmp_path).kind == "clip"


def test_rinna_layout_checkpoint_loads(tokenizer, tmp_path: Path) -> None:
    from transformers import BertConfig, ViTConfig

    text_cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    vision_cfg = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(1)
    reference = RinnaDualEncoder(text_cfg, vision_cfg, projection_dim=16).eval()
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    # The layout: BERT and ViT towers under rinna's names, bias-free projections.
    assert "text_model.embeddings.word_embeddings.weight" in state
    assert "vision_model.embeddings.patch_embeddings.projection.weight" in state
    assert "text_projection.weight" in state and "text_projection.bias" not in state
    assert "visual_projection.bias" not in state and not any(k.startswith("text_model.pooler") for k in state)
    save_file(state, str(tmp_path / "model.safetensors"))
    config = {
        "model_type": "clip",
        "projection_dim": 16,
        "text_config": {**text_cfg.to_dict(), "model_type": "bert"},
        "vision_config": {**vision_cfg.to_dict(), "model_type": "vit"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer.save_pretrained(str(tmp_path))
    enc = load_rinna_clip(tmp_path, device="cpu")
    assert enc.kind == "rinna" and enc.dim == 16 and enc.preprocessing.text_prefix_cls
    ids = enc.tokenize(["日本鐵道"])["input_ids"][0].tolist()
    assert ids == [tokenizer.cls_token_id, *tokenizer("日本鐵道", add_special_tokens=False)["input_ids"]]
    crops = _crops(3)
    with torch.no_grad():
        expected_i = reference.image_features(enc.pixel_values(crops)).numpy()
        tok = enc.tokenize(TEXTS[:3])
        expected_t = reference.text_features(tok["input_ids"], tok["attention_mask"]).numpy()
    np.testing.assert_allclose(enc.encode_images(crops), pool_embeddings(expected_i, expected_i, 1.0), atol=1e-5)
    np.testing.assert_allclose(enc.encode_texts(TEXTS[:3]), pool_embeddings(expected_t, expected_t, 0.0), atol=1e-5)
    assert load_encoder(tmp_path).kind == "rinna"
    with pytest.raises(ValueError, match="only 'clip' models"):
        enc.save(tmp_path / "out")


def test_rinna_loader_rejects_other_layouts(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"text_config": {"model_type": "clip_text_model"}, "vision_config": {"model_type": "vit"}}),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="expected 'bert' and 'vit'"):
        load_rinna_clip(tmp_path)


def _glyph_line(direction: str, n: int = 6) -> Image.Image:
    """``n`` distinct 16-px 'glyphs' (block patterns) set 20 px apart, horizontally or vertically."""
    long, short = 20 * n + 8, 28
    img = Image.new("L", (long, short) if direction == "horizontal" else (short, long), 235)
    d = ImageDraw.Draw(img)
    for j in range(n):
        a = 6 + 20 * j
        for k in range(4):  # a 4-bit pattern per glyph: quadrants filled or not
            if (j + 1) >> k & 1 or k == 3:
                gx, gy = 8 * (k % 2), 8 * (k // 2)  # the glyph is the same picture in both orientations
                x, y = (a + gx, 6 + gy) if direction == "horizontal" else (6 + gx, a + gy)
                box = (x, y, x + 7, y + 7)
                d.rectangle(box, fill=20)
    return img


def test_grid_layout_puts_cells_of_both_orientations_in_the_same_square() -> None:
    from linkage_pipeline.multimodal.preprocessing import Preprocessing, character_tiles

    h, v = _glyph_line("horizontal"), _glyph_line("vertical")
    assert len(character_tiles(h, "horizontal")[0]) == 6 and len(character_tiles(v, "vertical")[0]) == 6
    tiny = {k: x for k, x in TINY.items() if k not in ("image_size", "max_length")}
    prep = Preprocessing(image_size=32, max_length=24, layout="grid")
    enc = MultimodalEncoder.create(seed=3, preprocessing=prep, **tiny)
    px_h, px_v = enc.prepare_image(h, "horizontal"), enc.prepare_image(v, "vertical")
    assert px_h.shape == (3, 32, 32)
    # The two orientations of one name give nearly the same picture; a line layout would not.
    assert np.abs(px_h - px_v).mean() < 0.25 * np.abs(px_h - px_h.mean()).mean()
    with pytest.raises(ValueError, match="layout must be"):
        Preprocessing(layout="spiral")


def test_cnn_vision_tower_saves_and_reloads(tmp_path: Path) -> None:
    from linkage_pipeline.multimodal.preprocessing import Preprocessing
    from linkage_pipeline.multimodal.towers import ConvVisionTower

    tiny = {k: x for k, x in TINY.items() if k not in ("image_size", "max_length", "patch_size")}
    prep = Preprocessing(image_size=32, max_length=24, layout="grid")
    enc = MultimodalEncoder.create(seed=5, preprocessing=prep, vision_tower="cnn", cnn_widths=(8, 8, 16, 16), **tiny)
    assert isinstance(enc.model.model.vision_model, ConvVisionTower)
    crops = _crops(4)
    dirs = ["horizontal", "vertical"] * 2
    before = enc.encode_pooled(crops, TEXTS[:4], directions=dirs)
    assert before.shape == (4, 16)
    enc.save(tmp_path / "cnn")
    loaded = load_encoder(tmp_path / "cnn")
    assert isinstance(loaded.model.model.vision_model, ConvVisionTower)
    assert loaded.preprocessing == prep
    np.testing.assert_allclose(loaded.encode_pooled(crops, TEXTS[:4], directions=dirs), before, atol=1e-5)
    with pytest.raises(ValueError, match="vision_tower must be"):
        MultimodalEncoder.create(seed=5, vision_tower="mlp", **TINY)


def test_text_fold_reads_old_forms_as_new_and_is_part_of_the_model_id(tmp_path: Path) -> None:
    from dataclasses import replace

    from linkage_pipeline.multimodal.preprocessing import Preprocessing, model_identity

    tiny = {k: x for k, x in TINY.items() if k not in ("image_size", "max_length", "patch_size")}
    prep = Preprocessing(image_size=32, max_length=24, layout="grid")
    plain = MultimodalEncoder.create(seed=5, preprocessing=prep, vision_tower="cnn", cnn_widths=(8, 8, 16, 16), **tiny)
    plain_id = plain.save(tmp_path / "plain")
    folded = MultimodalEncoder.load(tmp_path / "plain")
    folded.preprocessing = replace(prep, text_fold=(("會", "会"), ("藥", "薬")))
    folded_id = folded.save(tmp_path / "folded")
    weights = file_sha256(tmp_path / "folded" / "model.safetensors")
    # same weights, other reading of the texts: another model id, so cached embeddings are never mixed
    assert weights == plain_id != folded_id == model_identity(weights, folded.preprocessing)
    loaded = MultimodalEncoder.load(tmp_path / "folded")
    assert loaded.model_id == folded_id and loaded.preprocessing.text_fold == (("會", "会"), ("藥", "薬"))
    texts = ["福田製藥株式會社", "福田製薬株式会社", "福田製菓株式會社"]
    assert loaded.token_ids(texts[:1]) == loaded.token_ids(texts[1:2]) == plain.token_ids(texts[1:2])
    assert plain.token_ids(texts[:1]) != plain.token_ids(texts[1:2])
    emb = loaded.encode_texts(texts)
    np.testing.assert_array_equal(emb[0], emb[1])  # one string after folding, one embedding
    np.testing.assert_array_equal(emb[1], plain.encode_texts(texts[1:2])[0])
    assert not np.allclose(emb[0], emb[2])


def test_text_fold_rejects_pairs_that_are_not_one_character_each() -> None:
    from linkage_pipeline.multimodal.preprocessing import Preprocessing

    with pytest.raises(ValueError, match="pairs of single characters"):
        Preprocessing(text_fold=(("會社", "会社"),))
    with pytest.raises(ValueError, match="names an old character twice"):
        Preprocessing(text_fold=(("會", "会"), ("會", "合")))


def test_a_bad_text_fold_in_a_model_folder_names_the_file(tmp_path: Path) -> None:
    from linkage_pipeline.multimodal.preprocessing import Preprocessing

    tiny = {k: x for k, x in TINY.items() if k not in ("image_size", "max_length", "patch_size")}
    prep = Preprocessing(image_size=32, max_length=24, layout="grid")
    MultimodalEncoder.create(seed=5, preprocessing=prep, vision_tower="cnn", cnn_widths=(8, 8, 16, 16), **tiny).save(
        tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "preprocessing.json").read_text(encoding="utf-8"))
    (tmp_path / "m" / "preprocessing.json").write_text(json.dumps({**raw, "text_fold": [["會社", "会社"]]}),
                                                      encoding="utf-8")
    with pytest.raises(ValueError, match=r"m/preprocessing.json: text_fold must hold \(old, new\) pairs"):
        MultimodalEncoder.load(tmp_path / "m")


def test_text_drop_reads_a_text_with_and_without_its_legal_form_and_is_part_of_the_model_id(tmp_path: Path) -> None:
    from dataclasses import replace

    from linkage_pipeline.multimodal.preprocessing import Preprocessing, model_identity, text_without

    tiny = {k: x for k, x in TINY.items() if k not in ("image_size", "max_length", "patch_size")}
    prep = Preprocessing(image_size=32, max_length=24, layout="grid", text_fold=(("會", "会"),))
    plain = MultimodalEncoder.create(seed=5, preprocessing=prep, vision_tower="cnn", cnn_widths=(8, 8, 16, 16), **tiny)
    plain_id = plain.save(tmp_path / "plain")
    dropping = MultimodalEncoder.load(tmp_path / "plain")
    dropping.preprocessing = replace(prep, text_drop=("株式会社", "合名会社", "(株)"))
    drop_id = dropping.save(tmp_path / "drop")
    assert plain_id != drop_id == model_identity(file_sha256(tmp_path / "drop" / "model.safetensors"),
                                                 dropping.preprocessing)
    loaded = MultimodalEncoder.load(tmp_path / "drop")
    assert loaded.model_id == drop_id and loaded.preprocessing.text_drop == ("株式会社", "合名会社", "(株)")
    texts = ["合名會社極東造船所", "極東造船所 株式會社", "(株)極東造船所", "極東造船所", "株式会社", "", None]
    # the old form 會 is folded before the legal form is looked for; a text that is only a legal form stays whole
    assert text_without(loaded.preprocessing, texts) == ["極東造船所", "極東造船所", "極東造船所", None, None, None, None]
    emb = loaded.encode_texts(texts)
    base = plain.encode_texts(texts)
    name = plain.encode_texts(["極東造船所"])[0]
    for i in range(3):  # the mean of the two readings, normalised
        mean = base[i] + name
        np.testing.assert_allclose(emb[i], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_array_equal(emb[3:], base[3:])  # nothing to drop: one reading, as before
    # a text's embedding does not depend on its batch-mates, with or without the second reading
    np.testing.assert_array_equal(loaded.encode_texts(texts[:1])[0], emb[0])
    with pytest.raises(ValueError, match="text_drop must hold non-empty strings"):
        Preprocessing(text_drop=("株式会社", " "))
