"""What `linkage-pipeline run` says and returns: a failed run is a non-zero exit naming the step, the error and the
run; a data directory of tables only runs without the document jobs; a file-level config problem is one line.

The failures are injected through the compute resource's device (``LP_DEVICE``): a device the resource does not
understand is an error by design (it never falls back to the CPU silently), so these runs keep failing whatever
else changes in the assets.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from _pipeline_cli import (
    RUN_ID,
    cli_env,
    instance_at,
    run_cli,
    tables_only_dir,
    tiny_corpus,
)

from assets_defs.definitions import all_assets
from assets_defs.schedules import linkage_job_schedule
from assets_defs.sql_models import PER_SOURCE_TABLES
from linkage_pipeline import schema
from resources import ComputeResource, EnginesResource, LinkageStore

pytestmark = pytest.mark.slow  # runs the CLI in subprocesses

BAD_DEVICE = "LP_DEVICE_IS_BOGUS"
DEVICE_ERROR = (f"ValueError: compute resource: device must be one of 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU "
                f"index), got '{BAD_DEVICE}'")


def failed_runs(stderr: str, home: Path) -> dict[str, dg.DagsterRun]:
    """The runs the command's error output names, as recorded in the instance."""
    instance = instance_at(home)
    runs = {run_id: instance.get_run_by_id(run_id) for run_id in RUN_ID.findall(stderr)}
    assert all(run is not None for run in runs.values()), runs
    return runs


def test_a_failed_step_makes_run_exit_non_zero_and_names_step_error_and_run(tmp_path: Path) -> None:
    data = tiny_corpus(tmp_path / "corpus")
    done = run_cli(["run", "--data-dir", str(data)], cli_env(tmp_path / "home", LP_DEVICE=BAD_DEVICE))
    out, err = done.stdout, done.stderr
    assert done.returncode == 1, out[-3000:] + err[-3000:]
    assert "Traceback (most recent call last)" not in err  # the CLI itself did not crash
    # the model step fails (and what needs the model after it); layout and OCR of each source still run
    assert f"step linkage_model: {DEVICE_ERROR}" in err, err[-3000:]
    runs = failed_runs(err, tmp_path / "home")
    assert "linkage_job" in {run.job_name for run in runs.values()}
    assert all(run.status == dg.DagsterRunStatus.FAILURE for run in runs.values())
    summary = err[err.index("runs FAILED:"):]
    assert "document sources and linkage model (run " in summary and "http://127.0.0.1:3000/runs/" in summary
    # what succeeded is still reported
    assert "source firm_directory: " in out and "== layout_evaluation (2 rows)" in out, out[-3000:]


def test_a_failed_table_linkage_is_reported_with_its_assets(tmp_path: Path) -> None:
    data = tables_only_dir(tmp_path / "tables")
    done = run_cli(["run", "--data-dir", str(data)], cli_env(tmp_path / "home", LP_DEVICE=BAD_DEVICE))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    line = (
        "step fellegi_sunter_table_linkage (assets table_clusters, table_comparison_patterns, table_linkage_summary, "
        f"table_links, table_model_parameters): {DEVICE_ERROR}"
    )
    assert line in done.stderr, done.stderr[-3000:]
    (run,) = failed_runs(done.stderr, tmp_path / "home").values()
    assert (run.job_name, run.status) == ("table_linkage_job", dg.DagsterRunStatus.FAILURE)
    assert "table reg_a: ok" in done.stdout and "table linkages: FAILED" in done.stdout


def test_a_data_dir_of_tables_only_skips_the_document_jobs_and_links_the_tables(tmp_path: Path) -> None:
    data = tables_only_dir(tmp_path / "tables")
    done = run_cli(["run", "--data-dir", str(data)], cli_env(tmp_path / "home"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the document jobs are skipped" in done.stdout
    assert "table linkages: ok" in done.stdout and "FAILED" not in done.stdout + done.stderr
    assert "layout_evaluation" not in done.stdout  # no document tables in the report either
    links = LinkageStore(data_dir=str(data)).store().read_table("table_links")
    assert len(links) > 20 and set(links["linkage"]) == {"a_to_b"}
    jobs = sorted(run.job_name for run in instance_at(tmp_path / "home").get_runs())
    assert jobs == ["linkage_job", "table_job", "table_job", "table_linkage_job"]  # linkage_job: document_sources only


@pytest.mark.parametrize(
    ("command", "setup", "fragment"),
    [
        ("run", lambda d: (d.mkdir(), (d / "sources.yaml").write_text("sources: [\n  a: {")),
         "sources.yaml: malformed YAML at line "),
        ("run", lambda d: None, "not found; expected a folder holding sources.yaml"),
        ("report", lambda d: None, "not found; expected a folder holding sources.yaml"),
        ("run", lambda d: (d.mkdir(), (d / "sources.yaml").write_text("sources:\n  gone: {role: query, direction: "
                                                                     "horizontal}\n")),
         "sources.yaml: no document or table source could be loaded"),
    ],
    ids=["malformed-yaml", "missing-dir", "report-missing-dir", "nothing-loads"],
)
def test_a_file_level_config_problem_is_one_line_and_exit_2(tmp_path: Path, command: str, setup, fragment: str) -> None:
    data = tmp_path / "data"
    setup(data)
    done = run_cli([command, "--data-dir", str(data)], cli_env(tmp_path / "home"), timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("linkage-pipeline: error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(data) in errors[0] and fragment in errors[0], errors[0]


def test_sql_models_read_per_source_tables_no_source_wrote_as_empty(tmp_path: Path) -> None:
    data = tables_only_dir(tmp_path / "tables")
    store = LinkageStore(data_dir=str(data)).store()
    resources = {"linkage_store": LinkageStore(data_dir=str(data)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    result = dg.materialize(all_assets, selection=["document_sources", "stg_regions", "stg_crop_texts"],
                            resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    regions = store.read_table("stg_regions")
    assert regions.empty and {"region_id", "page_file", "crop_id", "true_entity_id"} <= set(regions.columns)
    assert store.read_table("stg_crop_texts").empty
    for table, columns in PER_SOURCE_TABLES.items():
        assert list(store.read_table(table).columns) == list(columns), table
    # they are the views the per-source assets write through: a partition written later shows in them
    row = pd.DataFrame([{"crop_id": "c1", "source": "late", "ocr": "tesseract", "text": "株式会社",
                         "confidence": 0.9, "reader": "tesseract 5.5.0"}])
    store.write_partition("ocr_texts", "late", row, schema.OCR_TEXTS)
    assert store.read_table("ocr_texts")["text"].tolist() == ["株式会社"]


def test_linkage_job_of_a_tables_only_dir_gives_empty_document_tables(tmp_path: Path, monkeypatch) -> None:
    # the UI path: a user materializes the document linkage job where sources.yaml declares tables only
    from assets_defs.definitions import defs

    data = tables_only_dir(tmp_path / "tables")
    monkeypatch.setenv("LP_DATA_DIR", str(data))
    result = defs.resolve_job_def("linkage_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    assert result.success, failed
    store = LinkageStore(data_dir=str(data)).store()
    for table in ("layout_evaluation", "ocr_evaluation", "linkage_evaluation", "string_links", "record_links"):
        assert store.read_table(table).empty, table


def test_the_linkage_schedule_skips_a_data_dir_without_document_sources(tmp_path: Path) -> None:
    data = tables_only_dir(tmp_path / "tables")
    context = dg.build_schedule_context(instance=dg.DagsterInstance.ephemeral(),
                                       resources={"linkage_store": LinkageStore(data_dir=str(data))})
    answer = linkage_job_schedule(context)
    assert isinstance(answer, dg.SkipReason) and "no document sources" in answer.skip_message
