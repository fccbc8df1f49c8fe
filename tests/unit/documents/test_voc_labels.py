"""Layout-only labels from PASCAL VOC files (NDL-DocL), and body regions kept out of crops and OCR scoring."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from linkage_pipeline import schema
from linkage_pipeline.config import SourceConfig
from linkage_pipeline.documents.chain import (
    detect_page_regions,
    extract_crops,
    extract_crops_incremental,
)
from linkage_pipeline.documents.labels import (
    label_regions,
    read_labels,
    read_voc_labels,
    voc_to_labels_csv,
)
from linkage_pipeline.documents.pages import scan_pages
from linkage_pipeline.evaluation import report

NDL_DOCL = Path(__file__).resolve().parents[2] / "data" / "real-pages" / "ndl-docl"
PAGES = ("1029114_5.jpg", "1029114_6.jpg")
LABEL_FRAME_COLUMNS = ["page", "page_number", "x0", "y0", "x1", "y1", "text", "entity_id", "role"]


def make_source(root: Path, name: str = "src", layout: str = "morphology") -> SourceConfig:
    folder = root / name
    (folder / "pages").mkdir(parents=True)
    return SourceConfig(name=name, role="query", direction="horizontal", path=folder.resolve(), layout=layout)


def ndl_source(tmp_path: Path) -> SourceConfig:
    """The two NDL-DocL pages with their XML files beside them, as the dataset ships them."""
    src = make_source(tmp_path, "ndl_docl")
    for page in PAGES:
        for suffix in (".jpg", ".xml"):
            shutil.copyfile(NDL_DOCL / Path(page).with_suffix(suffix).name, src.path / "pages" / Path(page).with_suffix(suffix).name)
    return src


def write_page(path: Path, size: tuple[int, int] = (200, 100)) -> None:
    """A page with one black bar; the bar's width depends on the name, so no two pages are duplicates."""
    img = Image.new("L", size, 255)
    img.paste(0, (20, 20, 60 + sum(path.as_posix().encode()) % 100, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def voc(filename: str, objects: str, size: str = "<size><width>200</width><height>100</height><depth>3</depth></size>") -> str:
    return f"<annotation><folder></folder><filename>{filename}</filename>{size}{objects}</annotation>"


def obj(name: str, xmin: object, ymin: object, xmax: object, ymax: object) -> str:
    return (f"<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


# -- the reader on the real NDL-DocL files -------------------------------------------------------------------


def test_reads_the_ndl_docl_pages_beside_their_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = ndl_source(tmp_path)
    with caplog.at_level(logging.INFO, logger="linkage_pipeline.documents.labels"):
        labels, rejected = read_labels(src)  # no labels.csv: the VOC files are read
    assert rejected == []
    assert labels is not None and labels.columns.tolist() == LABEL_FRAME_COLUMNS
    counts = labels.groupby(["page", "role"]).size().to_dict()
    # 1029114_5: 44 text lines, 3 headlines; 1029114_6: 44 text lines, 4 headlines; one 1_overall each, left out.
    assert counts == {("1029114_5.jpg", "body"): 44, ("1029114_5.jpg", "heading"): 3,
                      ("1029114_6.jpg", "body"): 44, ("1029114_6.jpg", "heading"): 4}
    # The first object of 1029114_5.xml: xmin 231, ymin 781, xmax 775, ymax 804 (inclusive) -> ends exclusive.
    assert labels.iloc[0][["page", "x0", "y0", "x1", "y1"]].tolist() == ["1029114_5.jpg", 231, 781, 776, 805]
    assert (labels["text"] == "").all() and labels["entity_id"].isna().all() and (labels["page_number"] == 0).all()
    assert labels["x0"].dtype == np.int32 and labels["y1"].dtype == np.int32
    assert (labels["x1"] <= 1600).all() and (labels["y1"] <= 1200).all()
    ignored = [r.getMessage() for r in caplog.records if "non-text classes" in r.getMessage()]
    assert ignored == ["ndl_docl: left out 2 VOC boxes of non-text classes {'1_overall': 2}"]


def test_the_page_loader_skips_the_xml_files_beside_the_pages(tmp_path: Path) -> None:
    src = ndl_source(tmp_path)
    pages, rejected = scan_pages(src, tmp_path / "render")
    assert rejected == []
    assert pages["file"].tolist() == list(PAGES)
    assert pages[["width", "height"]].values.tolist() == [[1600, 1200], [1600, 1200]]


def test_voc_to_labels_csv_gives_the_same_labels(tmp_path: Path) -> None:
    src = ndl_source(tmp_path)
    from_voc, _ = read_labels(src)
    n, problems = voc_to_labels_csv(NDL_DOCL, src.path / "labels.csv")
    assert (n, problems) == (95, [])
    from_csv, rejected = read_labels(src)  # labels.csv now wins over the XML files
    assert rejected == []
    pd.testing.assert_frame_equal(from_csv, from_voc)


# -- where files are found and which page they label ---------------------------------------------------------


def test_labels_folder_matches_pages_by_stem_and_subfolder(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    write_page(src.path / "pages" / "scan.png")  # annotated as scan.jpg, converted to PNG since
    write_page(src.path / "pages" / "vol2" / "p1.png")
    write_page(src.path / "pages" / "p1.png")  # same stem in another folder: vol2's file takes vol2's page
    labels_dir = src.path / "labels"
    (labels_dir / "vol2").mkdir(parents=True)
    (labels_dir / "scan.xml").write_text(voc("scan.jpg", obj("8_textline", 10, 20, 109, 39)), encoding="utf-8")
    (labels_dir / "vol2" / "p1.xml").write_text(voc("", obj("6_headline", 0, 0, 199, 99)), encoding="utf-8")
    labels, rejected = read_voc_labels(src)
    assert rejected == []
    assert labels is not None
    assert labels[["page", "x0", "y0", "x1", "y1", "role"]].values.tolist() == [
        ["scan.png", 10, 20, 110, 40, "body"],
        ["vol2/p1.png", 0, 0, 200, 100, "heading"],
    ]
    # Checked against the given page files instead of the disk.
    labels, rejected = read_voc_labels(src, page_files=["scan.png"])
    assert labels is not None and labels["page"].tolist() == ["scan.png"]
    assert [(r.file, r.stage) for r in rejected] == [("labels/vol2/p1.xml", "region_labels")]
    assert "no page file for this annotation" in rejected[0].reason


def test_no_voc_files_means_no_labels(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    write_page(src.path / "pages" / "a.png")
    assert read_voc_labels(src) == (None, [])
    assert read_labels(src) == (None, [])


def test_labels_csv_wins_over_voc_files(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    write_page(src.path / "pages" / "a.png")
    (src.path / "pages" / "a.xml").write_text(voc("a.png", obj("8_textline", 1, 1, 50, 20)), encoding="utf-8")
    (src.path / "labels.csv").write_text("page,x0,y0,x1,y1,text,entity_id,role\na.png,5,5,40,15,東京,1,entry\n",
                                         encoding="utf-8")
    labels, rejected = read_labels(src)
    assert rejected == [] and labels is not None
    assert labels[["x0", "role", "text"]].values.tolist() == [[5, "entry", "東京"]]


# -- rejections ----------------------------------------------------------------------------------------------


def test_bad_files_are_rejected_and_the_rest_kept(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    for name in ("a", "b", "c", "d", "e"):
        write_page(src.path / "pages" / f"{name}.png")
    pages = src.path / "pages"
    (src.path / "labels").mkdir()
    (src.path / "labels" / "a.xml").write_text(voc("a.png", obj("8_textline", 1, 1, 5, 5)), encoding="utf-8")
    (pages / "a.xml").write_text(voc("a.png", obj("8_textline", 10, 10, 60, 20)), encoding="utf-8")  # a.png again
    (pages / "b.xml").write_text("<annotation><object><name>8_text", encoding="utf-8")  # cut short
    (pages / "c.xml").write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><annotation/>', encoding="utf-8")
    (pages / "d.xml").write_text("<html><body/></html>", encoding="utf-8")
    (pages / "e.xml").write_text(voc("e.png", obj("8_textline", 1, 1, 5, 5), size="<size><width>x</width></size>"),
                                 encoding="utf-8")
    (pages / "zzz.xml").write_text(voc("missing.jpg", obj("8_textline", 1, 1, 5, 5)), encoding="utf-8")
    labels, rejected = read_voc_labels(src)
    assert labels is not None  # labels/ is read before pages/: its file labels a.png
    assert labels[["page", "x0", "y0", "x1", "y1", "role"]].values.tolist() == [["a.png", 1, 1, 6, 6, "body"]]
    assert all(r.stage == "region_labels" and r.source == "src" for r in rejected)
    by_file = {r.file: r.reason for r in rejected}
    assert sorted(by_file) == ["a.xml", "b.xml", "c.xml", "d.xml", "e.xml", "zzz.xml"] and len(rejected) == 6
    assert by_file["a.xml"] == "page 'a.png' is already labelled by 'labels/a.xml'; expected one file per page"
    assert by_file["b.xml"].startswith("malformed XML")
    assert "DOCTYPE" in by_file["c.xml"]
    assert "root element is <html>" in by_file["d.xml"]
    assert "<size>: <width> 'x' is not a number" in by_file["e.xml"]
    assert "no page file for this annotation: <filename> 'missing.jpg' and the file stem 'zzz'" in by_file["zzz.xml"]
    # The page loader never rejects the annotation files, good or bad.
    scanned, page_rejections = scan_pages(src, tmp_path / "render")
    assert page_rejections == [] and scanned["file"].tolist() == ["a.png", "b.png", "c.png", "d.png", "e.png"]


def test_object_rejections_name_the_object(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_source(tmp_path)
    write_page(src.path / "pages" / "a.png")
    objects = "".join([
        obj("8_textline", 10, 10, 60, 20),  # 1: kept
        obj("8_textline", 60, 10, 60, 20),  # 2: xmin >= xmax
        obj("8_textline", "abc", 10, 60, 20),  # 3: not a number
        obj("8_textline", 10, 10, 250, 20),  # 4: beyond the width 200
        obj("9_stamp_of_the_future", 10, 10, 60, 20),  # 5: unknown class, left out with a warning
        "<object><name>7_caption</name></object>",  # 6: no bndbox
        obj("7_caption", 10, 50, 200, 99.4),  # 7: kept; xmax == width is clipped, 99.4 rounds to 99
        obj("4_illustration", 0, 0, 199, 99),  # 8: not text, left out
        obj("8_textline", 10, -3, 60, 20),  # 9: negative
        obj("6_headline", 10, 10, 60, 101),  # 10: beyond the height 100
    ])
    (src.path / "pages" / "a.xml").write_text(voc("a.png", objects), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="linkage_pipeline.documents.labels"):
        labels, rejected = read_voc_labels(src)
    assert labels is not None
    assert labels[["x0", "y0", "x1", "y1", "role"]].values.tolist() == [[10, 10, 61, 21, "body"],
                                                                        [10, 50, 200, 100, "body"]]
    assert [(r.file, r.stage) for r in rejected] == [("a.xml", "region_labels")] * 6
    reasons = [r.reason for r in rejected]
    assert reasons[0] == "object 2 (8_textline): inverted or empty box: xmax (60) must be greater than xmin (60)"
    assert reasons[1].startswith("object 3 (8_textline): field 'xmin': 'abc' is not a number")
    assert reasons[2].startswith("object 4 (8_textline): box outside the image: xmax 250 is beyond the width 200")
    assert reasons[3].startswith("object 6 (7_caption): has no <bndbox>")
    assert reasons[4].startswith("object 9 (8_textline): field 'ymin': '-3' is negative")
    assert reasons[5].startswith("object 10 (6_headline): box outside the image: ymax 101 is beyond the height 100")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "unknown classes" in r.getMessage()]
    assert len(warnings) == 1 and "{'9_stamp_of_the_future': 1}" in warnings[0]
    infos = [r.getMessage() for r in caplog.records if "non-text classes" in r.getMessage()]
    assert infos == ["src: left out 1 VOC boxes of non-text classes {'4_illustration': 1}"]


def test_an_annotation_outside_the_source_is_rejected(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    write_page(src.path / "pages" / "a.png")
    outside = tmp_path / "elsewhere.xml"
    outside.write_text(voc("a.png", obj("8_textline", 1, 1, 5, 5)), encoding="utf-8")
    (src.path / "pages" / "a.xml").symlink_to(outside)
    labels, rejected = read_voc_labels(src)
    assert labels is not None and labels.empty
    assert len(rejected) == 1 and rejected[0].file == "a.xml" and "outside the source folder" in rejected[0].reason


def test_class_roles_must_be_label_roles(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    with pytest.raises(ValueError, match="unknown roles"):
        read_voc_labels(src, class_roles={"8_textline": "paragraph"})


# -- body regions are not cropped, read or OCR-scored --------------------------------------------------------


def test_crops_skip_body_regions(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    page_path = src.path / "pages" / "a.png"
    write_page(page_path)
    pages = pd.DataFrame({"page_id": ["p1"], "source": ["src"], "file": ["a.png"], "page_number": [0],
                          "image_path": [str(page_path)], "width": [200], "height": [100], "sha256": ["x"]})
    regions = pd.DataFrame({
        "region_id": ["r_entry", "r_body"], "source": "src", "page_id": "p1", "x0": [20, 10], "y0": [20, 50],
        "x1": [120, 190], "y1": [40, 90], "kind": ["entry", "body"], "reading_order": [0, 1], "score": 1.0,
        "detector": "morphology", "direction": "horizontal",
    })
    crops, rejected = extract_crops(pages, regions, src, tmp_path / "crops")
    assert rejected == []
    assert crops["region_id"].tolist() == ["r_entry"]
    assert sorted(p.name for p in (tmp_path / "crops" / "src").iterdir()) == sorted(
        [f"{crops['crop_id'].item()}.png", f"{crops['crop_id'].item()}.square.png"])
    again = extract_crops_incremental(pages, regions, src, tmp_path / "crops", crops)
    assert (again.done, again.reused, again.rows["region_id"].tolist()) == (0, 1, ["r_entry"])


def test_ocr_evaluation_leaves_out_body_and_heading_labels() -> None:
    matched = pd.DataFrame({"region_id": ["r1", "r2", "r3"], "source": "s", "text": ["東京", "", "仕入先"],
                            "role": ["entry", "body", "heading"]})
    crops = pd.DataFrame({"region_id": ["r1", "r2", "r3"], "crop_id": ["c1", "c2", "c3"]})
    ocr = pd.DataFrame({"crop_id": ["c1", "c2", "c3"], "ocr": "tesseract", "text": ["東京", "ずっと長い本文", "x"]})
    table = report.ocr_evaluation_table(crops, ocr, matched)
    assert table[["source", "ocr", "n"]].values.tolist() == [["s", "tesseract", 1]]
    assert math.isclose(table["cer"].item(), 0.0, abs_tol=1e-9)


# -- the document chain on the real pages ----------------------------------------------------------------


def test_document_chain_on_the_real_pages(tmp_path: Path) -> None:
    """page_images -> layout_regions -> region_labels -> labelled_regions -> layout_evaluation on NDL-DocL.

    Runs the detector named in the source config; scores are checked for being computed on every label here,
    not for a level (that assertion belongs with the detector meant for real scans).
    """
    src = ndl_source(tmp_path)
    pages, rejected = scan_pages(src, tmp_path / "render")
    assert rejected == [] and len(pages) == 2
    regions, rejected = detect_page_regions(pages, src)
    assert rejected == []
    assert set(regions["page_id"]) == set(pages["page_id"])
    assert set(regions["kind"]) <= set(schema.REGION_KINDS)
    labels, rejected = read_labels(src, page_files=pages["file"])
    assert rejected == [] and labels is not None
    labels = labels.assign(source=src.name)
    matched = label_regions(regions, pages, labels)
    assert list(matched.columns) == list(schema.LABELLED_REGIONS)
    assert len(matched) > 0 and (matched["iou"] >= 0.5 - 1e-9).all()
    table = report.layout_evaluation_table(regions, pages, labels, matched)
    row = table.set_index("source").loc[src.name]
    assert (row["n_labelled"], row["n_detected"], row["n_matched"]) == (95, len(regions), len(matched))
    assert math.isclose(row["recall"], len(matched) / 95, rel_tol=1e-9)
    assert math.isclose(row["precision"], len(matched) / len(regions), rel_tol=1e-9)
    crops, rejected = extract_crops(pages, regions, src, tmp_path / "crops")
    assert rejected == []
    assert len(crops) == int(regions["kind"].isin(schema.NAME_KINDS).sum())
