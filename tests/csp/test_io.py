"""Atomic writes (csp/_io.py): a reader sees the old file or the new one, never a torn one."""

import json

import pytest

from csp._io import write_atomic, write_json_atomic, write_text_atomic


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "status.json"
    write_json_atomic(path, {"a": 1})
    write_text_atomic(path, "replaced")
    assert path.read_text() == "replaced"
    write_atomic(path, lambda handle: handle.write(b"\x00\x01"), binary=True)
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_failing_writer_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "data.json"
    write_json_atomic(path, {"version": 1})

    def broken(handle) -> None:
        handle.write('{"version": 2, "half')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]
