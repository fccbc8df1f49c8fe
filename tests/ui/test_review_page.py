"""The link-review page in a real browser: `linkage-pipeline review` on 127.0.0.1, driven by headless Chromium.

On a tiny generated corpus run through the whole chain in-process, the test starts the review server as a user
does, checks that it listens on 127.0.0.1 only and refuses a form post and a crop id that is a path, reviews four
links by keyboard (accept the top candidate, pick the second, no match, skip, then undo the skip), closes the
browser in the middle of the page, opens it again and finds every verdict kept (`link_reviews`, and the page's
progress line). Then it stops the server, runs the linkage steps again and checks that the reviewed links are the
verdicts in `record_links` and are marked reviewed in `mart_link_provenance`; and that `reviewed_model`
fine-tunes on them and `linkage_model` (auto) picks the fine-tuned model.

Screenshots go to `<tmp_path>/screenshots` and are copied to `$LP_SCREENSHOT_DIR` when it is set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_FLAGS, SOURCES, _wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ui,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set LP_CHROMIUM)"),
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def linked_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny generated corpus, materialized up to the record links and their provenance."""
    import dagster as dg

    from assets_defs.definitions import all_assets
    from assets_defs.jobs import source_assets, training_assets
    from linkage_pipeline.synthetic.corpus import generate_corpus
    from resources import ComputeResource, EnginesResource, LinkageStore

    data_dir = tmp_path / "data"
    generate_corpus(data_dir, seed=3, n_firms=16, n_list_pages=2)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    resources = {"linkage_store": LinkageStore(data_dir=str(data_dir)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    first = dg.AssetSelection.assets("document_sources", "linkage_model")
    rest = dg.AssetSelection.assets("mart_link_provenance").upstream() - source_assets - training_assets - first
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("document_source", SOURCES)
        for selection, partition in [(first, None)] + [(source_assets, s) for s in SOURCES] + [(rest, None)]:
            result = dg.materialize(all_assets, selection=selection, partition_key=partition, instance=instance,
                                    resources=resources)
            assert result.success, (selection, partition)
    return data_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def _request(url: str, data: bytes | None = None, content_type: str = "application/json") -> tuple[int, dict]:
    """Status and JSON body (``{"text": ...}`` for a body that is not JSON) of one request."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body or b"{}")
    except ValueError:
        return status, {"text": body.decode(errors="replace")}


def _start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "assets_defs.cli", "review", "--data-dir", str(data_dir), "--port", str(port),
           "--reviewer", "Test <Reviewer>"]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"the review server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/progress", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    _wait_for(up, 120, "the review server to answer")
    return server


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def test_review_by_keyboard_survives_a_closed_browser_and_decides_the_next_run(
    linked_corpus: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from assets_defs.cli import open_store
    from linkage_pipeline.review import verdicts

    data_dir, port = linked_corpus, _free_port()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    store = open_store(data_dir)
    server = _start_server(data_dir, port, tmp_path / "review.log")
    url = f"http://127.0.0.1:{port}"
    try:
        assert _listening_addresses(port) == {"0100007F"}, "the review server must listen on 127.0.0.1 only"
        status, body = _request(f"{url}/api/verdict", b"query_crop_id=x&verdict=none",
                                content_type="application/x-www-form-urlencoded")
        assert status == 415 and "application/json" in body["error"]
        assert _request(f"{url}/crop/..%2F..%2Fetc%2Fpasswd")[0] in (400, 404)
        assert not store.table_exists("link_reviews")

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("section.item.focus img")
            assert page.locator("#reviewer").input_value() == "Test <Reviewer>"  # text, not markup
            items = page.locator("section.item")
            assert 4 <= items.count() <= 20
            queries = [items.nth(i).get_attribute("data-query") for i in range(4)]
            second_choice = items.nth(1).locator(".cand").nth(1).get_attribute("data-candidate")
            page.screenshot(path=str(shots / "review_page.png"))

            def press(key: str, progress: str) -> None:
                page.keyboard.press(key)
                page.wait_for_function("p => document.getElementById('progress').textContent.startsWith(p)",
                                       arg=progress, timeout=30_000)
                page.wait_for_function("() => document.getElementById('status').textContent !== 'saving...'")

            press("Enter", "1 reviewed")
            press("2", "2 reviewed")
            press("n", "3 reviewed")
            press("s", "3 reviewed")
            page.wait_for_function("() => document.getElementById('progress').textContent.includes('1 skipped')")
            page.keyboard.press("u")
            page.wait_for_function("() => document.getElementById('status').textContent.startsWith('undone')")
            assert page.locator("section.item.focus").get_attribute("data-query") == queries[3]
            page.screenshot(path=str(shots / "review_page_after_verdicts.png"))
            browser.close()  # in the middle of the page: nothing more is sent

            force = verdicts.in_force(store.read_table("link_reviews"), decisions_only=False)
            assert force.set_index("query_crop_id").loc[queries[:3], "verdict"].tolist() == ["accept", "pick", "none"]
            assert force.set_index("query_crop_id").loc[queries[1], "target_crop_id"] == second_choice
            assert set(store.read_table("link_reviews")["reviewer"]) == {"Test <Reviewer>"}

            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_function("() => document.getElementById('progress').textContent.startsWith('3 reviewed')")
            shown = [page.locator("section.item").nth(i).get_attribute("data-query") for i in range(2)]
            assert queries[3] in shown and not set(queries[:3]) & set(shown)
            browser.close()
    finally:
        _stop(server)
        target = os.environ.get("LP_SCREENSHOT_DIR")
        if target:
            for png in shots.glob("*.png"):
                shutil.copy(png, Path(target) / png.name)
        print(f"\nscreenshots in {shots}")
    assert server.returncode is not None and not _listening_addresses(port)

    _relink_and_fine_tune(data_dir, queries[:3], second_choice)


def _relink_and_fine_tune(data_dir: Path, queries: list[str], second_choice: str) -> None:
    """The next run: record links and provenance honour the verdicts; a fine-tune on them becomes the model."""
    import dagster as dg

    from assets_defs.cli import open_store
    from assets_defs.definitions import all_assets
    from linkage_pipeline.multimodal import registry
    from linkage_pipeline.review import app, verdicts
    from resources import ComputeResource, EnginesResource, LinkageStore

    resources = {"linkage_store": LinkageStore(data_dir=str(data_dir)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    store = open_store(data_dir)
    with dg.instance_for_test() as instance:
        selection = dg.AssetSelection.assets("record_links", "mart_link_provenance", "linkage_evaluation")
        result = dg.materialize(all_assets, selection=selection, instance=instance, resources=resources,
                                run_config={"ops": {"linkage_evaluation": {"config": {"self_supervised": False}}}})
        assert result.success
        links = store.read_table("record_links").set_index("query_crop_id")
        reviewed = links[links["reviewed"]]
        assert sorted(set(reviewed.index)) == sorted(queries)
        assert reviewed.loc[queries[1], "target_crop_id"] == second_choice and reviewed.loc[queries[1], "matched"]
        assert not reviewed.loc[queries[2], "matched"]  # "no match"
        prov = store.read_table("mart_link_provenance")
        assert set(prov.loc[prov["reviewed"], "query_crop_id"]) == set(queries)
        # the reviewed-only row of the links' method: the accepted top candidate is right, the top candidate of
        # the query where another was picked is wrong (unless both are the same firm, listed twice)
        method, ocr = links["method"].iloc[0], links["ocr"].iloc[0]
        table = store.read_table("linkage_evaluation")
        row = table[(table["split"] == "reviewed") & (table["method"] == method) & (table["ocr"] == ocr)]
        truth = store.read_table("stg_regions").drop_duplicates("crop_id").set_index("crop_id")["true_entity_id"]
        candidates = store.read_table("embedding_links" if method in ("vision", "language", "multimodal", "hybrid")
                                      else "string_links")
        top = candidates[(candidates["query_crop_id"] == queries[1]) & (candidates["method"] == method)
                         & (candidates["ocr"] == ocr) & (candidates["rank"] == 1)]["target_crop_id"].iloc[0]
        same_firm = isinstance(truth.get(top), str) and truth.get(top) == truth.get(second_choice)
        assert len(row) == 1 and int(row["n"].iloc[0]) == 2
        assert row["top1_accuracy"].iloc[0] == (1.0 if same_firm else 0.5)

        # ten more verdicts (as the page would send them), so that the fit half of the reviews holds pairs
        for item in app.queue_page(store, limit=10)["items"]:
            app.record_verdict(store, {"query_crop_id": item["query"]["crop_id"], "verdict": "accept",
                                       "reviewer": "Test <Reviewer>"})
        fit = verdicts.reviews_for_fitting(verdicts.in_force(store.read_table("link_reviews")))
        assert fit["verdict"].isin(["accept", "pick"]).sum() > 0
        config = {"ops": {"reviewed_model": {"config": {"min_pairs": 1, "max_steps": 2}}}}
        result = dg.materialize(all_assets, selection=dg.AssetSelection.assets("reviewed_model", "linkage_model"),
                                instance=instance, resources=resources, run_config=config)
        assert result.success
        trained = store.read_table("trained_models")
        row = trained[trained["stage"] == "reviewed"]
        assert len(row) == 1
        card = json.loads((Path(row["path"].iloc[0]) / "model_card.json").read_text(encoding="utf-8"))
        check = card["review_check"]  # both models scored on the half of the reviews the fine-tune never saw
        assert check["n"] > 0 and {"before", "after"} <= set(check)
        assert check["adopted"] == (check["after"]["top1"] > check["before"]["top1"])
        chosen = store.read_table("linkage_model").iloc[0]
        assert (chosen["model_id"] == row["model_id"].iloc[0]) == check["adopted"]
        assert registry.fine_tuned_on_reviews(chosen["path"]) == check["adopted"]
