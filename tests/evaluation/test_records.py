"""The resumable records file: what a rerun with other settings may replace, and what not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_red.evaluation import ItemRecord, RecordStore, SampleRecord, SettingsMismatchError

SETTINGS = {"model": "m", "sampling": {"temperature": 0.6, "n": 1}, "limit": None}
OTHER = {"model": "m", "sampling": {"temperature": 1.0, "n": 1}, "limit": 3}


def _record(uid: str) -> ItemRecord:
    return ItemRecord("toy", uid, "1", (SampleRecord("\\boxed{1}", "1", "correct", 4, "stop"),))


def _header(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])["settings"]


def test_a_header_without_records_is_replaced_by_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    RecordStore(path, SETTINGS)  # a start that failed before its first chunk
    store = RecordStore(path, OTHER)
    assert len(store) == 0
    assert _header(path) == OTHER
    assert path.read_text().count("\n") == 1


def test_records_of_other_settings_are_refused_naming_keys_and_the_way_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "records.jsonl"
    RecordStore(path, SETTINGS).append([_record("a"), _record("b")])
    before = path.read_text()
    with pytest.raises(SettingsMismatchError) as err:
        RecordStore(path, OTHER)
    assert str(err.value) == (
        f"{path} holds 2 recorded items of an evaluation with other settings (differing: "
        "limit, sampling.temperature); pass --restart to discard them, or use another --out"
    )
    assert path.read_text() == before
    extra = {**SETTINGS, "engine": "hf"}
    with pytest.raises(
        SettingsMismatchError, match=r"holds 2 recorded items .*differing: engine\)"
    ):
        RecordStore(path, extra)
    restarted = RecordStore(path, OTHER, restart=True)
    assert len(restarted) == 0
    assert _header(path) == OTHER


def test_same_settings_continue(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    RecordStore(path, SETTINGS).append([_record("a")])
    store = RecordStore(path, SETTINGS)
    assert store.done("toy", "a")
    assert not store.done("toy", "b")
    assert [r.uid for r in store.records("toy")] == ["a"]


@pytest.mark.parametrize("content", ["", '{"settings": {"model": "m", "samp'])
def test_an_empty_file_or_a_torn_header_is_started_anew(tmp_path: Path, content: str) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(content)
    store = RecordStore(path, SETTINGS)
    store.append([_record("a")])
    assert _header(path) == SETTINGS
    assert len(RecordStore(path, SETTINGS)) == 1


def test_a_first_row_that_is_not_a_header_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(_record("a").to_json()) + "\n")
    with pytest.raises(ValueError, match="row 1: not an evaluation records header"):
        RecordStore(path, SETTINGS)
