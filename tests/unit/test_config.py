"""The source registry (sources.yaml) and safe paths."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
from fixtures.table_sources import TABLE_LINKAGES_YAML, TABLES_YAML

from linkage_pipeline.config import (
    Linkage,
    Registry,
    Rejection,
    SourceConfig,
    SourceRegistry,
    TableRegistry,
    load_sources,
    load_table_sources,
    rejections_frame,
)
from linkage_pipeline.paths import atomic_output, atomic_write_bytes, safe_child
from linkage_pipeline.schema import REJECTED_INPUTS

GOOD_YAML = """\
sources:
  firm_directory: {role: target, direction: vertical, language: jpn, layout: morphology, ocr: [tesseract, rapidocr]}
  supplier_lists: {role: query, direction: horizontal, language: jpn, layout: morphology, ocr: [tesseract, rapidocr]}
linkages:
  - {query: supplier_lists, target: firm_directory}
"""


def make_data_dir(root: Path, yaml_text: str, folders: tuple[str, ...] = ("firm_directory", "supplier_lists")) -> Path:
    data = root / "data"
    data.mkdir()
    for name in folders:
        (data / name / "pages").mkdir(parents=True)
    (data / "sources.yaml").write_text(yaml_text, encoding="utf-8")
    return data


def test_good_registry(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, GOOD_YAML)
    registry = load_sources(data)
    assert registry.rejected == ()
    assert registry.names == ("firm_directory", "supplier_lists")
    firms = registry.get("firm_directory")
    assert (firms.role, firms.direction, firms.language, firms.layout) == ("target", "vertical", "jpn", "morphology")
    assert firms.ocr == ("tesseract", "rapidocr") and firms.primary_ocr == "rapidocr"
    assert firms.path == (data / "firm_directory").resolve() and firms.pages_dir.is_dir()
    assert registry.linkages == (Linkage(query="supplier_lists", target="firm_directory"),)
    assert firms.to_record() == {
        "name": "firm_directory",
        "role": "target",
        "direction": "vertical",
        "language": "jpn",
        "layout": "morphology",
        "ocr": ["tesseract", "rapidocr"],
        "primary_ocr": "rapidocr",
        "path": str((data / "firm_directory").resolve()),
    }
    assert vars(registry.linkages[0]) == {"query": "supplier_lists", "target": "firm_directory"}
    assert "supplier_lists" in registry and "nope" not in registry
    with pytest.raises(KeyError, match="known sources: firm_directory, supplier_lists"):
        registry.get("nope")


@pytest.mark.parametrize(
    ("settings", "ocr", "primary"),
    [
        ("{role: query, direction: horizontal}", ("tesseract", "rapidocr"), "rapidocr"),
        ("{role: query, direction: horizontal, ocr: [tesseract]}", ("tesseract",), "tesseract"),
        ("{role: query, direction: horizontal, ocr: rapidocr}", ("rapidocr",), "rapidocr"),
        ("{role: query, direction: horizontal, primary_ocr: tesseract}", ("tesseract", "rapidocr"), "tesseract"),
    ],
)
def test_defaults_and_primary_ocr(tmp_path: Path, settings: str, ocr: tuple[str, ...], primary: str) -> None:
    data = make_data_dir(tmp_path, f"sources:\n  s: {settings}\n", folders=("s",))
    src = load_sources(data).get("s")
    assert (src.language, src.layout, src.ocr, src.primary_ocr) == ("jpn", "ppocr", ocr, primary)


# -- one bad source among good ones ------------------------------------------------------------------------

OK = "{role: query, direction: horizontal}"

BAD_SOURCES = [
    # (id, yaml entry, source name in the rejection, reason fragment)
    ("parent_path", f"'../evil': {OK}", "../evil", "contains a path separator"),
    ("absolute", f"'/abs': {OK}", "/abs", "contains a path separator"),
    ("separator", f"'a/b': {OK}", "a/b", "contains a path separator"),
    ("backslash", f"'a\\b': {OK}", "a\\b", "contains a path separator"),
    ("hidden", f"'.hidden': {OK}", ".hidden", "starts with '.'"),
    ("dotdot", f"'..': {OK}", "..", "starts with '.'"),
    ("inner_dotdot", f"'a..b': {OK}", "a..b", "contains '..'"),
    ("space", f"'with space': {OK}", "with space", "is not a safe name"),
    ("too_long", f"{'x' * 65}: {OK}", "x" * 65, "is not a safe name"),
    ("empty_name", f"'': {OK}", "", "source name is empty"),
    ("number_key", f"007: {OK}", "7", "is a int; expected a string (quote it in YAML"),
    ("bad_direction", "x: {role: query, direction: diagonal}", "x", "direction 'diagonal' is not one of horizontal, vertical"),
    ("bad_role", "x: {role: boss, direction: vertical}", "x", "role 'boss' is not one of query, target"),
    ("bad_layout", "x: {role: query, direction: vertical, layout: magic}", "x", "layout 'magic' is not one of ppocr, morphology, tesseract"),
    ("bad_engine", "x: {role: query, direction: vertical, ocr: [tesseract, easyocr]}", "x", "ocr engine 'easyocr' is not one of tesseract, rapidocr"),
    ("empty_ocr", "x: {role: query, direction: vertical, ocr: []}", "x", "ocr is empty"),
    ("duplicate_engine", "x: {role: query, direction: vertical, ocr: [tesseract, tesseract]}", "x", "ocr lists tesseract more than once"),
    ("primary_not_listed", "x: {role: query, direction: vertical, ocr: [tesseract], primary_ocr: rapidocr}", "x", "primary_ocr 'rapidocr' is not one of the listed ocr engines tesseract"),
    ("bad_language", "x: {role: query, direction: vertical, language: 'j p n'}", "x", "language 'j p n' is not a language code"),
    ("unknown_field", "x: {role: query, direction: vertical, directon: vertical}", "x", "unknown field 'directon'; expected only role, direction"),
    ("missing_role", "x: {direction: vertical}", "x", "missing field 'role'; expected one of query, target"),
    ("not_a_mapping", "x: target", "x", "settings 'target' are a str; expected a mapping"),
    ("missing_folder", f"nofolder: {OK}", "nofolder", "source folder"),
    ("missing_pages", f"nopages: {OK}", "nopages", "pages not found"),
    ("symlink_escape", f"linked: {OK}", "linked", "resolves outside the data directory"),
    ("case_collision", f"Supplier_Lists: {OK}", "Supplier_Lists", "differs from source 'supplier_lists' only in letter case"),
]


@pytest.mark.parametrize(("entry", "name", "fragment"), [c[1:] for c in BAD_SOURCES], ids=[c[0] for c in BAD_SOURCES])
def test_bad_source_is_rejected_and_the_others_load(tmp_path: Path, entry: str, name: str, fragment: str) -> None:
    text = GOOD_YAML.replace("linkages:", f"  {entry}\nlinkages:")
    data = make_data_dir(tmp_path, text)
    (data / "nopages").mkdir()
    for folder in ("x", "Supplier_Lists"):
        (data / folder / "pages").mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    (outside / "pages").mkdir(parents=True)
    (data / "linked").symlink_to(outside, target_is_directory=True)
    registry = load_sources(data)
    assert registry.names == ("firm_directory", "supplier_lists")
    assert len(registry.linkages) == 1
    assert [(r.source, r.file, r.stage) for r in registry.rejected] == [(name, "sources.yaml", "sources")]
    assert fragment in registry.rejected[0].reason
    assert not (tmp_path / "evil").exists()


def test_rejection_message_names_file_source_and_field(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, "sources:\n  x: {role: query, direction: diagonal}\n", folders=("x",))
    (rejection,) = load_sources(data).rejected
    assert str(rejection) == "sources.yaml: source 'x': direction 'diagonal' is not one of horizontal, vertical"
    assert rejection.to_record() == {
        "source": "x",
        "file": "sources.yaml",
        "stage": "sources",
        "reason": "direction 'diagonal' is not one of horizontal, vertical",
    }
    frame = rejections_frame([rejection])
    assert list(frame.columns) == list(REJECTED_INPUTS) and frame.iloc[0]["source"] == "x"
    assert list(rejections_frame([]).columns) == list(REJECTED_INPUTS)


def test_strict_raises_with_every_problem(tmp_path: Path) -> None:
    text = "sources:\n  x: {role: query, direction: diagonal}\n  '../evil': {role: query, direction: vertical}\n"
    data = make_data_dir(tmp_path, text, folders=("x",))
    with pytest.raises(ValueError, match="2 problem") as info:
        load_sources(data, strict=True)
    assert "source 'x': direction 'diagonal'" in str(info.value) and "source '../evil'" in str(info.value)


BAD_LINKAGES = [
    ("unknown_source", "{query: supplier_lists, target: phone_book}", "supplier_lists->phone_book", "target source 'phone_book' is not defined"),
    ("role_swapped", "{query: firm_directory, target: supplier_lists}", "firm_directory->supplier_lists", "query source 'firm_directory' has role 'target'"),
    ("duplicate", "{query: supplier_lists, target: firm_directory}", "supplier_lists->firm_directory", "duplicate of an earlier linkage"),
    ("missing_field", "{query: supplier_lists}", "supplier_lists->None", "missing field 'target'"),
    ("unknown_field", "{query: supplier_lists, target: firm_directory, k: 3}", "supplier_lists->firm_directory", "unknown field 'k'"),
    ("not_a_mapping", "supplier_lists", "linkage 2", "expected a mapping like"),
]


@pytest.mark.parametrize(("entry", "name", "fragment"), [c[1:] for c in BAD_LINKAGES], ids=[c[0] for c in BAD_LINKAGES])
def test_bad_linkage_is_rejected(tmp_path: Path, entry: str, name: str, fragment: str) -> None:
    data = make_data_dir(tmp_path, GOOD_YAML + f"  - {entry}\n")
    registry = load_sources(data)
    assert registry.linkages == (Linkage("supplier_lists", "firm_directory"),)
    assert [(r.source, r.stage) for r in registry.rejected] == [(name, "sources")]
    assert fragment in registry.rejected[0].reason


def test_linkage_to_a_rejected_source_says_so(tmp_path: Path) -> None:
    text = GOOD_YAML.replace("direction: vertical", "direction: diagonal")
    registry = load_sources(make_data_dir(tmp_path, text))
    assert registry.linkages == ()
    reasons = [r.reason for r in registry.rejected]
    assert "direction 'diagonal'" in reasons[0]
    assert "target source 'firm_directory' was rejected (see its own rejection)" in reasons[1]


# -- file-level errors -------------------------------------------------------------------------------------


def test_missing_sources_yaml_names_path_and_format(tmp_path: Path) -> None:
    (tmp_path / "firm_directory" / "pages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as info:
        load_sources(tmp_path)
    message = str(info.value)
    assert str(tmp_path.resolve() / "sources.yaml") in message and "sources:" in message and "linkages:" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("sources:\n  a: {role: query\n", "malformed YAML at line"),
        ("sources:\n  a: {role: query, direction: vertical}\n  a: {role: query, direction: vertical}\n", "duplicate key 'a'"),
        ("", "the file is empty"),
        ("- a\n- b\n", "top level is a list"),
        ("sources: {}\nsourcs: {}\n", "unknown top-level key 'sourcs'"),
        ("linkages: []\n", "missing 'sources'"),
        ("sources: [a, b]\n", "'sources' is a list; expected a mapping"),
        ("sources: {}\nlinkages: {a: b}\n", "'linkages' is a dict; expected a list"),
    ],
)
def test_unreadable_sources_yaml_raises(tmp_path: Path, text: str, fragment: str) -> None:
    data = make_data_dir(tmp_path, text, folders=())
    with pytest.raises(ValueError, match="sources.yaml") as info:
        load_sources(data)
    assert fragment in str(info.value)


def test_empty_sources_give_an_empty_registry(tmp_path: Path) -> None:
    registry = load_sources(make_data_dir(tmp_path, "sources:\nlinkages:\n", folders=()))
    assert (registry.sources, registry.linkages, registry.rejected) == ((), (), ())


def test_source_config_validates_direct_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="direction 'up' is not one of horizontal, vertical"):
        SourceConfig(name="s", role="query", direction="up", path=tmp_path)
    with pytest.raises(ValueError, match="contains a path separator"):
        SourceConfig(name="../s", role="query", direction="vertical", path=tmp_path)
    src = SourceConfig("s", "query", "vertical", tmp_path, ocr=["tesseract"])  # type: ignore[arg-type]
    assert src.ocr == ("tesseract",) and src.primary_ocr == "tesseract"


def test_rejection_is_positional_and_frozen() -> None:
    rejection = Rejection("s", "p.png", "layout_regions", "why")
    assert rejection.to_record() == {"source": "s", "file": "p.png", "stage": "layout_regions", "reason": "why"}
    with pytest.raises(AttributeError):
        rejection.reason = "other"  # type: ignore[misc]


# -- paths -------------------------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "base"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f.png").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out_link").symlink_to(outside, target_is_directory=True)
    (root / "in_link").symlink_to(root / "a", target_is_directory=True)
    return root


@pytest.mark.parametrize(
    ("parts", "fragment"),
    [
        (("..",), "outside"),
        (("../evil",), "outside"),
        (("a", "../../evil"), "outside"),
        (("/etc/passwd",), "is absolute"),
        (("a", "/etc"), "is absolute"),
        (("C:\\Windows",), "is absolute"),
        (("out_link",), "outside"),
        (("out_link", "x.png"), "outside"),
        (("",), "empty path part"),
        (("a\x00b",), "NUL byte"),
        ((3,), "expected a string"),
    ],
)
def test_safe_child_refuses_escapes(base: Path, parts: tuple[object, ...], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        safe_child(base, *parts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((), "."),
        (("a",), "a"),
        (("a", "f.png"), "a/f.png"),
        (("a/f.png",), "a/f.png"),
        (("a/../a/f.png",), "a/f.png"),
        (("in_link", "f.png"), "a/f.png"),
        (("new", "not_yet.png"), "new/not_yet.png"),
    ],
)
def test_safe_child_allows_paths_inside(base: Path, parts: tuple[str, ...], expected: str) -> None:
    assert safe_child(base, *parts) == (base / expected).resolve()


def test_atomic_write_bytes_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["out.bin"]
    with pytest.raises(ValueError, match="expected bytes"):
        atomic_write_bytes(target, "text")  # type: ignore[arg-type]
    assert target.read_bytes() == b"second"


def test_atomic_output_leaves_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["table.parquet"]
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["table.parquet"]


def test_missing_linkages_key_links_every_query_to_every_target(tmp_path: Path) -> None:
    for name in ("lists_a", "lists_b", "directory"):
        (tmp_path / name / "pages").mkdir(parents=True)
    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        "  lists_a: {role: query, direction: horizontal}\n"
        "  lists_b: {role: query, direction: horizontal}\n"
        "  directory: {role: target, direction: vertical}\n"
    )
    registry = load_sources(tmp_path)
    assert [(lk.query, lk.target) for lk in registry.linkages] == [("lists_a", "directory"), ("lists_b", "directory")]


# -- hostile sources.yaml: alias bombs, deep nesting, code tags, unbounded values in reasons --------------------


def _alias_bomb(section: str, levels: int = 9) -> str:
    """A "billion laughs" file: each list holds nine aliases of the previous one (9**levels strings in all)."""
    lines = [f"{section}:", "  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for k in range(1, levels):
        lines.append(f"  - &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]")
    return "sources: {}\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("section", ["linkages", "table_linkages"])
def test_alias_bomb_is_refused_at_once_in_one_line(tmp_path: Path, section: str) -> None:
    import time
    import tracemalloc

    from linkage_pipeline.config import load_table_sources

    text = _alias_bomb(section)
    assert len(text.encode()) < 700
    data = make_data_dir(tmp_path, text, folders=())
    for load in (load_sources, load_table_sources):
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            with pytest.raises(ValueError) as info:
                load(data)
            elapsed = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        message = str(info.value)
        assert elapsed < 0.5 and peak < 5_000_000, (load.__name__, elapsed, peak)
        assert "\n" not in message and len(message) < 400, message
        assert str(data.resolve() / "sources.yaml") in message and "aliases are not allowed" in message
        assert "line 3" in message  # the first anchor


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("sources:\n  a: &base {role: query, direction: vertical}\n  b: *base\n", "aliases are not allowed"),
        ("sources: !!python/object/apply:os.system ['echo pwned']\n", "could not determine a constructor"),
        ("sources:\n  a: !!python/name:os.system {role: query}\n", "could not determine a constructor"),
        ("sources: {}\nlinkages: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),  # ours at 32 levels or libyaml's
        ("sources:\n  a: {role: query, direction: vertical, language: " + "9" * 5000 + "}\n", "cannot read a value"),
    ],
    ids=["alias", "python_apply", "python_name", "deep_nesting", "huge_int"],
)
def test_hostile_yaml_is_refused_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    data = make_data_dir(tmp_path, text, folders=("a",))
    with pytest.raises(ValueError) as info:
        load_sources(data)
    message = str(info.value)
    assert message.startswith(f"{data.resolve() / 'sources.yaml'}: ") and fragment in message, message
    assert len(message) < 1000 and "\n" not in message


def test_oversized_sources_yaml_is_refused_before_parsing(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, "sources: {}\n# " + "x" * (9 * 2**20) + "\n", folders=())
    with pytest.raises(ValueError, match=r"sources.yaml: the file is 9\.0 MiB; expected at most 8 MiB"):
        load_sources(data)


LONG = "x" * 100_000


@pytest.mark.parametrize(
    ("entry", "linkage"),
    [
        (f"a: {{role: query, direction: '{LONG}'}}", ""),
        ("a: {role: query, direction: vertical, ocr: {" + ", ".join(f"e{k}: {k}" for k in range(20_000)) + "}}", ""),
        (f"'{LONG[:1000]}': {{role: query, direction: vertical}}", ""),  # YAML keys hold up to 1024 characters
        ("a: {role: query, direction: vertical}", "[" + ", ".join(["lol"] * 50_000) + "]"),
        ("a: {role: query, direction: vertical}", f"{{query: '{LONG}', target: a}}"),
        ("a: [" + ", ".join(["lol"] * 50_000) + "]", ""),
    ],
    ids=["long_string", "long_mapping", "long_name", "long_linkage_item", "long_linkage_value", "long_settings"],
)
def test_rejection_reasons_quote_user_values_in_bounded_length(tmp_path: Path, entry: str, linkage: str) -> None:
    text = f"sources:\n  {entry}\n" + (f"linkages:\n  - {linkage}\n" if linkage else "")
    data = make_data_dir(tmp_path, text, folders=("a",))
    registry = load_sources(data)
    assert registry.rejected
    for rejection in registry.rejected:
        assert len(rejection.reason) <= 600 and len(rejection.source) <= 200, rejection
        assert len(str(rejection)) <= 900 and "\n" not in str(rejection)
    assert "..." in " ".join(f"{r.source} {r.reason}" for r in registry.rejected)


def test_short_repr_and_rejection_bounds() -> None:
    from linkage_pipeline.config import MAX_REASON_CHARS, short_repr

    assert short_repr("diagonal") == "'diagonal'" and short_repr({"a": [1, 2]}) == "{'a': [1, 2]}"
    long = short_repr("y" * 10_000)
    assert len(long) <= 80 and long.startswith("'yyy") and "..." in long
    assert len(short_repr(list(range(10_000)))) <= 80
    deep: list[object] = []
    for _ in range(50):
        deep = [deep, deep]
    assert len(short_repr(deep)) <= 80
    assert len(short_repr("z" * 500, limit=30)) <= 30
    made = Rejection("s" * 10_000, "f" * 10_000, "sources", "r" * 10_000)
    assert len(made.reason) <= MAX_REASON_CHARS and made.reason.endswith("characters cut)")
    assert len(made.source) <= 200 and len(made.file) <= 300
    assert Rejection("s", "f", "sources", "why").reason == "why"


def test_document_linkage_not_a_mapping_names_its_position_once(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, GOOD_YAML + "  - supplier_lists\n")
    (rejection,) = load_sources(data).rejected
    assert str(rejection) == (
        "sources.yaml: source 'linkage 2': entry 'supplier_lists' is a str; expected a mapping like "
        "{query: supplier_lists, target: firm_directory}"
    )


# -- each rejection is logged once -----------------------------------------------------------------------------


def _warnings_about(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and fragment in r.getMessage()]


def test_a_rejection_is_logged_once_per_load_and_not_per_asset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from resources import LinkageStore

    text = GOOD_YAML.replace("linkages:", "  '../evil': {role: query, direction: vertical}\nlinkages:")
    data = make_data_dir(tmp_path, text)
    caplog.set_level(logging.DEBUG)
    registry = load_sources(data)
    assert [r.source for r in registry.rejected] == ["../evil"]
    assert len(_warnings_about(caplog, "../evil")) == 1
    caplog.clear()

    # Every asset, sensor tick and schedule loads the registry through the resource: that must not repeat it.
    (tmp_path / "fresh").mkdir()
    fresh = make_data_dir(tmp_path / "fresh", text)
    resource = LinkageStore(data_dir=str(fresh))
    for _ in range(3):
        assert resource.registry().rejected == registry.rejected
        assert resource.source("supplier_lists").name == "supplier_lists"
    assert len(_warnings_about(caplog, "../evil")) == 1
    assert LinkageStore(data_dir=str(fresh)).registry().rejected == registry.rejected  # another resource instance
    assert len(_warnings_about(caplog, "../evil")) == 1

    # A new problem (the file changed) is reported at once, an unchanged one still only once.
    (fresh / "sources.yaml").write_text(text.replace("linkages:", "  x: {role: boss, direction: vertical}\nlinkages:"))
    assert len(resource.registry().rejected) == 2
    assert len(_warnings_about(caplog, "../evil")) == 1 and len(_warnings_about(caplog, "role 'boss'")) == 1
    resource.registry()
    assert len(_warnings_about(caplog, "role 'boss'")) == 1


def test_a_table_rejection_is_logged_once_per_load_and_not_per_asset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from linkage_pipeline.config import load_table_sources
    from resources import LinkageStore

    data = make_data_dir(tmp_path, "tables:\n  bad: {path: ../outside.csv, id: id}\n", folders=())
    caplog.set_level(logging.DEBUG)
    (rejection,) = load_table_sources(data).rejected
    assert len(_warnings_about(caplog, "outside")) == 1
    caplog.clear()
    resource = LinkageStore(data_dir=str(data))
    for _ in range(3):
        assert resource.table_registry().rejected == (rejection,)
    assert _warnings_about(caplog, "outside") == []  # the load above reported it already


# -- table sources (tables and table_linkages) -----------------------------------------------------------------

def make_table_dir(root: Path, text: str) -> Path:
    """``root`` as a data directory with two small firm registers (CSV and Parquet) and ``text`` as sources.yaml."""
    (root / "tables").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"firm_id": ["L00000", "L00001"], "name": ["Abe Baker Steel Co.", "大阪紡績株式会社"],
                  "city": ["Kobe", "大阪"], "founded": ["1900", "1882"]}).to_csv(root / "tables" / "registry_a.csv",
                                                                               index=False)
    pd.DataFrame({"record_no": ["R00000"], "firm_name": ["Abe Baker Steel Company"], "city": ["Kobe"],
                  "founded": ["1901"]}).to_parquet(root / "tables" / "registry_b.parquet", index=False)
    (root / "sources.yaml").write_text(text, encoding="utf-8")
    return root


def test_registries_share_one_generic_registry(tmp_path: Path) -> None:
    tables = load_table_sources(make_table_dir(tmp_path, TABLES_YAML))
    assert isinstance(tables, TableRegistry) and isinstance(tables, Registry)
    assert issubclass(SourceRegistry, Registry) and dataclasses.is_dataclass(tables)
    assert "registry_b" in tables and "docs" not in tables
    assert tables.get("registry_b").id_column == "record_no"
    with pytest.raises(KeyError, match="table source 'nope' is not loaded; known table sources: registry_a, registry_b"):
        tables.get("nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tables.sources = ()  # type: ignore[misc]
    assert TableRegistry() == TableRegistry(sources=(), linkages=(), rejected=()) != SourceRegistry()


def test_good_table_config(tmp_path: Path) -> None:
    registry = load_table_sources(make_table_dir(tmp_path, TABLES_YAML + TABLE_LINKAGES_YAML), strict=True)
    assert registry.names == ("registry_a", "registry_b")
    a = registry.get("registry_a")
    assert (a.format, a.id_column, a.columns) == ("csv", "firm_id", ("name", "city", "founded"))
    assert registry.get("registry_b").format == "parquet"
    link, dedup = registry.linkages
    assert (link.name, link.kind, link.left, link.right) == ("a_to_b", "link", "registry_a", "registry_b")
    assert [(f.name, f.right, f.comparison) for f in link.fields] == [
        ("name", "firm_name", "jaro_winkler"), ("city", "city", "exact"), ("founded", "founded", "levenshtein")]
    assert (dedup.name, dedup.kind, dedup.right_source, dedup.threshold) == ("registry_a__dedup", "dedup", "registry_a", 0.5)
    # one link per entity unless the entry says otherwise; written to table_linkages as text
    assert (link.one_to_one, dedup.one_to_one) == ("auto", "auto")
    assert link.to_record()["one_to_one"] == "auto"


def test_document_sources_ignore_the_tables_section(tmp_path: Path) -> None:
    data = make_table_dir(tmp_path, TABLES_YAML + TABLE_LINKAGES_YAML)
    registry = load_sources(data)  # a tables-only file has no document sources and is not an error
    assert (registry.sources, registry.linkages, registry.rejected) == ((), (), ())
    (tmp_path / "docs" / "pages").mkdir(parents=True)
    (tmp_path / "sources.yaml").write_text("sources:\n  docs: {role: query, direction: horizontal}\n" + TABLES_YAML)
    assert load_sources(tmp_path).names == ("docs",)


@pytest.mark.parametrize(
    ("entry", "name", "fragment"),
    [
        ("../up: {path: tables/registry_a.csv, id: firm_id}", "../up", "contains a path separator"),
        ("esc: {path: ../outside.csv, id: firm_id}", "esc", "outside"),
        ("abs: {path: /etc/passwd.csv, id: firm_id}", "abs", "is absolute"),
        ("gone: {path: tables/missing.csv, id: firm_id}", "gone", "file "),
        ("xls: {path: tables/registry_a.xlsx, id: firm_id}", "xls", "suffix '.xlsx'; expected one of .csv"),
        ("noid: {path: tables/registry_a.csv}", "noid", "field 'id' is None; expected a non-empty string"),
        ("badid: {path: tables/registry_a.csv, id: nope}", "badid", "id column 'nope' is not in 'tables/registry_a.csv'; its columns are firm_id, name"),
        ("extra: {path: tables/registry_a.csv, id: firm_id, sep: ';'}", "extra", "unknown field 'sep'; expected only path, id"),
        ("enc: {path: tables/registry_a.csv, id: firm_id, encoding: klingon}", "enc", "encoding 'klingon' is not a known"),
        ("pqdelim: {path: tables/registry_b.parquet, id: record_no, delimiter: ';'}", "pqdelim", "apply to CSV files only"),
        ("docs: {path: tables/registry_a.csv, id: firm_id}", "docs", "is also a document source"),
    ],
)
def test_bad_table_entry_is_rejected_and_the_others_load(tmp_path: Path, entry: str, name: str, fragment: str) -> None:
    (tmp_path / "docs" / "pages").mkdir(parents=True)
    text = "sources:\n  docs: {role: query, direction: horizontal}\n" + TABLES_YAML + f"  {entry}\n"
    registry = load_table_sources(make_table_dir(tmp_path, text))
    assert registry.names == ("registry_a", "registry_b")
    (rejection,) = registry.rejected
    assert (rejection.source, rejection.file, rejection.stage) == (name, "sources.yaml", "table_sources")
    assert fragment in rejection.reason, rejection.reason


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("{left: registry_a, right: nowhere, fields: {name: exact}}", "right table 'nowhere' is not defined under 'tables'"),
        ("{left: registry_a, fields: {name: exact}}", "expected either 'dedup: <table>' or both 'left' and 'right'"),
        ("{dedup: registry_a, right: registry_b, fields: {name: exact}}", "expected either 'dedup: <table>'"),
        ("{dedup: registry_a, fields: {}}", "fields {} is not a non-empty mapping"),
        ("{dedup: registry_a, fields: {name: soundex}}", "comparison 'soundex' is not one of jaro_winkler, exact, levenshtein"),
        ("{dedup: registry_a, fields: {town: exact}}", "field 'town' is not a column of left table 'registry_a' (tables/registry_a.csv)"),
        ("{left: registry_a, right: registry_b, fields: {name: exact}}", "field 'name' is not a column of right table 'registry_b'"),
        ("{dedup: registry_a, fields: {firm_id: exact}}", "is the id column of table 'registry_a'"),
        ("{dedup: registry_a, fields: {name: {thresholds: [0.9, 0.8]}}}", "field 'name': FieldSpec('name').thresholds"),
        ("{dedup: registry_a, fields: {name: exact}, threshold: 1.5}", "threshold 1.5 is not a probability"),
        ("{dedup: registry_a, fields: {name: exact}, one_to_one: true}", "one_to_one applies to linking two tables"),
        ("{left: registry_a, right: registry_b, fields: {city: exact}, one_to_one: always}",
         "one_to_one 'always' is not auto, true or false"),
        ("{dedup: registry_a, fields: {name: exact}, blocking: [[town]]}", "blocking column 'town' is not a column"),
        ("{name: ../x, dedup: registry_a, fields: {name: exact}}", "name '../x' is not a safe name"),
        ("{dedup: registry_a, fields: {name: exact}, colour: red}", "unknown field 'colour'"),
    ],
)
def test_bad_table_linkage_is_rejected(tmp_path: Path, entry: str, fragment: str) -> None:
    text = TABLES_YAML + "table_linkages:\n  - {dedup: registry_b, fields: {firm_name: jaro_winkler}}\n" + f"  - {entry}\n"
    registry = load_table_sources(make_table_dir(tmp_path, text))
    assert [link.name for link in registry.linkages] == ["registry_b__dedup"]
    (rejection,) = registry.rejected
    assert rejection.stage == "table_sources" and str(rejection).count("table linkage 2") == 1, str(rejection)
    assert fragment in rejection.reason, rejection.reason


def test_table_linkage_rejections_name_the_entry_once(tmp_path: Path) -> None:
    text = TABLES_YAML + (
        "table_linkages:\n"
        "  - {dedup: registry_b, fields: {firm_name: jaro_winkler}}\n"
        "  - {dedup: registry_a, fields: {name: exact}, colour: red}\n"
        "  - {name: named_one, dedup: registry_a, fields: {name: exact}, colour: red}\n"
        "  - just text\n"
        "  - {dedup: registry_a, fields: {town: exact}}\n"
    )
    registry = load_table_sources(make_table_dir(tmp_path, text))
    fields = "name, left, right, dedup, fields, threshold, one_to_one, blocking"
    assert [str(r) for r in registry.rejected] == [
        f"sources.yaml: source 'table linkage 2': unknown field 'colour'; expected only {fields}",
        f"sources.yaml: source 'named_one': table linkage 3: unknown field 'colour'; expected only {fields}",
        "sources.yaml: source 'table linkage 4': entry 'just text' is a str; expected e.g. {left: firms_1930, "
        "right: firms_1950, fields: {name: jaro_winkler, city: exact}} or {dedup: firms_1930, fields: "
        "{name: jaro_winkler}}",
        "sources.yaml: source 'table linkage 5': field 'town' is not a column of left table 'registry_a' "
        "(tables/registry_a.csv); its columns are name, city, founded",
    ]


def test_duplicate_linkage_names_and_strict_mode(tmp_path: Path) -> None:
    text = TABLES_YAML + "table_linkages:\n" + "  - {dedup: registry_a, fields: {name: exact}}\n" * 2
    data = make_table_dir(tmp_path, text)
    (rejection,) = load_table_sources(data).rejected
    assert "name 'registry_a__dedup' is already used" in rejection.reason
    with pytest.raises(ValueError, match=r"sources.yaml: 1 problem\(s\):\n- .*already used"):
        load_table_sources(data, strict=True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tables: [a, b]\n", "'tables' is a list"),
        ("tables: {}\ntable_linkages: {a: b}\n", "'table_linkages' is a dict; expected a list"),
        ("tables: {a: {path: x.csv, id: a}\n", "malformed YAML at line"),
    ],
)
def test_unreadable_tables_section_raises_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="sources.yaml") as info:
        load_table_sources(make_table_dir(tmp_path, text))
    assert fragment in str(info.value)
