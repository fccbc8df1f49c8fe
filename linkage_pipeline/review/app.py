"""The link-review page: a small Starlette app over one data directory (``linkage-pipeline review``).

It shows the queue of :mod:`~linkage_pipeline.review.queue` twenty links at a time, each as the query crop beside
its candidates' crops with their OCR texts and scores, and records every key press as one ``link_reviews`` row in
its own transaction before the page moves on: closing the browser or stopping the server loses nothing that was
shown as saved.

Safe by default: the server binds 127.0.0.1 unless told otherwise; writes accept JSON only (a page of another
site cannot post a form here without a CORS preflight, which this app never answers); every SQL value is a bound
parameter; a crop is served only by its id and only from inside the data directory's artifact folder; reviewer
names reach the page as text, never as markup.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from linkage_pipeline import schema
from linkage_pipeline.review import queue as review_queue_module
from linkage_pipeline.review import verdicts
from linkage_pipeline.store import Store

logger = logging.getLogger(__name__)

#: Links per page.
PAGE_SIZE = 20
#: Candidates shown per link.
MAX_CANDIDATES = 5
_STRING_METHODS_TABLE = "string_links"


@dataclass(frozen=True)
class ReviewContext:
    """What the page needs from the data directory, read at one moment."""

    links: pd.DataFrame  # record_links
    candidates: pd.DataFrame  # string_links-shaped rows of the links' method and OCR condition
    texts: dict[str, str]  # crop_id -> text of that condition
    method: str
    ocr: str
    model_id: str
    threshold: float


def load_context(store: Store) -> ReviewContext:
    """Reads record_links and their candidates (the same method and OCR condition) from ``store``.

    Raises:
        ValueError: When there are no record links to review yet, saying which step to run.
    """
    if not store.table_exists("record_links"):
        raise ValueError(f"no record_links in {store.database}; run 'linkage-pipeline run' (or the linkage_job) first")
    links = store.read_table("record_links")
    if links.empty:
        return ReviewContext(links, pd.DataFrame(columns=list(schema.STRING_LINKS)), {}, "", "", "", math.nan)
    method, ocr, model_id = _link_method(links)
    candidates = _candidates(store, method, ocr, model_id)
    texts = store.query("select crop_id, text from stg_crop_texts where ocr = ?", [ocr])
    threshold = float(links["threshold"].iloc[0]) if pd.notna(links["threshold"].iloc[0]) else math.nan
    text_of = dict(zip(texts["crop_id"], texts["text"].fillna(""), strict=True))
    return ReviewContext(links, candidates, text_of, method, ocr, model_id, threshold)


def _link_method(links: pd.DataFrame) -> tuple[str, str, str]:
    """Method, OCR condition and model id of record links (one of each per run)."""
    return str(links["method"].iloc[0]), str(links["ocr"].iloc[0]), str(links["model_id"].iloc[0] or "")


def _candidates(store: Store, method: str, ocr: str, model_id: str, query: str | None = None) -> pd.DataFrame:
    """The candidate rows of the links' method and condition (the model's when it has an id, else the string
    baseline's), of every query or of ``query`` alone."""
    table, params = ("embedding_links", [method, ocr, model_id]) if model_id else (_STRING_METHODS_TABLE, [method, ocr])
    where = "method = ? and ocr = ?" + (" and model_id = ? and training = 'supervised'" if model_id else "")
    if query is not None:
        where, params = where + " and query_crop_id = ?", [*params, query]
    return store.query(f"select * from {table} where {where}", params)[list(schema.STRING_LINKS)]


def read_reviews(store: Store) -> pd.DataFrame | None:
    return store.read_table("link_reviews") if store.table_exists("link_reviews") else None


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 4)


def queue_page(store: Store, *, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """The next ``limit`` links to review (queries with no review in force, skips included), as JSON-able dicts."""
    ctx = load_context(store)
    force = verdicts.in_force(read_reviews(store), decisions_only=False)
    queue = review_queue_module.review_queue(
        ctx.links, ctx.candidates, pd.DataFrame({"crop_id": list(ctx.texts), "text": list(ctx.texts.values())}),
        threshold=ctx.threshold, exclude=set(force["query_crop_id"]))
    cand = ctx.candidates.sort_values(["query_crop_id", "rank"]).drop_duplicates(["query_crop_id", "target_crop_id"])
    by_query = {q: g.head(MAX_CANDIDATES) for q, g in cand[cand["query_crop_id"].isin(
        set(queue["query_crop_id"].head(limit)))].groupby("query_crop_id")}
    items = []
    for row in queue.head(limit).itertuples(index=False):
        options = by_query.get(row.query_crop_id, cand.iloc[:0])
        items.append({
            "query": {"crop_id": row.query_crop_id, "source": str(row.query_source),
                      "text": ctx.texts.get(row.query_crop_id, "")},
            "matched": bool(row.matched),
            "model_target": row.model_target_crop_id if isinstance(row.model_target_crop_id, str) else None,
            "top_score": _num(row.top_score), "margin": _num(row.margin), "reasons": row.reasons,
            "candidates": [{"crop_id": c.target_crop_id, "source": str(c.target_source), "rank": int(c.rank),
                            "score": _num(c.score), "text": ctx.texts.get(c.target_crop_id, "")}
                           for c in options.itertuples(index=False)],
        })
    return {"items": items, "remaining": len(queue), "method": ctx.method, "ocr": ctx.ocr, "model_id": ctx.model_id,
            "threshold": _num(ctx.threshold)}


def record_verdict(store: Store, payload: dict[str, Any]) -> dict[str, Any]:
    """Checks one verdict against the current links and appends it to ``link_reviews`` (one transaction).

    Raises:
        ValueError: On an unknown query crop, a target that was not among its candidates, or a bad field.
    """
    query = verdicts.check_crop_id(payload.get("query_crop_id"), "query_crop_id")
    verdict = payload.get("verdict")
    # one key press: only this query's link and candidates are read
    rows = store.query("select * from record_links where query_crop_id = ?", [query])
    if rows.empty:
        raise ValueError(f"query crop {query} has no record link; reload the page (the links changed)")
    method, ocr, model_id = _link_method(rows)
    options = _candidates(store, method, ocr, model_id, query=query).sort_values("rank")
    matched = rows[rows["matched"].fillna(False).astype(bool)]
    model_target = str(matched["target_crop_id"].iloc[0]) if len(matched) else None
    target = payload.get("target_crop_id") or None
    if verdict == "accept":
        if options.empty:
            raise ValueError(f"query crop {query} has no candidate to accept")
        target = str(options["target_crop_id"].iloc[0])
    hit = options[options["target_crop_id"] == target] if target else options.iloc[:0]
    if verdict in ("accept", "pick") and hit.empty:
        raise ValueError(f"target crop {str(target)[:40]!r} is not a candidate of query crop {query}")
    row = verdicts.review_row(
        query_crop_id=query, verdict=str(verdict), reviewer=str(payload.get("reviewer", "")),
        query_source=str(rows["query_source"].iloc[0]),
        target_crop_id=target if verdict in ("accept", "pick") else None,
        target_source=str(hit["target_source"].iloc[0]) if len(hit) else None,
        score=float(hit["score"].iloc[0]) if len(hit) else math.nan,
        top_score=float(options["score"].iloc[0]) if len(options) else math.nan,
        model_target_crop_id=model_target, method=method, ocr=ocr, model_id=model_id,
    )
    store.append_rows("link_reviews", row, schema.LINK_REVIEWS)
    return {"review_id": row["review_id"].iloc[0], "progress": verdicts.review_progress(read_reviews(store))}


def undo_last(store: Store, reviewer: str) -> dict[str, Any]:
    """Takes back ``reviewer``'s latest review in force (an ``undo`` row); says which query it was."""
    name = " ".join(str(reviewer or "").split())[: verdicts.MAX_REVIEWER]
    reviews = read_reviews(store)
    last = verdicts.last_undoable(reviews, name)
    if last is None:
        return {"undone": None, "progress": verdicts.review_progress(reviews)}
    row = verdicts.review_row(query_crop_id=str(last["query_crop_id"]), verdict="undo", reviewer=name,
                              query_source=str(last["query_source"]), undoes=str(last["review_id"]),
                              method=str(last["method"]), ocr=str(last["ocr"]), model_id=str(last["model_id"]))
    store.append_rows("link_reviews", row, schema.LINK_REVIEWS)
    return {"undone": str(last["query_crop_id"]), "verdict": str(last["verdict"]),
            "progress": verdicts.review_progress(pd.concat([reviews, row], ignore_index=True))}


def crop_file(store: Store, crop_id: str) -> Path:
    """The crop image of ``crop_id``, resolved inside the artifact folder.

    Raises:
        ValueError: For a malformed id. FileNotFoundError: For an unknown crop. PermissionError: For a path
        outside the artifact folder (a table pointing elsewhere is never followed).
    """
    verdicts.check_crop_id(crop_id, "crop id")
    found = store.query("select crop_path from stg_regions where crop_id = ? and crop_path is not null limit 1",
                        [crop_id])
    if found.empty:
        raise FileNotFoundError(f"no crop with id {crop_id}")
    root = store.artifact_dir.resolve()
    path = Path(str(found["crop_path"].iloc[0])).resolve()
    if not path.is_relative_to(root):
        raise PermissionError(f"crop {crop_id} lies outside the artifact folder {root}; refused")
    if not path.is_file():
        raise FileNotFoundError(f"crop file of {crop_id} is missing")
    return path


def create_app(store: Store, *, reviewer: str = "reviewer") -> Starlette:
    """The review app over ``store``; ``reviewer`` is the name the page starts with (editable there)."""

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def page(_: Request) -> Response:
        body = _PAGE.replace("__REVIEWER__", html.escape(json.dumps(reviewer), quote=True))
        return HTMLResponse(body, headers={"Content-Security-Policy": "default-src 'self'; "
                                           "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"})

    async def api_queue(request: Request) -> Response:
        try:
            limit = max(1, min(int(request.query_params.get("limit", PAGE_SIZE)), 100))
            return JSONResponse({**queue_page(store, limit=limit),
                                 "progress": verdicts.review_progress(read_reviews(store))})
        except ValueError as exc:
            return error(409, str(exc))

    async def api_progress(_: Request) -> Response:
        return JSONResponse(verdicts.review_progress(read_reviews(store)))

    async def _json(request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise TypeError("expected Content-Type: application/json")
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    def post(handle: Any) -> Any:
        """A JSON-only POST endpoint: 415 for another content type, 400 with the reason for a bad request."""

        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(handle(await _json(request)))
            except TypeError as exc:
                return error(415, str(exc))
            except ValueError as exc:
                return error(400, str(exc))

        return endpoint

    api_verdict = post(lambda body: record_verdict(store, body))
    api_undo = post(lambda body: undo_last(store, str(body.get("reviewer", ""))))

    async def crop(request: Request) -> Response:
        try:
            return FileResponse(crop_file(store, request.path_params["crop_id"]), media_type="image/png")
        except ValueError as exc:
            return error(400, str(exc))
        except FileNotFoundError as exc:
            return error(404, str(exc))
        except PermissionError as exc:
            return error(403, str(exc))

    return Starlette(routes=[
        Route("/", page),
        Route("/api/queue", api_queue),
        Route("/api/progress", api_progress),
        Route("/api/verdict", api_verdict, methods=["POST"]),
        Route("/api/undo", api_undo, methods=["POST"]),
        Route("/crop/{crop_id}", crop),
    ])


def serve(store: Store, *, host: str = "127.0.0.1", port: int = 8765, reviewer: str = "reviewer") -> None:
    """Runs the app with uvicorn until interrupted."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the review page listens on %s: anyone who can reach this address can record verdicts", host)
    uvicorn.run(create_app(store, reviewer=reviewer), host=host, port=port, log_level="warning")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Link review</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ccc; padding: 8px 16px; z-index: 2;
         display: flex; gap: 24px; align-items: center; flex-wrap: wrap; }
#progress { font-weight: 600; }
#status { color: #476; }
.keys { color: #555; font-size: 13px; }
kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 4px; background: #fafafa; font-size: 12px; }
main { padding: 12px 16px; }
.item { background: #fff; border: 2px solid #ddd; border-radius: 6px; margin: 10px 0; padding: 8px 12px; }
.item.focus { border-color: #2a6fdb; box-shadow: 0 0 0 3px #cfe0fb; }
.item.done { opacity: .55; }
.row { display: flex; gap: 14px; align-items: flex-start; flex-wrap: wrap; }
.crop { text-align: center; max-width: 260px; }
.crop img { max-height: 120px; max-width: 250px; border: 1px solid #bbb; background: #fff; }
.crop .text { font-size: 15px; margin-top: 2px; word-break: break-all; }
.crop .meta { font-size: 12px; color: #666; }
.query { border-right: 2px solid #eee; padding-right: 14px; }
.cand.model { outline: 2px solid #7a7; }
.cand.chosen { outline: 3px solid #2a6fdb; }
.reasons { font-size: 12px; color: #845; margin: 4px 0; }
.verdict { font-weight: 600; color: #2a6fdb; }
</style></head>
<body data-reviewer="__REVIEWER__">
<header>
  <span id="progress">loading...</span>
  <label>reviewer <input id="reviewer" size="14"></label>
  <span class="keys"><kbd>Enter</kbd>/<kbd>a</kbd> accept top &nbsp; <kbd>1</kbd>-<kbd>5</kbd> pick candidate &nbsp;
  <kbd>n</kbd> no match &nbsp; <kbd>s</kbd> skip &nbsp; <kbd>u</kbd> undo &nbsp; <kbd>j</kbd>/<kbd>k</kbd> move</span>
  <span id="status"></span>
</header>
<main id="items"></main>
<script>
"use strict";
const state = { items: [], focus: 0, busy: false };
const $ = (id) => document.getElementById(id);
$("reviewer").value = JSON.parse(document.body.dataset.reviewer);
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }
function fmt(x) { return x === null || x === undefined ? "-" : Number(x).toFixed(3); }
function showProgress(p) { $("progress").textContent =
  `${p.reviewed} reviewed, ${p.corrections} correction${p.corrections === 1 ? "" : "s"}` +
  (p.skipped ? `, ${p.skipped} skipped` : ""); }
function cropBox(c, cls, label) {
  const box = el("div", "crop " + cls);
  const img = el("img"); img.src = "/crop/" + encodeURIComponent(c.crop_id); img.alt = c.text || c.crop_id;
  box.append(img, el("div", "text", c.text || "(no text)"), el("div", "meta", label));
  return box;
}
function render() {
  const main = $("items"); main.replaceChildren();
  state.items.forEach((it, i) => {
    const card = el("section", "item" + (i === state.focus ? " focus" : "") + (it.verdict ? " done" : ""));
    card.dataset.query = it.query.crop_id; card.dataset.index = i;
    const head = el("div", "reasons", (it.matched ? "linked" : "not linked") + " - " + it.reasons);
    const row = el("div", "row");
    row.append(cropBox(it.query, "query", it.query.source));
    it.candidates.forEach((c, j) => {
      let cls = "cand" + (it.matched && c.crop_id === it.model_target ? " model" : "");
      if (it.chosen === c.crop_id) cls += " chosen";
      const b = cropBox(c, cls, `${j + 1}  score ${fmt(c.score)}`); b.dataset.candidate = c.crop_id; row.append(b);
    });
    card.append(head, row);
    if (it.verdict) card.append(el("div", "verdict", "saved: " + it.verdict));
    card.addEventListener("click", () => { state.focus = i; render(); });
    main.append(card);
  });
  if (!state.items.length) main.append(el("p", "", "Nothing left to review."));
  const f = main.querySelector(".item.focus"); if (f) f.scrollIntoView({ block: "nearest" });
}
async function call(url, body) {
  const r = await fetch(url, body === undefined ? {} : { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
async function loadPage() {
  const data = await call("/api/queue");
  state.items = data.items; state.focus = 0; showProgress(data.progress);
  $("status").textContent = `${data.remaining} to review (${data.method}, ${data.ocr})`;
  render();
}
function nextOpen(from) {
  for (let i = from; i < state.items.length; i++) if (!state.items[i].verdict) return i;
  return -1;
}
async function decide(verdict, candidateIndex) {
  const it = state.items[state.focus]; if (!it || state.busy) return;
  const body = { query_crop_id: it.query.crop_id, verdict, reviewer: $("reviewer").value };
  if (verdict === "pick") {
    const c = it.candidates[candidateIndex]; if (!c) return;
    if (candidateIndex === 0) body.verdict = "accept"; else body.target_crop_id = c.crop_id;
    it.chosen = c.crop_id;
  } else if (verdict === "accept") { if (!it.candidates.length) return; it.chosen = it.candidates[0].crop_id; }
  state.busy = true; $("status").textContent = "saving...";
  try {
    const data = await call("/api/verdict", body);
    it.verdict = body.verdict; it.review_id = data.review_id; showProgress(data.progress);
    $("status").textContent = "saved";
    const n = nextOpen(state.focus + 1);
    if (n >= 0) { state.focus = n; render(); }
    else if (nextOpen(0) >= 0) { state.focus = nextOpen(0); render(); }
    else { await loadPage(); }
  } catch (e) { delete it.chosen; $("status").textContent = "not saved: " + e.message; render(); }
  finally { state.busy = false; }
}
async function undo() {
  if (state.busy) return; state.busy = true;
  try {
    const data = await call("/api/undo", { reviewer: $("reviewer").value }); showProgress(data.progress);
    if (!data.undone) { $("status").textContent = "nothing to undo"; return; }
    const i = state.items.findIndex((x) => x.query.crop_id === data.undone);
    if (i >= 0) { delete state.items[i].verdict; delete state.items[i].chosen; state.focus = i; render();
      $("status").textContent = "undone"; }
    else { await loadPage(); $("status").textContent = "undone (back in the queue)"; }
  } catch (e) { $("status").textContent = "undo failed: " + e.message; }
  finally { state.busy = false; }
}
document.addEventListener("keydown", (ev) => {
  if (ev.target === $("reviewer") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  if (k === "Enter" || k === "a") decide("accept");
  else if (k >= "1" && k <= "5") decide("pick", Number(k) - 1);
  else if (k === "n") decide("none");
  else if (k === "s") decide("skip");
  else if (k === "u") undo();
  else if (k === "j" || k === "ArrowDown") { state.focus = Math.min(state.focus + 1, state.items.length - 1); render(); }
  else if (k === "k" || k === "ArrowUp") { state.focus = Math.max(state.focus - 1, 0); render(); }
  else return;
  ev.preventDefault();
});
loadPage().catch((e) => { $("status").textContent = "could not load the queue: " + e.message; });
</script></body></html>
"""
