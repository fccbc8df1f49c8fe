"""SQL models on seeded tables: sections from headings, edge direction, unlinked mentions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from linkage_pipeline import schema
from linkage_pipeline.schema import LABELLED_REGIONS, RECORD_LINKS
from linkage_pipeline.store import Store, load_sql_models

SQL_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"


def _region(rid: str, source: str, page: str, kind: str, y: int, order: int, x: int = 100) -> dict:
    return {"region_id": rid, "source": source, "page_id": page, "x0": x, "y0": y, "x1": x + 200, "y1": y + 40,
            "kind": kind, "reading_order": order, "score": 1.0, "detector": "morphology", "direction": "horizontal", "classifier": "size rules"}


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "db.duckdb", tmp_path / "art")
    store.replace_table("document_sources", pd.DataFrame({
        "name": ["lists", "dir"], "role": ["query", "target"], "direction": ["horizontal", "vertical"],
        "language": "jpn", "layout": "morphology", "ocr": [["rapidocr"], ["rapidocr"]], "primary_ocr": "rapidocr",
        "path": ["/x/lists", "/x/dir"],
    }))
    # One list page: title T, heading 仕入先, supplier S, heading 販賣先 (OCR garbled to 販買先), customer C.
    lists = pd.DataFrame([
        _region("rT", "lists", "p1", "title", 10, 0),
        _region("rH1", "lists", "p1", "heading", 60, 1),
        _region("rS", "lists", "p1", "entry", 110, 2),
        _region("rH2", "lists", "p1", "heading", 160, 3),
        _region("rC", "lists", "p1", "entry", 210, 4),
        _region("rC2", "lists", "p1", "entry", 210, 5, x=400),
    ])
    directory = pd.DataFrame([_region("d1", "dir", "p9", "entry", 10, 0), _region("d2", "dir", "p9", "entry", 10, 1, x=400)])
    store.write_partition("layout_regions", "lists", lists, schema.LAYOUT_REGIONS)
    store.write_partition("layout_regions", "dir", directory, schema.LAYOUT_REGIONS)
    pages = pd.DataFrame({"page_id": ["p1", "p9"], "source": ["lists", "dir"], "file": ["a.png", "b.png"],
                          "page_number": 0, "image_path": ["/a.png", "/b.png"], "width": 1000, "height": 1000,
                          "sha256": ["h1", "h9"]})
    for src in ("lists", "dir"):
        store.write_partition("page_images", src, pages[pages["source"] == src], schema.PAGE_IMAGES)
    regions = pd.concat([lists, directory])
    crops = pd.DataFrame({"crop_id": "c" + regions["region_id"], "region_id": regions["region_id"], "source": regions["source"],
                          "page_id": regions["page_id"], "crop_path": "/c.png", "square_path": "/s.png", "width": 10,
                          "height": 10, "direction": "horizontal"})
    texts = {"rT": "東洋紡績", "rH1": "仕入先", "rS": "明治製菓", "rH2": "販買先", "rC": "大日本製藥", "rC2": "不明商店",
             "d1": "明治製菓株式會社", "d2": "東洋紡績株式會社"}
    ocr = pd.DataFrame({"crop_id": "c" + regions["region_id"], "source": regions["source"], "ocr": "rapidocr",
                        "text": regions["region_id"].map(texts), "confidence": 0.9,
                        "reader": "rapidocr PP-OCRv6_rec_small.onnx reflow-vertical NFKC"})
    for src in ("lists", "dir"):
        store.write_partition("region_crops", src, crops[crops["source"] == src], schema.REGION_CROPS)
        store.write_partition("ocr_texts", src, ocr[ocr["source"] == src], schema.OCR_TEXTS)
        store.write_partition("labelled_regions", src, pd.DataFrame(columns=list(LABELLED_REGIONS)), LABELLED_REGIONS)
    links = pd.DataFrame({
        "query_crop_id": ["crT", "crS", "crC", "crC2"], "target_crop_id": ["cd2", "cd1", "cd1", "cd2"],
        "query_source": "lists", "target_source": "dir", "rank": 1, "score": [0.9, 0.8, 0.2, 0.1],
        "matched": [True, True, False, False], "method": "jaro_winkler", "ocr": "rapidocr", "threshold": 0.5,
        "model_id": "", "run_id": "run-1", "reviewed": [False, True, False, False],
    })
    store.replace_table("record_links", links, RECORD_LINKS)
    for model in load_sql_models(SQL_DIR):
        store.run_sql_model(model)
    return store


def test_sections_come_from_heading_text_then_order(store: Store) -> None:
    entries = store.query("select crop_id, section, title_crop_id, heading_text from int_list_entries order by crop_id")
    assert entries.set_index("crop_id")["section"].to_dict() == {"crC": "customer", "crC2": "customer", "crS": "supplier"}
    assert set(entries["title_crop_id"]) == {"crT"}


def test_edges_point_from_supplier_to_customer_with_unlinked_nodes(store: Store) -> None:
    edges = store.query("select supplier_id, customer_id, supplier_label, customer_label, section from mart_supply_chain_edges "
                        "order by mention_crop_id")
    rows = edges.to_dict("records")
    # 明治製菓 (linked to directory d1) supplies 東洋紡績 (title, linked to d2)
    assert {"supplier_id": "cd1", "customer_id": "cd2", "supplier_label": "明治製菓株式會社",
            "customer_label": "東洋紡績株式會社", "section": "supplier"} in rows
    # 大日本製藥 had no accepted link: it stays its own node, labelled with its OCR text
    assert {"supplier_id": "cd2", "customer_id": "unlinked:crC", "supplier_label": "東洋紡績株式會社",
            "customer_label": "大日本製藥", "section": "customer"} in rows
    assert len(rows) == 3


def test_stg_crop_texts_has_only_linkable_regions(store: Store) -> None:
    kinds = store.query("select distinct kind from stg_crop_texts order by kind")["kind"].tolist()
    assert kinds == ["entry", "title"]
    assert store.query("select count(*) as n from stg_crop_texts")["n"].item() == 6  # 4 list + 2 directory, one engine


def test_link_provenance_traces_each_link_to_both_crops_pages_boxes_and_texts(store: Store) -> None:
    prov = store.query("select * from mart_link_provenance order by query_crop_id")
    assert len(prov) == 4 and set(prov["run_id"]) == {"run-1"}
    row = prov.set_index("query_crop_id").loc["crS"]
    assert (row["target_crop_id"], row["query_text"], row["target_text"]) == ("cd1", "明治製菓", "明治製菓株式會社")
    assert row["query_source"] == "lists" and row["target_source"] == "dir"
    assert row["query_page"] and row["target_page"] and row["query_x1"] > row["query_x0"]
    assert bool(row["matched"]) and row["score"] == 0.8 and row["method"] == "jaro_winkler"
    assert prov.set_index("query_crop_id")["reviewed"].to_dict() == {"crC": False, "crC2": False, "crS": True,
                                                                      "crT": False}


def test_a_list_without_any_title_or_heading_gives_no_entries_and_no_edges(store: Store) -> None:
    """Empty is a result: when layout finds no title and no heading on the list pages (every region an entry),
    the listed names are kept without a reporting firm or section, there are no edges, and the models still run."""
    regions = store.read_partition("layout_regions", "lists", schema.LAYOUT_REGIONS).assign(kind="entry")
    store.write_partition("layout_regions", "lists", regions, schema.LAYOUT_REGIONS)
    for model in load_sql_models(SQL_DIR):
        store.run_sql_model(model)
    entries = store.query("select title_crop_id, section from int_list_entries")
    assert len(entries) == 6 and entries["title_crop_id"].isna().all() and set(entries["section"]) == {"unknown"}
    edges = store.query("select * from mart_supply_chain_edges")
    assert edges.empty and {"supplier_id", "customer_id"} <= set(edges.columns)


def test_names_on_the_line_of_a_run_in_heading_belong_to_its_section(store: Store) -> None:
    """【仕入先】 and the first names on one line: the names share the heading's row, and follow it in reading order."""
    regions = store.read_partition("layout_regions", "lists", schema.LAYOUT_REGIONS)
    same_row = {"rS": 60, "rC": 160, "rC2": 160}  # rH1 is at y 60, rH2 at y 160
    regions["y0"] = [same_row.get(r, y) for r, y in zip(regions["region_id"], regions["y0"], strict=True)]
    store.write_partition("layout_regions", "lists", regions, schema.LAYOUT_REGIONS)
    for model in load_sql_models(SQL_DIR):
        store.run_sql_model(model)
    entries = store.query("select crop_id, section from int_list_entries order by crop_id")
    assert entries.set_index("crop_id")["section"].to_dict() == {"crC": "customer", "crC2": "customer", "crS": "supplier"}
