"""Verdicts of the link review: which is in force, how they override record links, how they become labels."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.evaluation import report
from linkage_pipeline.review import verdicts
from linkage_pipeline.schema import RECORD_LINKS

Q1, Q2, Q3, Q4 = "a1" * 8, "a2" * 8, "a3" * 8, "a4" * 8
T1, T2, T3 = "b1" * 8, "b2" * 8, "b3" * 8
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _row(q: str, verdict: str, target: str | None = None, *, minute: int, model: str | None = None,
         undoes: str = "", reviewer: str = "ann") -> pd.DataFrame:
    return verdicts.review_row(query_crop_id=q, verdict=verdict, reviewer=reviewer, target_crop_id=target,
                               target_source="dir" if target else None, model_target_crop_id=model, undoes=undoes,
                               now=T0 + dt.timedelta(minutes=minute))


def _candidates() -> pd.DataFrame:
    rows = [(Q1, T1, 1, 0.9), (Q1, T2, 2, 0.8), (Q2, T2, 1, 0.7), (Q2, T3, 2, 0.69), (Q3, T3, 1, 0.5),
            (Q3, T1, 2, 0.4)]
    return pd.DataFrame([{"query_crop_id": q, "target_crop_id": t, "query_source": "lists", "target_source": "dir",
                          "method": "multimodal", "ocr": "tesseract", "rank": r, "score": s} for q, t, r, s in rows])


def _links() -> pd.DataFrame:
    c = _candidates()
    top = c[c["rank"] == 1].assign(matched=[True, True, False], threshold=0.6, model_id="m", run_id="r")
    return top[[col for col in RECORD_LINKS if col != "reviewed"]]


def test_review_row_checks_every_field_and_names_it() -> None:
    with pytest.raises(ValueError, match="verdict must be one of"):
        _row(Q1, "maybe", minute=0)
    with pytest.raises(ValueError, match="query_crop_id must be a crop id"):
        _row("../../etc/passwd", "none", minute=0)
    with pytest.raises(ValueError, match="target_crop_id of a 'pick' verdict"):
        _row(Q1, "pick", None, minute=0)
    with pytest.raises(ValueError, match="a 'none' verdict names no target"):
        _row(Q1, "none", T1, minute=0)
    with pytest.raises(ValueError, match="must name the review_id"):
        _row(Q1, "undo", minute=0)
    with pytest.raises(ValueError, match="reviewer must be a non-empty name"):
        _row(Q1, "none", minute=0, reviewer="   ")
    long = _row(Q1, "none", minute=0, reviewer="<b>x</b>\n" * 40)
    assert len(long["reviewer"].iloc[0]) == verdicts.MAX_REVIEWER  # kept as text, trimmed, never interpreted


def test_the_latest_review_not_undone_is_in_force() -> None:
    first = _row(Q1, "accept", T1, minute=0, model=T1)
    second = _row(Q1, "pick", T2, minute=1, model=T1)
    undo = _row(Q1, "undo", minute=2, undoes=second["review_id"].iloc[0])
    skip = _row(Q2, "skip", minute=3)
    table = pd.concat([skip, undo, second, first], ignore_index=True)  # any order
    force = verdicts.in_force(table)
    assert force[["query_crop_id", "verdict", "target_crop_id"]].values.tolist() == [[Q1, "accept", T1]]
    assert verdicts.in_force(table, decisions_only=False)["verdict"].tolist() == ["accept", "skip"]
    assert verdicts.last_undoable(table, "ann")["query_crop_id"] == Q2  # the skip is the latest in force
    assert verdicts.last_undoable(table, "bob") is None
    assert verdicts.in_force(None).empty


def test_progress_counts_corrections_against_the_link_the_model_had() -> None:
    table = pd.concat([
        _row(Q1, "accept", T1, minute=0, model=T1),  # agrees
        _row(Q2, "pick", T3, minute=1, model=T2),  # correction
        _row(Q3, "none", minute=2, model=None),  # the model had no match either: agrees
        _row(Q4, "none", minute=3, model=T1),  # correction
    ], ignore_index=True)
    assert verdicts.review_progress(table) == {"reviewed": 4, "corrections": 2, "skipped": 0, "accept": 1,
                                               "pick": 1, "none": 2}


def test_verdicts_replace_the_models_choice_in_record_links() -> None:
    reviews = verdicts.in_force(pd.concat([
        _row(Q1, "none", minute=0, model=T1),
        _row(Q2, "pick", T3, minute=1, model=T2),
        _row(Q3, "accept", T3, minute=2, model=None),
        _row(Q4, "none", minute=3),  # a crop no longer among the links
    ], ignore_index=True))
    out, stats = verdicts.apply_reviews(_links().assign(reviewed=False), reviews, _candidates())
    got = out.set_index("query_crop_id")
    assert list(out.columns) == list(RECORD_LINKS)
    assert (got.loc[Q1, "matched"], got.loc[Q1, "target_crop_id"], got.loc[Q1, "reviewed"]) == (False, T1, True)
    assert (got.loc[Q2, "matched"], got.loc[Q2, "target_crop_id"], got.loc[Q2, "rank"]) == (True, T3, 2)
    assert got.loc[Q2, "score"] == pytest.approx(0.69)
    assert (got.loc[Q3, "matched"], got.loc[Q3, "target_crop_id"]) == (True, T3)
    assert got["reviewed"].all()
    assert stats == {"reviews_applied": 3, "reviews_accepted": 0, "reviews_corrected": 3, "reviews_not_applied": 1}


def test_reviews_become_labels_and_their_own_split() -> None:
    regions = pd.DataFrame({
        "crop_id": [Q1, Q2, Q3, T1, T2, T3], "source_role": ["query"] * 3 + ["target"] * 3, "kind": "entry",
        "true_entity_id": ["F1", None, None, "F1", None, None],
    })
    reviews = verdicts.in_force(pd.concat([_row(Q2, "pick", T3, minute=0), _row(Q3, "none", minute=1),
                                           _row(Q1, "accept", T1, minute=2)], ignore_index=True))
    labels = verdicts.review_labels(regions, reviews, split="reviewed", reviews_only=True).set_index("crop_id")
    assert labels.loc[Q1, "true_entity_id"] == "F1"  # the target's own label
    assert labels.loc[Q2, "true_entity_id"] == labels.loc[T3, "true_entity_id"] == f"review:{T3}"
    assert labels.loc[Q3, "true_entity_id"] == f"review-none:{Q3}"
    assert labels.loc[[Q1, Q2, Q3], "split"].tolist() == ["reviewed"] * 3
    # the evaluation scores the reviewed split: Q1's top candidate T1 right, Q2's top T2 wrong
    table = report.linkage_evaluation_table(_candidates(), labels.reset_index(), report_splits=("reviewed",))
    assert table["split"].tolist() == ["reviewed"]
    assert (table["top1_accuracy"].iloc[0], table["n"].iloc[0]) == (0.5, 2)
    assert np.isnan(regions.set_index("crop_id").loc[Q2, "true_entity_id"] or np.nan)  # the input is not changed
