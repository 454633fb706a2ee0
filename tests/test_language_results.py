"""docs/language.md's and the README's unseen-wording figures are generated from the committed records
of the two synthetic:prose demo runs (bench/language_results.py), never typed."""

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from language_results import (  # noqa: E402
    RECORDS,
    TOWERS,
    VALIDATION,
    block,
    load_records,
    render_docs,
    render_readme,
    save_record,
)


def test_the_documents_hold_the_records_rendering():
    records = load_records()
    assert block((ROOT / "docs" / "language.md").read_text(), "docs") == render_docs(records)
    assert block((ROOT / "README.md").read_text(), "readme") == render_readme(records)


def test_a_changed_figure_changes_the_rendering_and_a_broken_record_is_refused(tmp_path):
    shutil.copyfile(RECORDS.parent / VALIDATION, tmp_path / VALIDATION)
    for tower in TOWERS:
        shutil.copytree(RECORDS / tower, tmp_path / "round2" / tower)
    root = tmp_path / "round2"
    before = render_docs(load_records(root), root), render_readme(load_records(root))
    path = root / "hf" / "language.json"
    record = json.loads(path.read_text())
    record["text_roc_auc"]["HySAC"]["all"] = 0.123456
    path.write_text(json.dumps(record))
    after = render_docs(load_records(root), root), render_readme(load_records(root))
    assert "| HySAC (distance to the root) | " in after[0] and " 0.123 " in after[0]
    assert after[0] != before[0] and "text ROC-AUC 0.123 with MiniLM" in after[1]
    (tmp_path / "not-time.txt").write_text("real 1m2s\n")
    with pytest.raises(ValueError, match="not the output of /usr/bin/time -v"):
        save_record(root / "hf", tmp_path / "not-time.txt", tmp_path / "copy")
    with pytest.raises(ValueError, match="no generated docs block"):
        block("no markers here", "docs")


def test_round_3s_validation_table_in_the_docs_is_its_record():
    """The round-3 sweep's table in docs/language.md, row by row, against its committed record."""
    record = json.loads((RECORDS.parent / "round3" / "validation.json").read_text())
    text = (ROOT / "docs" / "language.md").read_text()
    section = text[text.index("### Round 3's validation sweep") :]
    for row in record["rows"]:
        name = row["variant"] + (" (default)" if row["variant"] == record["current"] else "")
        cells = (
            f"| {name} | {row['epoch']} | {row['val_text_auc']:.3f} | {row['val_text_auc_explicit']:.3f} | "
            f"{row['val_text_auc_euphemisms']:.3f} | {row['val_recall_sum']:.1f} |"
        )
        assert cells in section, cells
    assert record["winner"] == record["current"] == "attn-10"
