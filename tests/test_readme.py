"""The README's result figures are generated from a committed run record, never typed (issue 28 item 7)."""

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from readme_results import RECORD, RECORD_FILES, readme_block, render  # noqa: E402


def test_the_readme_results_are_the_committed_records_rendering():
    assert all((RECORD / name).is_file() for name in RECORD_FILES)
    assert readme_block((ROOT / "README.md").read_text()) == render(RECORD)


def test_a_changed_figure_or_a_failed_check_changes_the_rendering(tmp_path):
    for name in RECORD_FILES:
        shutil.copyfile(RECORD / name, tmp_path / name)
    before = render(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    row = next(r for r in metrics["retrieval"]["Safe-CLIP"] if r["setting"] == "T->V")
    row["R@1"] += 1.0
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    checks = json.loads((tmp_path / "checks.json").read_text())
    checks[0] = {**checks[0], "passed": False}
    (tmp_path / "checks.json").write_text(json.dumps(checks))
    after = render(tmp_path)
    assert after != before and f"| Safe-CLIP | {row['R@1']:.1f} |" in after
    assert f"these do not: {checks[0]['name']} ({checks[0]['detail']})" in after
    with pytest.raises(ValueError, match="markers missing"):
        readme_block("no block here")
