"""Incremental runs: a new page costs the work of that page, a run with nothing new reuses everything, and the
result equals a from-scratch run on the same files. Also the daily linkage schedule's decisions."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from fixtures.events import materialization_metadata

from assets_defs.definitions import all_assets
from assets_defs.jobs import source_assets, training_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from assets_defs.schedules import linkage_job_schedule, unprocessed_sources
from linkage_pipeline.synthetic.corpus import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore

pytestmark = pytest.mark.slow  # materializes the whole chain end to end, twice

LINKAGE = dg.AssetSelection.all() - source_assets - training_assets - dg.AssetSelection.assets("document_sources", "linkage_model")
#: Source tables compared with a from-scratch run (file paths differ between data directories).
SOURCE_TABLES = ("page_images", "layout_regions", "region_crops", "ocr_texts", "crop_embeddings")


def _resources(data_dir: Path) -> dict[str, object]:
    return {"linkage_store": LinkageStore(data_dir=str(data_dir)), "compute": ComputeResource(device="cpu"),
            "engines": EnginesResource()}


def _run_source(data_dir: Path, instance: dg.DagsterInstance, name: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(all_assets, selection=source_assets, partition_key=name, instance=instance,
                            resources=_resources(data_dir))
    assert result.success
    return result


#: The pooling weight is held at the model card's: by default a source without enough labels gets a weight chosen on
#: the sources themselves (mutual nearest neighbours), which a new page can move, and then every index is rebuilt and
#: every query searched again. These tests measure the incremental path itself, so the weight must stay put.
CARD_WEIGHT = {"ops": {"faiss_index": {"config": {"unlabelled_weight": "card"}}}}


def _run_linkage(data_dir: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(all_assets, selection=LINKAGE, instance=instance, resources=_resources(data_dir),
                            run_config=CARD_WEIGHT)
    assert result.success
    return result


def _start(data_dir: Path, instance: dg.DagsterInstance) -> None:
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, ["firm_directory", "supplier_lists"])
    dg.materialize(all_assets, selection=["document_sources", "linkage_model"], instance=instance,
                   resources=_resources(data_dir))


def _schedule_tick(data_dir: Path, instance: dg.DagsterInstance):
    context = dg.build_schedule_context(instance=instance, resources={"linkage_store": LinkageStore(data_dir=str(data_dir))})
    return linkage_job_schedule(context)


#: Embeddings do not depend on what they were embedded with (every forward pass has one shape, see
#: linkage_pipeline.multimodal.encoder), and link scores are exact float64 products of the stored vectors, so on one machine
#: a grown table holds the same bits as a fresh one. BLAS does not promise on every CPU that a row's result is
#: independent of its place in a batch of that shape, so floats are compared to within float32 rounding: a unit-norm
#: component carries 24 bits (unit roundoff 6e-8), and summing in another order through the towers moves it by a
#: few 1e-7 (2.4e-6 was the most seen when batch shapes still changed); 1e-5 bounds that, while a real change of a
#: crop or text moves components by 1e-2 and more. Ids, texts, ranks and which target is linked compare exactly.
FLOAT_ATOL = 1e-5


def _table(data_dir: Path, table: str) -> pd.DataFrame:
    frame = LinkageStore(data_dir=str(data_dir)).store().read_table(table)
    return frame.drop(columns=[c for c in frame.columns if c.endswith("_path") or c == "run_id"])


def _assert_same_table(grown: pd.DataFrame, fresh: pd.DataFrame, table: str) -> None:
    """Equal rows: every column but the float ones exactly (as text), floats and embeddings within FLOAT_ATOL."""
    assert list(grown.columns) == list(fresh.columns), table
    floats = [c for c in grown.columns if c.endswith("_embedding") or pd.api.types.is_float_dtype(grown[c])]
    keys = [c for c in grown.columns if c not in floats]
    a, b = (f.astype({c: str for c in keys}).sort_values(keys).reset_index(drop=True) for f in (grown, fresh))
    pd.testing.assert_frame_equal(a[keys], b[keys], obj=table)
    for col in floats:
        x, y = (np.stack([np.asarray(v, np.float64) for v in f[col]]) if col.endswith("_embedding") and len(f)
                else f[col].to_numpy(np.float64) for f in (a, b))
        np.testing.assert_allclose(x, y, rtol=0, atol=FLOAT_ATOL, err_msg=f"{table}.{col}")


def _links(data_dir: Path) -> pd.DataFrame:
    frame = LinkageStore(data_dir=str(data_dir)).store().read_table("embedding_links")
    return frame.sort_values(["query_source", "method", "ocr", "query_crop_id", "rank"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory):
    """A corpus processed without its last list page and last directory page, then given both back, one by one."""
    data_dir = tmp_path_factory.mktemp("grown") / "c"
    generate_corpus(data_dir, seed=5, n_firms=40, n_list_pages=3)
    held = data_dir.parent / "held"
    held.mkdir()
    new_list_page = data_dir / "supplier_lists" / "pages" / "page_003.png"
    new_directory_page = data_dir / "firm_directory" / "pages" / "page_002.png"
    shutil.move(new_list_page, held / "list.png")
    shutil.move(new_directory_page, held / "directory.png")
    # a schedule tick needs an instance with a reference (an ephemeral one has none); not entered as a context
    # manager: that would set a context variable which a module fixture's teardown cannot reset
    home = data_dir.parent / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.local_temp(str(home))
    try:
        yield _grow(data_dir, held, new_list_page, new_directory_page, instance)
    finally:
        instance.dispose()


def _grow(data_dir: Path, held: Path, new_list_page: Path, new_directory_page: Path, instance: dg.DagsterInstance):
    _start(data_dir, instance)
    steps: dict[str, object] = {"stale_before": unprocessed_sources(instance, _resources(data_dir)["linkage_store"])}
    for name in ("firm_directory", "supplier_lists"):
        _run_source(data_dir, instance, name)
    steps["stale_after"] = unprocessed_sources(instance, _resources(data_dir)["linkage_store"])
    steps["first_linkage"] = _run_linkage(data_dir, instance)
    steps["no_change_source"] = _run_source(data_dir, instance, "supplier_lists")
    steps["no_change_linkage"] = _run_linkage(data_dir, instance)
    shutil.move(held / "list.png", new_list_page)  # a new scan of the query source
    steps["tick_with_new_page"] = _schedule_tick(data_dir, instance)
    steps["list_source"] = _run_source(data_dir, instance, "supplier_lists")
    steps["list_linkage"] = _run_linkage(data_dir, instance)
    shutil.move(held / "directory.png", new_directory_page)  # a new scan of the target source
    steps["directory_source"] = _run_source(data_dir, instance, "firm_directory")
    steps["directory_linkage"] = _run_linkage(data_dir, instance)
    steps["tick_up_to_date"] = _schedule_tick(data_dir, instance)

    scratch = data_dir.parent / "scratch"
    shutil.copytree(data_dir, scratch, ignore=shutil.ignore_patterns("_pipeline"))
    fresh = dg.DagsterInstance.ephemeral()
    _start(scratch, fresh)
    for name in ("firm_directory", "supplier_lists"):
        _run_source(scratch, fresh, name)
    _run_linkage(scratch, fresh)
    return data_dir, scratch, steps


def test_the_schedule_names_unprocessed_sources_and_links_when_all_are_processed(grown) -> None:
    _, _, steps = grown
    assert steps["stale_before"] == ["firm_directory", "supplier_lists"]
    assert steps["stale_after"] == []
    tick = steps["tick_with_new_page"]
    assert isinstance(tick, dg.RunRequest)
    assert tick.tags["linkage/unprocessed_sources"] == "supplier_lists"
    up_to_date = steps["tick_up_to_date"]
    assert isinstance(up_to_date, dg.RunRequest) and "linkage/unprocessed_sources" not in up_to_date.tags


def test_a_run_with_nothing_new_recomputes_nothing(grown) -> None:
    _, _, steps = grown
    source = steps["no_change_source"]
    assert materialization_metadata(source, "layout_regions")["pages_detected"] == 0
    assert materialization_metadata(source, "layout_regions")["pages_reused"] == 2
    assert materialization_metadata(source, "region_crops")["crops_cut"] == 0
    assert materialization_metadata(source, "ocr_texts")["crops_read"] == 0
    embedded = materialization_metadata(source, "crop_embeddings")
    assert embedded["embedded_images"] == 0 and embedded["embedded_texts"] == 0
    linkage = steps["no_change_linkage"]
    index = materialization_metadata(linkage, "faiss_index")
    assert index["rebuilt"] == 0 and index["extended"] == 0 and index["vectors_added"] == 0 and index["unchanged"] > 0
    links = materialization_metadata(linkage, "embedding_links")
    assert links["queries_searched"] == 0 and links["queries_checked"] == 0 and links["queries_kept"] > 0
    strings = materialization_metadata(linkage, "string_links")
    assert strings["queries_searched"] == 0 and strings["queries_checked"] == 0 and strings["queries_kept"] > 0


def test_a_new_query_page_costs_only_its_own_crops(grown) -> None:
    data_dir, _, steps = grown
    source = steps["list_source"]
    assert materialization_metadata(source, "layout_regions")["pages_detected"] == 1
    assert materialization_metadata(source, "layout_regions")["pages_reused"] == 2
    crops = LinkageStore(data_dir=str(data_dir)).store().read_table("region_crops")
    pages = LinkageStore(data_dir=str(data_dir)).store().read_table("page_images")
    new_page = pages[(pages["source"] == "supplier_lists") & (pages["file"] == "page_003.png")]["page_id"].item()
    n_new = int((crops["page_id"] == new_page).sum())
    assert n_new > 5
    assert materialization_metadata(source, "region_crops")["crops_cut"] == n_new
    n_engines = 2  # tesseract and rapidocr
    assert materialization_metadata(source, "ocr_texts")["crops_read"] == n_new * n_engines
    embedded = materialization_metadata(source, "crop_embeddings")
    assert 0 < embedded["embedded_images"] <= n_new  # titles and entries only: headings are not embedded
    linkage = steps["list_linkage"]
    index = materialization_metadata(linkage, "faiss_index")  # the query source grew: the target indexes stay as they are
    assert index["rebuilt"] == 0 and index["extended"] == 0 and index["unchanged"] > 0
    links = materialization_metadata(linkage, "embedding_links")
    n_methods, n_conditions = 3, 3  # vision/language/multimodal x tesseract/rapidocr/ground_truth
    assert 0 < links["queries_searched"] <= embedded["embedded_images"] * n_methods * n_conditions
    assert links["queries_checked"] == 0 and links["queries_kept"] > links["queries_searched"]
    strings = materialization_metadata(linkage, "string_links")  # only the new page's texts are compared, with every target
    assert 0 < strings["queries_searched"] < strings["queries_kept"] and strings["queries_checked"] == 0


def test_a_new_target_page_extends_the_indexes_and_checks_old_queries_against_it_only(grown) -> None:
    _, _, steps = grown
    source = steps["directory_source"]
    assert materialization_metadata(source, "layout_regions")["pages_detected"] == 1
    linkage = steps["directory_linkage"]
    index = materialization_metadata(linkage, "faiss_index")
    assert index["rebuilt"] == 0 and index["extended"] == index["indexes"] > 0
    assert 0 < index["vectors_added"] < 200
    links = materialization_metadata(linkage, "embedding_links")
    assert links["queries_searched"] == 0  # no new query
    assert links["queries_checked"] > 0 and links["queries_kept"] == 0
    assert 0 < links["queries_changed"] <= links["queries_checked"]
    strings = materialization_metadata(linkage, "string_links")  # old queries against the new targets only
    assert strings["queries_searched"] == 0 and strings["queries_checked"] > 0 and strings["queries_kept"] == 0


def test_grown_bit_by_bit_equals_built_from_scratch(grown) -> None:
    data_dir, scratch, _ = grown
    for table in SOURCE_TABLES:
        _assert_same_table(_table(data_dir, table), _table(scratch, table), table)
    grown_links, fresh_links = _links(data_dir), _links(scratch)
    assert len(grown_links) == len(fresh_links) > 0
    # the same targets at the same ranks, near-ties (one firm listed twice) included
    cols = ["query_crop_id", "target_crop_id", "query_source", "method", "ocr", "rank", "model_id"]
    pd.testing.assert_frame_equal(grown_links[cols], fresh_links[cols])
    np.testing.assert_allclose(grown_links["score"], fresh_links["score"], rtol=0, atol=FLOAT_ATOL)
    # string scores depend on the two texts alone; record links and edges follow from the links
    for table in ("string_links", "string_link_inputs", "record_links", "mart_supply_chain_edges"):
        _assert_same_table(_table(data_dir, table), _table(scratch, table), table)
    top1 = {d: _table(d, "record_links").query("rank == 1 and matched")
            .set_index("query_crop_id")["target_crop_id"].sort_index() for d in (data_dir, scratch)}
    assert len(top1[data_dir]) > 0
    pd.testing.assert_series_equal(top1[data_dir], top1[scratch])
