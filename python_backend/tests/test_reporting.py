"""Progress shown to people: tqdm bars per stage whose ETA counts only work done since the bar opened."""

from __future__ import annotations

from mrisr.progress import ProgressEvent
from mrisr.io.reporting import make_progress


def test_a_stage_resumed_part_way_opens_its_bar_at_that_count(capsys):
    report, close = make_progress("bar")
    report(ProgressEvent("slices", 10, 40, "sample 2/4"))  # the second sample's part of a 4-sample run
    bar = report.bar
    assert (bar.initial, bar.n, bar.total, bar.desc) == (10, 10, 40, "slices")
    # tqdm's rate (and so the ETA) is (n - initial) / elapsed: the 10 units done before it opened do not count
    report(ProgressEvent("slices", 20, 40, ""))
    assert report.bar is bar and bar.n == 20
    report(ProgressEvent("save", 0, 1, ""))
    assert report.bar is not bar and report.bar.initial == 0
    close()
    assert "slices" in capsys.readouterr().err
