"""rlhf.files: a failed write leaves the old content whole and no temporary file behind."""

import pytest

from rlhf.files import atomic_dir, read_jsonl, write_json, write_jsonl, write_text


def test_jsonl_round_trip_keeps_unicode(tmp_path):
    rows = [{"prompt": "café ☕", "n": 1}, {"prompt": "line\nbreak", "n": 2}]
    write_jsonl(tmp_path / "a" / "rows.jsonl", rows)
    assert read_jsonl(tmp_path / "a" / "rows.jsonl") == rows
    assert "café" in (tmp_path / "a" / "rows.jsonl").read_text(encoding="utf-8")


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})

    def rows():
        yield {"ok": 1}
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    write_text(path, "new")
    assert path.read_text() == "new"


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "w.txt").write_text("v1")
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "w.txt").write_text("half")
        raise ValueError
    assert (target / "w.txt").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "w.txt").write_text("v2")
    assert (target / "w.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_dir_gives_an_ordinary_directory(tmp_path):
    import os

    from rlhf.files import atomic_dir

    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755  # not mkdtemp's owner-only 0o700
