"""The Dagster UI in a real browser: `dagster dev` on 127.0.0.1, driven by headless Chromium through Playwright.

Playwright drives the system's Chromium (Debian's `chromium` package) through `executable_path`; it never
downloads a browser. The test starts the project's `linkage-pipeline ui` on a tiny corpus, checks that the
asset graph shows our assets and groups, materializes one partition of `page_images` from the asset page's
Materialize dialog, waits for the run to succeed (seen in the UI and through GraphQL), saves screenshots and
stops the server with SIGTERM, leaving no process behind. A second test materializes the graph up to
`link_contact_sheet` in-process on the same DAGSTER_HOME and data directory first, then opens a link's provenance
(the contact sheet of sampled links, and the `mart_link_provenance` lineage), launches a backfill of all
partitions of `page_images` from the Materialize dialog and waits for it to complete (UI and GraphQL).

Screenshots go to `<tmp_path>/screenshots` (printed; run with `-s` to see the path) and are copied to
`$LP_SCREENSHOT_DIR` when it is set.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from _dagster_dev import alive, start_dagster_dev


def _find_chromium() -> str | None:
    explicit = os.environ.get("LP_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


CHROMIUM = _find_chromium()
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PARTITION = "supplier_lists"
SOURCES = ["firm_directory", "supplier_lists"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ui,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set LP_CHROMIUM)"),
]

RUNS_QUERY = """
query Runs($partition: String!) {
  runsOrError(filter: {tags: [{key: "dagster/partition", value: $partition}]}) {
    __typename
    ... on Runs { results { runId status assetSelection { path } } }
    ... on PythonError { message }
  }
}"""

MATERIALIZATIONS_QUERY = """
query Mats($partition: String!) {
  assetOrError(assetKey: {path: ["page_images"]}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: [$partition]) {
        partition runId
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}"""


BACKFILLS_QUERY = """
{
  partitionBackfillsOrError {
    __typename
    ... on PartitionBackfills { results { id } }
    ... on PythonError { message }
  }
}"""

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status partitionNames
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message }
  }
}"""

BACKFILL_RUNS_QUERY = """
query BackfillRuns($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""

BACKFILL_DONE = ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED", "COMPLETED")


def _visible_text(page, text: str):
    return page.get_by_text(text, exact=True).filter(visible=True).first


def _dismiss_community_modal(page, skip) -> None:
    try:
        skip.wait_for(state="visible", timeout=5_000)
        skip.click()
    except Exception:  # the modal did not show (already dismissed in this profile, or a newer UI)
        pass
    page.get_by_text("Join the Dagster community").wait_for(state="hidden")


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A tiny generated corpus and a fresh DAGSTER_HOME whose dynamic partitions are its two sources."""
    import dagster as dg

    from linkage_pipeline.synthetic.corpus import generate_corpus

    data_dir = tmp_path / "data"
    generate_corpus(data_dir, seed=3, n_firms=16, n_list_pages=2)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    try:
        instance.add_dynamic_partitions("document_source", SOURCES)
    finally:
        instance.dispose()
    return data_dir, home


def test_ui_shows_assets_and_materializes_a_partition(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    _in_the_browser(corpus, tmp_path, _browse_and_materialize)


def test_ui_backfills_all_partitions_and_shows_link_provenance(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    data_dir, _ = corpus
    t0 = time.monotonic()
    _materialize_up_to_contact_sheet(data_dir)
    print(f"\nmaterialized the graph up to link_contact_sheet in-process in {time.monotonic() - t0:.1f}s")
    _in_the_browser(corpus, tmp_path, _backfill_and_provenance)


def _materialize_up_to_contact_sheet(data_dir: Path) -> None:
    """What `tests/assets/test_pipeline.py` does, limited to what `link_contact_sheet` needs, on the fixture's instance."""
    import dagster as dg

    from assets_defs.definitions import all_assets
    from assets_defs.jobs import source_assets, training_assets
    from resources import ComputeResource, EnginesResource, LinkageStore

    resources = {
        "linkage_store": LinkageStore(data_dir=str(data_dir)),
        "compute": ComputeResource(device="cpu"),
        "engines": EnginesResource(),
    }
    first = dg.AssetSelection.assets("document_sources", "linkage_model")
    rest = dg.AssetSelection.assets("link_contact_sheet").upstream() - source_assets - training_assets - first
    instance = dg.DagsterInstance.get()  # DAGSTER_HOME is the fixture's
    try:
        steps = [(first, None)] + [(source_assets, s) for s in SOURCES] + [(rest, None)]
        for selection, partition in steps:
            result = dg.materialize(
                all_assets, selection=selection, partition_key=partition, instance=instance, resources=resources
            )
            assert result.success, (selection, partition)
    finally:
        instance.dispose()


def _in_the_browser(corpus: tuple[Path, Path], tmp_path: Path, flow: Callable) -> None:
    """Starts `dagster dev`, runs `flow(page, server, shots, skip)` in headless Chromium, stops the server cleanly."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    data_dir, home = corpus
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    t_start = time.monotonic()

    server = start_dagster_dev(data_dir, home, tmp_path / "dagster_dev.log")
    stopped = False
    try:
        server.wait_ready(timeout=120)
        print(f"dagster dev ready on {server.url} after {time.monotonic() - t_start:.1f}s")

        with sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 900},
            )
            context.set_default_timeout(30_000)
            page = context.pages[0] if context.pages else context.new_page()
            skip = page.get_by_role("button", name="Skip", exact=True)
            # The "Join the Dagster community" modal may pop up over any page; dismiss it whenever it blocks an action.
            page.add_locator_handler(page.get_by_text("Join the Dagster community"), lambda _: skip.click())
            try:
                flow(page, server, shots, skip)
            except Exception:
                page.screenshot(path=str(shots / "failure.png"), full_page=True)
                raise
            finally:
                context.close()

        # Stop: SIGTERM reaches dagster dev (its SIGINT handler is the default again), which stops its children.
        t_stop = time.monotonic()
        clean, leftovers = server.stop(timeout=30)
        stopped = True
        print(f"dagster dev stopped in {time.monotonic() - t_stop:.1f}s ({'SIGTERM' if clean else 'needed SIGKILL'})")
        assert not leftovers, f"processes left after stopping dagster dev: {sorted(leftovers)}"
        assert clean, f"dagster dev did not stop on SIGTERM within 30s:\n{server.log_tail()}"
        assert server.proc.returncode is not None
        with pytest.raises((urllib.error.URLError, OSError)):
            urllib.request.urlopen(f"{server.url}/server_info", timeout=2)
        print(f"browser test took {time.monotonic() - t_start:.1f}s")
    finally:
        if not stopped:
            _, leftovers = server.stop(timeout=10)
            assert not alive(leftovers)
        target = os.environ.get("LP_SCREENSHOT_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            for png in sorted(shots.glob("*.png")):
                shutil.copy2(png, Path(target) / png.name)
            print(f"screenshots copied to {target}")


def _browse_and_materialize(page, server, shots: Path, skip) -> None:
    # 1. The global asset graph shows our groups (collapsed, one box per group).
    page.goto(f"{server.url}/asset-groups", wait_until="domcontentloaded")
    for group in ("documents", "layout", "crops", "ocr", "linking", "network"):
        _visible_text(page, group).wait_for()
    _dismiss_community_modal(page, skip)
    page.wait_for_timeout(1_000)  # let the graph finish its layout animation
    page.screenshot(path=str(shots / "01_global_asset_lineage.png"))

    # 2. The lineage of page_images shows the per-source chain with asset names, inside their groups.
    page.goto(
        f"{server.url}/assets/page_images?view=lineage&lineageScope=downstream&lineageDepth=3",
        wait_until="domcontentloaded",
    )
    for name in ("page_images", "layout_regions", "region_crops", "ocr_texts", "record_links"):
        _visible_text(page, name).wait_for()
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(shots / "02_page_images_lineage.png"))

    # 3. Materialize one partition from the asset page's dialog.
    page.goto(f"{server.url}/assets/page_images", wait_until="domcontentloaded")
    page.locator("button", has_text=re.compile(r"^Materialize…$")).first.click()
    dialog = page.get_by_role("dialog")
    # document_sources (upstream, unpartitioned) is not materialized: the UI asks first.
    confirm = dialog.get_by_role("button", name="Confirm", exact=True)
    title = page.get_by_text("Launch runs to materialize page_images")
    _wait_for(lambda: confirm.is_visible() or title.is_visible(), 30, "the materialize dialog")
    if confirm.is_visible():
        confirm.click()
    title.wait_for()
    opener = page.get_by_text("Select a partition or create one")
    opener.click()
    try:
        page.get_by_placeholder("Filter partitions").wait_for(state="visible", timeout=5_000)
    except Exception:  # the click landed while the dialog was still settling and the drop-down stayed shut
        opener.click()
    _visible_text(page, PARTITION).click()
    page.keyboard.press("Escape")  # close the partition drop-down, not the dialog
    page.get_by_placeholder("Filter partitions").wait_for(state="hidden")
    page.wait_for_timeout(300)  # the drop-down fades out
    launch = dialog.get_by_role("button", name="Launch 1 run", exact=True)
    launch.wait_for()
    assert title.is_visible()
    page.screenshot(path=str(shots / "03_materialize_partition_dialog.png"))
    launch.click()

    # 4. The run appears (GraphQL), and succeeds: on its page in the UI and in GraphQL.
    def our_run():
        runs = server.graphql(RUNS_QUERY, {"partition": PARTITION})["runsOrError"]["results"]
        return runs[0] if runs else None

    run = _wait_for(our_run, 30, f"a run for partition {PARTITION}")
    run_id = run["runId"]
    assert ["page_images"] in [a["path"] for a in run["assetSelection"] or []], run
    page.goto(f"{server.url}/runs/{run_id}", wait_until="domcontentloaded")
    _visible_text(page, run_id[:8]).wait_for()
    status = _wait_for(
        lambda: (s := our_run()["status"]) in ("SUCCESS", "FAILURE", "CANCELED") and s, 90, f"run {run_id} to finish"
    )
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{server.log_tail()}"
    _visible_text(page, "Success").wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "04_run_success.png"))

    mats = server.graphql(MATERIALIZATIONS_QUERY, {"partition": PARTITION})["assetOrError"]["assetMaterializations"]
    assert [m["partition"] for m in mats] == [PARTITION] and mats[0]["runId"] == run_id, mats
    pages = {e["label"]: e.get("intValue") for e in mats[0]["metadataEntries"]}.get("pages")
    assert pages == 2, f"expected the 2 list pages of {PARTITION}, metadata says {pages}"

    # 5. The asset's partitions tab shows the materialized partition.
    page.goto(f"{server.url}/assets/page_images?view=partitions", wait_until="domcontentloaded")
    _visible_text(page, "Materialized (1)").wait_for()
    _visible_text(page, "Missing (1)").wait_for()
    _visible_text(page, PARTITION).click()
    _visible_text(page, run_id[:8]).wait_for()  # the selected partition's latest materialization links to our run
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "05_page_images_partitions.png"))


def _backfill_and_provenance(page, server, shots: Path, skip) -> None:
    # 1. A link's provenance: the contact sheet of sampled links (both crops, OCR texts, score, method).
    page.goto(f"{server.url}/assets/link_contact_sheet", wait_until="domcontentloaded")
    _visible_text(page, "link_contact_sheet").wait_for()
    _dismiss_community_modal(page, skip)
    for label in ("links_shown", "sheet", "sample"):
        _visible_text(page, label).wait_for()
    row = page.locator("tr", has=_visible_text(page, "sheet"))
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    sheet = dialog.locator("img[alt='record links']")
    sheet.wait_for()
    _wait_for(lambda: sheet.evaluate("img => img.complete && img.naturalWidth > 0"), 30, "the contact sheet image")
    width, height = sheet.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width > 300 and height > 100, (width, height)
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "07_link_provenance.png"))
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    # mart_link_provenance is a SQL-model asset between record_links and the contact sheet.
    page.goto(f"{server.url}/assets/mart_link_provenance?view=lineage&lineageDepth=1", wait_until="domcontentloaded")
    for name in ("mart_link_provenance", "record_links", "link_contact_sheet"):
        _visible_text(page, name).wait_for()

    # 2. A partitioned backfill: every source of page_images from the Materialize dialog.
    page.goto(f"{server.url}/assets/page_images", wait_until="domcontentloaded")
    page.locator("button", has_text=re.compile(r"^Materialize…$")).first.click()
    dialog = page.get_by_role("dialog")
    title = page.get_by_text("Launch runs to materialize page_images")
    confirm = dialog.get_by_role("button", name="Confirm", exact=True)
    _wait_for(lambda: confirm.is_visible() or title.is_visible(), 30, "the materialize dialog")
    if confirm.is_visible():
        confirm.click()
    title.wait_for()
    page.get_by_text("Select a partition or create one").click()
    page.get_by_text(f"Select all ({len(SOURCES)})").click()
    page.keyboard.press("Escape")
    page.get_by_placeholder("Filter partitions").wait_for(state="hidden")
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "06a_backfill_dialog.png"))
    dialog.get_by_role("button", name="Launch backfill", exact=True).click()

    def backfill_ids():
        return [b["id"] for b in server.graphql(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]]

    (backfill_id,) = _wait_for(backfill_ids, 30, "the backfill to be created")
    page.goto(f"{server.url}/runs/b/{backfill_id}", wait_until="domcontentloaded")
    _visible_text(page, "page_images").wait_for()

    def backfill():
        return server.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]

    done = _wait_for(lambda: (b := backfill())["status"] in BACKFILL_DONE and b, 240, f"backfill {backfill_id}", 2)
    assert done["status"] == "COMPLETED_SUCCESS", f"backfill {backfill_id} ended {done['status']}:\n{server.log_tail()}"
    assert sorted(done["partitionNames"]) == SOURCES, done
    (counts,) = done["assetBackfillData"]["assetBackfillStatuses"]
    assert counts["assetKey"]["path"] == ["page_images"], counts
    assert counts["numPartitionsTargeted"] == counts["numPartitionsMaterialized"] == len(SOURCES), counts
    runs = server.graphql(BACKFILL_RUNS_QUERY, {"id": backfill_id})["runsOrError"]["results"]
    assert [r["status"] for r in runs] == ["SUCCESS"] * len(SOURCES), runs
    partitions = sorted(t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition")
    assert partitions == SOURCES, runs

    page.reload(wait_until="domcontentloaded")
    for text in ("page_images", "Succeeded", "100% completed", *SOURCES):
        _visible_text(page, text).wait_for()
    page.wait_for_timeout(1_000)
    # The page is the header, the partition selection and one row per asset: the top of the viewport is enough.
    page.screenshot(path=str(shots / "06_backfill.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 340})
