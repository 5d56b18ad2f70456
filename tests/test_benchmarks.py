"""Helpers of the benchmark scripts whose numbers the model cards quote."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import eval_edit  # noqa: E402


def test_paired_against_reference_is_per_subject():
    # subject 1: +1 and 0 dB on two relights (mean +0.5); subject 2: -1 dB; subject 3 has no re-render
    # row for its edit (not paired); the view group has one subject only (no standard error: left out)
    rows = [("relight", "m", 20, 0, 0, 0, 1), ("relight", "re-render", 19, 0, 0, 0, 1),
            ("relight-b", "m", 22, 0, 0, 0, 1), ("relight-b", "re-render", 22, 0, 0, 0, 1),
            ("relight", "m", 25, 0, 0, 0, 2), ("relight", "re-render", 26, 0, 0, 0, 2),
            ("relight", "m", 30, 0, 0, 0, 3),
            ("yaw+15", "m", 30, 0, 0, 0, 1), ("yaw+15", "re-render", 29, 0, 0, 0, 1)]
    out = eval_edit.paired_against(rows, "re-render")
    d = out["relight"]["m"]
    assert d["mean"] == pytest.approx(-0.25)
    assert d["se"] == pytest.approx(np.std([0.5, -1.0], ddof=1) / np.sqrt(2))
    assert (d["wins"], d["subjects"]) == (1, 2)
    assert "view15" not in out and "re-render" not in out["relight"]


def test_merge_joins_runs_and_keeps_each_edit_once(tmp_path, capsys):
    import json

    def run(seeds, psnr):
        rows = [dict(zip(eval_edit.ROW_KEYS, (case, m, psnr + (m == "guided edit"), 0.8, 0.4, 0.1, s), strict=True))
                for s in seeds for case in ("relight", "yaw+15") for m in ("re-render", "guided edit")]
        return {"args": {}, "table": {}, "rows": rows}

    for name, seeds, p in (("a", [1, 2], 20.0), ("b", [2, 3], 30.0)):  # subject 2 twice: the first run's kept
        (tmp_path / f"{name}.json").write_text(json.dumps(run(seeds, p)))
    eval_edit.merge([str(tmp_path / "a.json"), str(tmp_path / "b.json")], str(tmp_path / "m.json"))
    out = json.loads((tmp_path / "m.json").read_text())
    t = out["table"]["relight"]
    assert t["re-render"]["n"] == 3 and t["re-render"]["psnr"] == pytest.approx((20 + 20 + 30) / 3)
    assert t["guided edit"]["vs_rerender"]["mean"] == pytest.approx(1.0)
    assert "(subjects 3, from 2 runs)" in capsys.readouterr().out


def test_summarise_pairs_the_reread_edits_with_the_default_edit(capsys):
    # two subjects: the guided edit +1 and +2 dB over the default edit, the re-render 0.5 dB under it;
    # the default edit is not paired with itself, the re-render not with the default edit
    rows = [(case, m, p + (s == 2) * (m == "guided edit"), 0.8, 0.4, 0.1, s)
            for s in (1, 2) for case in ("relight", "relight-b")
            for m, p in (("default edit", 20.0), ("guided edit", 21.0), ("re-render", 19.5))]
    t = eval_edit.summarise(rows, ["default edit", "guided edit", "re-render"])["relight"]
    d = t["guided edit"]["vs_default_edit"]
    assert d["mean"] == pytest.approx(1.5) and d["se"] == pytest.approx(0.5) and d["wins"] == 2
    assert t["guided edit"]["vs_rerender"]["mean"] == pytest.approx(2.0)
    assert "vs_default_edit" not in t["re-render"] and "vs_default_edit" not in t["default edit"]
    assert "PSNR minus the default edit's" in capsys.readouterr().out


def test_report_against_pairs_each_subject_with_the_reference_column(capsys):
    """Subject 1's three relights are 1 dB over the reference, subject 2's 3 dB: paired mean +2, s.e. 1 (two
    subjects), whatever the number of relights per subject; the reference itself +0."""
    rows = [{"seed": 1, "light": k, "ref": 20.0 + k, "x": 21.0 + k} for k in range(3)] + \
        [{"seed": 2, "light": 0, "ref": 30.0, "x": 33.0}]
    eval_edit.report_against(rows, "ref", " (test)")
    out = capsys.readouterr().out
    assert out.startswith('4 relights of 2 subjects (test), mean PSNR dB (per subject against "ref"):')
    assert "  x  " in out and "24.75  +2.00 +- 1.00" in out and "23.25  +0.00 +- 0.00" in out  # means over rows
