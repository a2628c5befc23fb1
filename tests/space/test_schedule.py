"""Schedule: defaults, strict parsing, clear errors for bad knob files."""

from __future__ import annotations

import json

import pytest

from amk_tune.errors import ScheduleError
from space.schedule import Schedule


def test_round_trip(tmp_path):
    s = Schedule(tiles=40, split_kv=4, fuse_rope=False, sm_policy="blocked")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(s.to_dict()))
    assert Schedule.load(path) == s


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"tile": 4}, r"unknown schedule knob\(s\) \['tile'\]"),
        ({"tiles": "many"}, r"tiles = 'many' has the wrong type \(expected int or null\)"),
        ({"fuse_norm": 1}, r"fuse_norm = 1 has the wrong type \(expected bool\)"),
        ({"split_kv": 0}, r"split_kv = 0: must be >= 1"),
        ({"threads": 100}, r"threads = 100: a multiple of 32"),
        ({"sm_policy": "random"}, r"sm_policy = 'random': choose one of"),
        ({"tiles": 0}, r"tiles = 0: must be >= 1"),
    ],
)
def test_bad_knobs_are_named(knobs, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.from_dict(knobs)


def test_bad_files(tmp_path):
    with pytest.raises(ScheduleError, match="cannot read schedule file"):
        Schedule.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{tiles: 3}")
    with pytest.raises(ScheduleError, match="is not JSON"):
        Schedule.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ScheduleError, match="a JSON object of knobs, got list"):
        Schedule.load(bad)
