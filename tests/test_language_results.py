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
    LANGUAGE,
    LATEST,
    ROUNDS,
    TOWERS,
    block,
    load_records,
    render_docs,
    render_readme,
    save_record,
)


@pytest.mark.parametrize("number", sorted(ROUNDS))
def test_the_documents_hold_the_records_rendering(number):
    round_ = ROUNDS[number]
    records = load_records(round_.records)
    docs = (ROOT / "docs" / "language.md").read_text()
    assert block(docs, "docs", round_) == render_docs(records, round_)
    if number == LATEST:
        readme = (ROOT / "README.md").read_text()
        assert block(readme, "readme", round_) == render_readme(records, round_)


def test_a_changed_figure_changes_the_rendering_and_a_broken_record_is_refused(tmp_path):
    round_ = ROUNDS[LATEST]
    root = tmp_path / "round"
    for tower in TOWERS:
        shutil.copytree(round_.records / tower, root / tower)
    before = render_docs(load_records(root), round_), render_readme(load_records(root), round_)
    path = root / "hf" / "language.json"
    record = json.loads(path.read_text())
    record["text_roc_auc"]["HySAC"]["all"] = 0.123456
    path.write_text(json.dumps(record))
    after = render_docs(load_records(root), round_), render_readme(load_records(root), round_)
    assert "| HySAC (distance to the root) | " in after[0] and " 0.123 " in after[0]
    assert after[0] != before[0] and "text ROC-AUC 0.123 with MiniLM" in after[1]
    (tmp_path / "not-time.txt").write_text("real 1m2s\n")
    with pytest.raises(ValueError, match="not the output of /usr/bin/time -v"):
        save_record(root / "hf", tmp_path / "not-time.txt", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()  # nothing copied before the refusal
    time_v = root / "hf" / "time_v.txt"
    with pytest.raises(ValueError, match="already holds a record .* --replace overwrites it"):
        save_record(root / "hf", time_v, root / "tiny")
    with pytest.raises(ValueError, match="is where the run's files are"):
        save_record(root / "hf", time_v, root / "hf", replace=True)
    (root / "tiny" / "stale.json").write_text("{}")
    save_record(root / "hf", time_v, root / "tiny", replace=True)
    assert (root / "tiny" / "language.json").read_text() == path.read_text()
    assert not (root / "tiny" / "stale.json").exists()  # nothing of the replaced record stays
    with pytest.raises(ValueError, match="no generated docs block for round"):
        block("no markers here", "docs", round_)


def test_each_round_has_its_own_block():
    """Round 2's block and round 3's are found apart, although they share the end marker."""
    text = "a\n" + "\nb\n".join(
        "\n".join([ROUNDS[n].docs_block[0], f"figures of round {n}", ROUNDS[n].docs_block[1]])
        for n in sorted(ROUNDS)
    )
    for n in sorted(ROUNDS):
        found = block(text, "docs", ROUNDS[n])
        assert f"figures of round {n}" in found
        assert all(f"round {m}" not in found for m in ROUNDS if m != n)


def test_round_3s_validation_table_in_the_docs_is_its_record():
    """The round-3 sweep's table in docs/language.md, row by row, against its committed record."""
    record = json.loads((LANGUAGE / "round3" / "validation.json").read_text())
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
