"""Which model links: the shipped one, the latest trained one, or a folder; and the shipped model itself."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.multimodal.checkpoints import (
    shipped_model_dir,
    shipped_pretrained_dir,
)
from linkage_pipeline.multimodal.encoder import MultimodalEncoder, file_sha256
from linkage_pipeline.multimodal.preprocessing import model_identity
from linkage_pipeline.multimodal.training.recipe import Recipe, recipe_preprocessing
from linkage_pipeline.multimodal.registry import (
    ModelChoice,
    attach_pretrained,
    card_defaults,
    choose_model,
    linkage_model_row,
    record_trained_model,
    stage_models,
)


def _trained(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for i, stamp in enumerate(["2026-01-01T00:00:01Z", "2026-01-01T00:00:03Z", "2026-01-01T00:00:02Z"]):
        folder = tmp_path / f"m{i}"
        folder.mkdir(exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"x")
        rows.append({"model_id": f"id{i}", "stage": "supcon", "path": str(folder), "created_at": stamp})
    rows.append({"model_id": "c", "stage": "clip", "path": str(tmp_path), "created_at": "2027-01-01T00:00:00Z"})
    return pd.DataFrame(rows)


def test_auto_prefers_the_latest_supervised_model(tmp_path: Path) -> None:
    choice = choose_model("auto", "", _trained(tmp_path))
    assert choice.path == tmp_path / "m1" and "latest trained" in choice.chosen_by
    assert choose_model("shipped", "", _trained(tmp_path)).path == shipped_model_dir()
    assert choose_model("auto", "", None).chosen_by == "shipped model"


@pytest.mark.parametrize("adopted", [True, False])
def test_a_fine_tune_on_reviews_is_chosen_only_when_it_was_adopted(tmp_path: Path, adopted: bool) -> None:
    folder = tmp_path / "reviewed"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    (folder / "model_card.json").write_text(json.dumps({"fine_tuned_on": "link reviews",
                                                        "review_check": {"adopted": adopted}}))
    trained = pd.concat([_trained(tmp_path), pd.DataFrame([{"model_id": "r", "stage": "reviewed", "path": str(folder),
                                                            "created_at": "2026-02-01T00:00:00Z"}])])
    assert choose_model("auto", "", trained).path == (folder if adopted else tmp_path / "m1")


def test_bad_choices_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no trained model yet; materialize training_crops"):
        choose_model("trained", "", None)
    with pytest.raises(ValueError, match="has no config.json"):
        choose_model("directory", str(tmp_path), None)
    with pytest.raises(ValueError, match="model choice must be one of"):
        choose_model("newest", "", None)


def test_shipped_model_loads_with_its_pretrained_companion_and_tuned_defaults() -> None:
    enc = MultimodalEncoder.load(shipped_model_dir())
    pre = MultimodalEncoder.load(shipped_pretrained_dir())
    assert enc.model_id != pre.model_id
    # distilled from the previous release's supervised model and the label-free model, starting from the latter,
    # which is the shipped pretrained/ companion (trained from scratch with the text fold, so its id includes it)
    distil = enc.card["training"]["distil"]
    teachers = [t["model_id"] for t in distil["teachers"]]
    # the lineage names the ids the models had when trained, before the legal-form reading was added to both
    trained_id = [m.card["text_drop"]["model_id_when_trained"] for m in (enc, pre)]
    assert enc.card["parent_model_id"] == distil["start_model_id"] == trained_id[1] == teachers[1]
    assert len(teachers) == 2 and teachers[0] not in (enc.model_id, pre.model_id, *trained_id)
    assert distil["start_parent_model_id"] is None and set(pre.card["training"]) == {"clip"}
    assert pre.card["data"]["knowledge"]["open_vocabulary"] and pre.card["data"]["open_characters"] >= 2500
    for model, folder, when_trained in ((enc, shipped_model_dir(), trained_id[0]),
                                        (pre, shipped_pretrained_dir(), trained_id[1])):
        assert model.card["weights_sha256"] == file_sha256(folder / "model.safetensors")
        assert model.model_id == model.card["model_id"] == model_identity(model.card["weights_sha256"],
                                                                           model.preprocessing)
        assert len(model.preprocessing.text_fold) == model.card["text_fold"]["pairs"] > 500
        # read once more without a legal form when linking: every printed form of the lexicon
        assert model.preprocessing.text_drop == recipe_preprocessing(Recipe()).text_drop
        assert len(model.preprocessing.text_drop) == model.card["text_drop"]["strings"] and "㈱" in model.preprocessing.text_drop
        assert model_identity(model.card["weights_sha256"], replace(model.preprocessing, text_drop=())) == when_trained
    assert 1_000_000 < enc.n_parameters() < 5_000_000
    weight, threshold = card_defaults(shipped_model_dir())
    assert 0.0 <= weight <= 1.0 and 0.0 < threshold < 1.0
    assert enc.card["linking"]["tuned_on"].startswith("validation split")


def test_attach_pretrained_copies_the_folder(tmp_path: Path) -> None:
    src, dst = tmp_path / "pre", tmp_path / "sup"
    src.mkdir()
    dst.mkdir()
    (src / "model_card.json").write_text(json.dumps({"model_id": "p"}))
    out = attach_pretrained(dst, src)
    assert json.loads((out / "model_card.json").read_text()) == {"model_id": "p"}


def test_linkage_model_row_carries_the_card_settings(tmp_path: Path) -> None:
    linking = {"pooling_weight": 0.7, "nomatch_threshold": 0.3}
    (tmp_path / "model_card.json").write_text(json.dumps({"linking": linking}))
    row = linkage_model_row(ModelChoice(tmp_path, tmp_path / "pretrained", "directory x"), "abc")
    assert row.to_dict("records") == [
        {"model_id": "abc", "path": str(tmp_path), "pretrained_path": str(tmp_path / "pretrained"),
         "chosen_by": "directory x", "pooling_weight": 0.7, "nomatch_threshold": 0.3}
    ]
    bare = linkage_model_row(ModelChoice(tmp_path / "none", None, "shipped model"), "m").iloc[0]
    assert bare["pretrained_path"] == "" and bare["pooling_weight"] == 0.5 and np.isnan(bare["nomatch_threshold"])
    shipped = choose_model("shipped", "", None)
    row = linkage_model_row(shipped, "id").iloc[0]
    assert (row["pooling_weight"], row["nomatch_threshold"]) == card_defaults(shipped_model_dir())
    assert row["pretrained_path"] == str(shipped_pretrained_dir())


def test_record_trained_model_replaces_the_row_of_the_same_model(tmp_path: Path) -> None:
    trained = _trained(tmp_path)
    row = pd.DataFrame([{"model_id": "id1", "stage": "supcon", "path": "/new", "created_at": "2028-01-01T00:00:00Z"}])
    out = record_trained_model(trained, row)
    assert out["model_id"].tolist() == ["id0", "id2", "c", "id1"]
    assert out.loc[out["model_id"] == "id1", "path"].tolist() == ["/new"]
    new = pd.DataFrame([{**row.iloc[0], "model_id": "id9"}])
    assert record_trained_model(trained, new)["model_id"].tolist() == ["id0", "id1", "id2", "c", "id9"]


def test_stage_models_are_one_stage_oldest_first(tmp_path: Path) -> None:
    assert stage_models(_trained(tmp_path), "supcon")["model_id"].tolist() == ["id0", "id2", "id1"]
    assert stage_models(_trained(tmp_path), "clip")["model_id"].tolist() == ["c"]
    assert stage_models(None, "clip").empty and stage_models(pd.DataFrame(), "supcon").empty


def test_auto_skips_a_trained_model_that_was_not_adopted(tmp_path: Path) -> None:
    trained = _trained(tmp_path)
    latest = tmp_path / "m1"  # the latest supcon model
    (latest / "model_card.json").write_text(json.dumps({"adoption": {"adopted": False, "why": "worse"}}))
    # auto falls back to the latest adopted one (m2: no record, saved before the check existed), trained still
    # takes the latest, adopted or not
    assert choose_model("auto", "", trained).path == tmp_path / "m2"
    assert choose_model("trained", "", trained).path == latest
    for i in (0, 2):
        (tmp_path / f"m{i}" / "model_card.json").write_text(json.dumps({"adoption": {"adopted": False}}))
    assert choose_model("auto", "", trained).chosen_by == "shipped model"
    (latest / "model_card.json").write_text(json.dumps({"adoption": {"adopted": True}}))
    assert choose_model("auto", "", trained).path == latest


def test_a_trained_model_is_adopted_only_when_it_links_the_validation_firms_better(tmp_path: Path) -> None:
    from linkage_pipeline.multimodal.registry import adoption

    better = adoption({"val_top1_mean": 0.91, "n_val": 40}, {"val_top1_mean": 0.90}, tmp_path)
    assert better["adopted"] and better["n_val"] == 40 and better["baseline"] == str(tmp_path)
    assert "0.910 against 0.900" in better["why"]
    level = adoption({"val_top1_mean": 0.90}, {"val_top1_mean": 0.90}, tmp_path)
    assert not level["adopted"] and "config model: trained" in level["why"]
    unlabelled = adoption({}, {}, tmp_path)
    assert not unlabelled["adopted"] and "no labelled validation firms" in unlabelled["why"]
    unscored = adoption({"val_top1_mean": 0.95}, {}, tmp_path)
    assert not unscored["adopted"] and "could not be scored" in unscored["why"]
