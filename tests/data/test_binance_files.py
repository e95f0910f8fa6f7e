"""Consecutive Binance captures (issue 10 item 8): a recorder rotates its file; the next file has
no REST snapshot and its update ids continue exactly. Several files (or a glob) replay as one,
saying where each file starts and whether the ids joined; a file that does not join but brings
its own snapshot is rebuilt from it."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from execal.models.data import binance
from execal.models.data.io import load
from execal.models.data.schema import DataError

CAPTURE = "usdm_btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def lines(shared_data):
    return gzip.decompress((shared_data / "binance-raw" / CAPTURE).read_bytes()).split(b"\n")[:-1]


def _write(path, part):
    path.write_bytes(gzip.compress(b"\n".join(part) + b"\n"))
    return path


def _split_point(lines, after=0.5):
    """A depth-diff line index about `after` of the way through the file (a rotation point)."""
    i = int(len(lines) * after)
    while b"@depth" not in lines[i]:
        i += 1
    return i


def test_two_consecutive_files_equal_the_whole_capture(tmp_path, lines, shared_data):
    cut = _split_point(lines)
    a = _write(tmp_path / "capture-1.gz", lines[:cut])
    b = _write(tmp_path / "capture-2.gz", lines[cut:])
    whole = binance.read_capture(shared_data / "binance-raw" / CAPTURE, levels=50)
    both = binance.read_capture([b, a], levels=50)          # given out of order: sorted by time
    for name in ("book", "trades", "quotes", "top"):
        pd.testing.assert_frame_equal(getattr(both, name), getattr(whole, name), check_exact=True)
    files = both.stats["files"]
    assert [f["file"] for f in files] == ["capture-1.gz", "capture-2.gz"]
    assert files[0]["joined"] is None and files[1]["joined"] is True and not files[1]["snapshot"]
    assert both.stats["gaps"] == whole.stats["gaps"] == 0
    assert both.stats["messages"] == whole.stats["messages"]
    # through load(): a list of paths, the report says where each file starts
    ds = load([a, b], kind="book")
    assert len(ds.frame) == len(whole.book)
    text = " ".join(ds.report.warnings)
    assert "capture-2.gz: starts at update id" in text and "ids joined the previous file" in text


def test_a_file_that_does_not_join_is_a_counted_gap(tmp_path, lines):
    cut = _split_point(lines)
    skip = _split_point(lines, 0.6)                          # lose the diffs between the two
    a = _write(tmp_path / "capture-1.gz", lines[:cut])
    b = _write(tmp_path / "capture-2.gz", lines[skip:])
    cap = binance.read_capture([a, b])
    assert cap.stats["files"][1]["joined"] is False and cap.stats["gaps"] >= 1
    assert any("does not continue the previous file" in w and "gap" in w for w in cap.warnings)


def test_a_file_with_its_own_snapshot_resyncs_when_ids_do_not_join(tmp_path, lines, shared_data):
    cut, skip = _split_point(lines), _split_point(lines, 0.6)
    # the snapshot a recorder would fetch on restart: the book as it stands at `skip`
    rp = binance._Replay("x", "usdm", "argument", 1.0, 20)
    rp.start_file("x")
    rp.run(b"\n".join(lines[:skip]) + b"\n")
    snapshot = {"lastUpdateId": rp.prev_u,
                "bids": [[repr(p), rp.bids[p]] for p in rp.bid_keys],
                "asks": [[repr(p), rp.asks[p]] for p in rp.ask_keys]}
    # Binance's rule: the first diff after a snapshot straddles its lastUpdateId, so the restarted
    # recorder's file starts with the diff whose u is the snapshot's (re-applying it changes nothing)
    last = max(i for i in range(skip) if b"@depth" in lines[i])
    recv = lines[last].split(b" ", 1)[0]
    a = _write(tmp_path / "capture-1.gz", lines[:cut])
    b = _write(tmp_path / "capture-2.gz", [recv + b" " + json.dumps(snapshot).encode(), lines[last]] + lines[skip:])
    cap = binance.read_capture([a, b], levels=20)
    whole = binance.read_capture(shared_data / "binance-raw" / CAPTURE, levels=20)
    f2 = cap.stats["files"][1]
    assert f2["joined"] is False and f2["resynced_from_own_snapshot"] and cap.stats["resyncs"] == 1
    assert cap.stats["gaps"] == 0
    # after the resync the rebuilt book is the exchange's again: equal to the full replay
    t_resync = int(lines[skip + 1].split(b" ", 1)[0])
    late_whole = whole.book[whole.book["timestamp"] > pd.Timestamp(t_resync, tz="UTC") + pd.Timedelta("5s")]
    late_cap = cap.book.set_index("timestamp").loc[late_whole["timestamp"]].reset_index()
    np.testing.assert_array_equal(late_cap.filter(like="_price_").to_numpy(),
                                  late_whole.filter(like="_price_").to_numpy())
    np.testing.assert_allclose(late_cap.filter(like="_size_").to_numpy(),
                               late_whole.filter(like="_size_").to_numpy(), rtol=0, atol=0)


def test_cli_inspect_takes_several_files_and_globs(tmp_path, lines, capsys):
    from execal import cli
    cut = _split_point(lines)
    _write(tmp_path / "capture-1.gz", lines[:cut])
    _write(tmp_path / "capture-2.gz", lines[cut:])
    assert cli.main(["inspect", str(tmp_path / "capture-*.gz"), "--kind", "book"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "book" and "capture-1.gz + capture-2.gz" in out["file"]
    assert cli.main(["inspect", str(tmp_path / "capture-1.gz"), str(tmp_path / "capture-2.gz")]) == 0
    assert cli.main(["inspect", str(tmp_path / "nothing-*.gz")]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_only_captures_combine(tmp_path, root):
    with pytest.raises(DataError, match="consecutive raw Binance captures"):
        load([root / "sample_data" / "fills.csv", root / "sample_data" / "bars_15m.csv"])
