"""The Dagster UI in a real browser: `dagster dev` on 127.0.0.1, driven by headless Chromium through Playwright.

Playwright drives the system's Chromium (Debian's `chromium` package) through `executable_path`; it never
downloads a browser. The test starts the project's `linkage-pipeline ui` on a tiny corpus, checks that the
asset graph shows our assets and groups, materializes one partition of `page_images` from the asset page's
Materialize dialog, waits for the run to succeed (seen in the UI and through GraphQL), saves screenshots and
stops the server with SIGTERM, leaving no process behind.

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


def _visible_text(page, text: str):
    return page.get_by_text(text, exact=True).filter(visible=True).first


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

    from linkage_pipeline.documents.synthetic import generate_corpus

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
                _browse_and_materialize(page, server, shots, skip)
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
    try:
        skip.wait_for(state="visible", timeout=5_000)
        skip.click()
    except Exception:  # the modal did not show (already dismissed in this profile, or a newer UI)
        pass
    page.get_by_text("Join the Dagster community").wait_for(state="hidden")
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
    page.get_by_text("Select a partition or create one").click()
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
