"""The README's Python API example runs as written (issue 9, item 2).

The block between `<!-- api-example:start -->` and `<!-- api-example:end -->` is extracted from
README.md and run in a fresh interpreter with the repository root as working directory, as a
reader would paste it into a notebook. Its printed numbers are checked against the sample's ground
truth (sample_data/ground_truth.json) and its predictions against the power law written out by hand
from the config it exported.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- api-example:start -->", "<!-- api-example:end -->"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, "one api-example block in README.md"
    section = text[text.index(START) + len(START):text.index(END)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the api-example section holds one ```python block"
    # the block sits right after the README's first code block
    first_fence = text.index("```")
    assert text.index(START) > text.index("```\n", first_fence + 3) and \
        text.rfind("```", 0, text.index(START)) == text.index("```\n", first_fence + 3)
    return blocks[0]


@pytest.fixture
def spare_config():
    """The example writes config.json in the repository root (git-ignored): keep a user's own."""
    path = ROOT / "config.json"
    saved = path.read_bytes() if path.exists() else None
    yield path
    if saved is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(saved)


def test_readme_api_example_runs_and_its_numbers_are_right(spare_config):
    code = readme_example()
    assert "import execal" in code and ".fit(" in code and ".fix(" in code and "write_config" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    truth = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())
    # the summary, then the headline line
    assert "Power law (power_law)" in out and "std err" in out and "95% CI" in out
    m = re.search(r"converged: (True|False); Y = ([\d.]+) ± ([\d.]+); warnings: (\d+)", out)
    assert m, out
    assert m.group(1) == "True" and m.group(4) == "0"
    y, se = float(m.group(2)), float(m.group(3))
    venue_y = list(truth["fills"]["params"]["Y"].values())                  # 0.6, 0.8, 1.0
    assert min(venue_y) < y < max(venue_y) and 0 < se < 0.1                  # pooled over the venues
    # the tweak is scored on the same fills
    fitted = re.search(r"fitted: RMSE ([\d.]+) bps, bias ([+-][\d.]+) bps", out)
    hand = re.search(r"hand-set: RMSE ([\d.]+) bps, bias ([+-][\d.]+) bps", out)
    assert fitted and hand, out
    assert fitted.groups() != hand.groups()           # (soft-L1 minimises a robust cost, not the RMSE)
    # the exported config and the predictions from it
    cfg = json.loads(spare_config.read_text())
    assert cfg["model"]["name"] == "power_law" and cfg["data"]["file"] == "fills.csv"
    assert len(cfg["data"]["sha256"]) == 64 and cfg["converged"] is True
    p = cfg["model"]["params"]
    assert f"{p['Y']:.3f}" == m.group(2) and abs(p["delta"] - truth["fills"]["params"]["delta"]) < 0.05
    frame = pd.read_csv(ROOT / "sample_data" / "fills.csv")
    by_hand = (p["h"] * frame["spread_bps"] / 2
               + 1e4 * p["Y"] * frame["volatility"] * (frame["quantity"] / frame["adv"]) ** p["delta"])
    pred = re.search(r"predicted cost of ([\d,]+) fills: mean ([\d.]+) bps", out)
    assert pred and int(pred.group(1).replace(",", "")) == len(frame)
    assert float(pred.group(2)) == pytest.approx(float(np.mean(by_hand)), abs=0.006)
