"""Reading table sources into records and selecting the records a linkage needs (linkage_pipeline.probabilistic.records)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from linkage_pipeline.config import load_table_sources
from linkage_pipeline.probabilistic.records import (
    read_table_source,
    records_schema,
    select_records,
)
from linkage_pipeline.synthetic.tables import synthetic_firm_tables

N_FIRMS = 120


def _data_dir(root: Path) -> Path:
    """A data directory with the synthetic left register as CSV, plus a CJK firm and three rows to reject."""
    left, _, _ = synthetic_firm_tables(N_FIRMS, seed=7)
    extra = pd.DataFrame([
        {"firm_id": "L90000", "name": "大阪紡績株式会社", "city": "大阪", "founded": "1882"},
        {"firm_id": "", "name": "Nobody Trading Co.", "city": "Kobe", "founded": "1900"},       # no id
        {"firm_id": "L00003", "name": "Someone Else Ltd.", "city": "Kobe", "founded": "1901"},  # duplicate id
        {"firm_id": "L99999", "name": " ", "city": "", "founded": ""},                        # no value
    ])
    (root / "tables").mkdir(parents=True)
    pd.concat([left, extra], ignore_index=True).to_csv(root / "tables" / "registry_a.csv", index=False)
    (root / "sources.yaml").write_text("tables:\n  registry_a: {path: tables/registry_a.csv, id: firm_id}\n")
    return root


def test_read_table_source_rejects_rows_with_reasons(tmp_path: Path) -> None:
    registry = load_table_sources(_data_dir(tmp_path))
    records, rejected = read_table_source(registry.get("registry_a"))
    n = N_FIRMS + round(0.1 * N_FIRMS) + 1  # firms, their in-table duplicates, the CJK firm
    assert len(records) == n and records["record_id"].is_unique
    assert [r.reason for r in rejected] == [
        f"row {n + 1}: empty id in column 'firm_id'; expected a non-empty id",
        f"row {n + 2}: id 'L00003' is already used by row 4; expected unique ids in column 'firm_id'",
        f"row {n + 3} (id 'L99999'): every value is empty; expected at least one value",
    ]
    assert {(r.source, r.file, r.stage) for r in rejected} == {("registry_a", "tables/registry_a.csv", "table_records")}
    assert records.loc[records["record_id"] == "L90000", "name"].item() == "大阪紡績株式会社"
    assert list(records.columns) == list(records_schema(registry.get("registry_a")))


def _records() -> pd.DataFrame:
    # as written to table_records, but out of row order
    return pd.DataFrame({"source": "registry_a", "record_id": ["b", "a", "c"], "row_number": [2, 1, 3],
                         "name": ["Bob", "Ann", None], "city": ["Kobe", "Osaka", "Kyoto"]})


def test_select_records_keeps_the_columns_asked_for_in_row_order(tmp_path: Path) -> None:
    source = load_table_sources(_data_dir(tmp_path)).get("registry_a")
    got = select_records({"registry_a": _records()}, source, ["city", "name", "city"])
    assert list(got.columns) == ["source", "record_id", "row_number", "city", "name"]
    assert got["record_id"].tolist() == ["a", "b", "c"] and got.index.tolist() == [0, 1, 2]
    assert got["name"].tolist()[:2] == ["Ann", "Bob"] and pd.isna(got["name"].iloc[2])


@pytest.mark.parametrize(
    ("records", "columns", "message"),
    [
        ({}, ["name"], "table_records has no partition 'registry_a'; expected table_records materialized for it "
                       r"first \(table_job\)"),
        ({"registry_a": _records()}, ["name", "founded"], r"table_records partition 'registry_a' lacks columns "
                                                          r"\['founded'\]; expected it re-materialized"),
    ],
)
def test_select_records_names_what_to_run(tmp_path: Path, records, columns, message) -> None:
    source = load_table_sources(_data_dir(tmp_path)).get("registry_a")
    with pytest.raises(ValueError, match=message):
        select_records(records, source, columns)
