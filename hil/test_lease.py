"""The lease file itself (:mod:`hil.leasefile`, run on each host): taking is exclusive, an
expired lease is taken over, only the holder renews or releases. Through the runners and the
suite: ``test_bench_mode.py`` (held, expired, released on Ctrl-C, over SSH)."""

from __future__ import annotations

import json
import os

from . import leasefile


def _record(token: str, owner: str, expires: float) -> dict:
    return {"owner": owner, "token": token, "taken": expires - 100, "expires": expires}


def test_a_lease_is_exclusive_until_it_expires(tmp_path) -> None:
    path = str(tmp_path / "sub" / "apx-hil-10.0.0.1.lease")
    assert leasefile.take(path, _record("a" * 32, "alice", 2000.0), now=1000.0) == \
        {"taken": True, "replaced": None}
    held = leasefile.take(path, _record("b" * 32, "bob", 3000.0), now=1500.0)
    assert held["taken"] is False and held["holder"]["owner"] == "alice"
    # Expired: bob takes it over and is told whose it was.
    over = leasefile.take(path, _record("b" * 32, "bob", 3000.0), now=2000.5)
    assert over["taken"] and over["replaced"]["owner"] == "alice"
    with open(path, encoding="utf-8") as stream:
        assert json.load(stream)["owner"] == "bob"
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)]


def test_only_the_holder_renews_or_releases(tmp_path) -> None:
    path = str(tmp_path / "x.lease")
    leasefile.take(path, _record("a" * 32, "alice", 2000.0), now=1000.0)
    assert leasefile.renew(path, "b" * 32, 5000.0)["renewed"] is False
    assert leasefile.release(path, "b" * 32)["released"] is False
    assert leasefile.renew(path, "a" * 32, 5000.0) == {"renewed": True}
    assert leasefile.take(path, _record("b" * 32, "bob", 9000.0), now=4000.0)["taken"] is False
    assert leasefile.release(path, "a" * 32) == {"released": True}
    assert not os.path.exists(path)


def test_a_damaged_lease_file_is_held_not_overwritten(tmp_path) -> None:
    path = tmp_path / "x.lease"
    path.write_text("{not json")
    got = leasefile.take(str(path), _record("a" * 32, "alice", 2000.0), now=1000.0)
    assert got["taken"] is False and got["holder"]["owner"].startswith("unreadable lease file")
    assert path.read_text() == "{not json"
