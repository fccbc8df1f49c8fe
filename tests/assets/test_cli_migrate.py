"""The CLI refuses tables of an older schema version in one line, and `migrate` brings them up to date."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from _pipeline_cli import tables_only_dir

from assets_defs.cli import main
from linkage_pipeline.store import Store


def test_report_on_old_tables_exits_2_until_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("LP_DUCKDB_PATH", "LP_ARTIFACT_DIR"):
        monkeypatch.delenv(var, raising=False)
    data = tables_only_dir(tmp_path / "data")
    (data / "_pipeline").mkdir()
    with duckdb.connect(str(data / "_pipeline" / "linkage.duckdb")) as con:  # no version file: written before them
        con.execute("create table ocr_evaluation as select 's' as source, 'tesseract' as engine, 0.1 as cer")

    assert main(["report", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "schema version 1" in err and "linkage-pipeline migrate" in err

    assert main(["migrate", "--data-dir", str(data)]) == 0
    assert "ocr_evaluation: engine -> ocr" in capsys.readouterr().out
    migrated = Store(data / "_pipeline" / "linkage.duckdb", data / "_pipeline")
    assert migrated.read_table("ocr_evaluation").columns.tolist() == ["source", "ocr", "cer"]
    assert main(["migrate", "--data-dir", str(data)]) == 0
    assert "already at the current schema version" in capsys.readouterr().out
