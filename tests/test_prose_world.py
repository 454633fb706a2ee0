"""``synthetic:prose``: English captions whose test split words unsafety in ways training never did,
and the demo's language stage that scores the text classifiers on it."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from hysafe.data import WorldConfig, generate_world, load_manifest
from hysafe.data.categories import CATEGORIES
from hysafe.data.param_worlds import train_wordings
from hysafe.data.prose_world import (
    EUPHEMISMS,
    ROUND4_SAFE_WORDINGS,
    ROUND4_WORDINGS,
    ROUND5_SAFE_WORDINGS,
    ROUND5_WORDINGS,
    SAFE_WORDINGS,
    TEST_WORDINGS,
    VALIDATION_WORDINGS,
    wording_pools,
)
from hysafe.demo.language import (
    euphemism_mask,
    language_lines,
    text_aucs,
    unsafe_wording,
    unseen_wording_mask,
)

#: words that name unsafety outright: a euphemism holds none of them
EXPLICIT = {
    "blood", "bloody", "gun", "knife", "naked", "nude", "sex", "sexual", "drug", "drugs", "kill",
    "suicide", "abuse", "abused", "violent", "violence", "hate", "racist", "steal", "stolen", "theft",
    "vomit", "weapon", "heroin", "cocaine", "torture", "tortured", "beaten", "beating", "porn",
}  # fmt: skip


@pytest.fixture(scope="module")
def prose(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prose")
    manifest = generate_world(
        folder, WorldConfig(n_train=120, n_val=40, n_test=60, kind="prose"), progress=False
    )
    return {s: load_manifest(manifest, split=s) for s in ("train", "validation", "test")}


def _wordings(pool):
    return {w for c in CATEGORIES for w in pool(c)}


def test_every_split_words_unsafety_in_its_own_way(prose):
    pools = {split: wording_pools(c, split) for split in prose for c in CATEGORIES[:1]}
    unsafe = {split: {w for c in CATEGORIES for w in wording_pools(c, split)[0]} for split in prose}
    harmless = {split: set(pools[split][1]) for split in prose}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not unsafe[a] & unsafe[b] and not harmless[a] & harmless[b], (a, b)
    # validation: the two shared wordings training leaves out and rounds 1-3's test wordings (not round 4's)
    shared_and_earlier_rounds = _wordings(train_wordings) | _wordings(lambda c: VALIDATION_WORDINGS[c])
    assert unsafe["train"] | unsafe["validation"] == shared_and_earlier_rounds
    assert unsafe["test"] == _wordings(lambda c: TEST_WORDINGS[c]) and len(unsafe["test"]) == 3 * len(
        CATEGORIES
    )
    everything = set().union(*unsafe.values(), *harmless.values())
    for split, rows in prose.items():
        for r in rows:
            # the same sentence on the first object: a harmless phrase in the safe caption, an unsafe
            # one in the unsafe caption, each from its split's own pool
            bad = [w for w in everything if f" is shown {w}." in r.unsafe_text]
            good = [w for w in everything if f" is shown {w}." in r.safe_text]
            assert len(bad) == 1 and len(good) == 1, (r.safe_text, r.unsafe_text)
            assert bad[0] in unsafe[split] and good[0] in harmless[split]
            assert r.safe_text.replace(f"shown {good[0]}.", f"shown {bad[0]}.") == r.unsafe_text
    assert not euphemism_mask(prose["train"]).any()
    assert euphemism_mask(prose["validation"]).any() and euphemism_mask(prose["test"]).any()


def test_each_round_words_its_test_split_anew_and_a_read_test_split_is_never_a_test_split_again():
    """Round 7's test wordings and phrases appear in no earlier round; rounds 4 and 5's, read once each,
    appear in no split (retired); rounds 1-3's are validation's."""
    retired = _wordings(lambda c: (*ROUND4_WORDINGS[c], *ROUND5_WORDINGS[c]))
    earlier = _wordings(lambda c: VALIDATION_WORDINGS[c]) | retired | _wordings(train_wordings)
    assert not _wordings(lambda c: TEST_WORDINGS[c]) & earlier
    assert len(_wordings(lambda c: TEST_WORDINGS[c])) == 3 * len(CATEGORIES)
    retired_safe = {*ROUND4_SAFE_WORDINGS, *ROUND5_SAFE_WORDINGS}
    earlier_safe = {*SAFE_WORDINGS["train"], *SAFE_WORDINGS["validation"], *retired_safe}
    assert not set(SAFE_WORDINGS["test"]) & earlier_safe and len(set(SAFE_WORDINGS["test"])) == 20
    used = {
        w for split in ("train", "validation", "test") for c in CATEGORIES for w in wording_pools(c, split)[0]
    }
    used_safe = {
        w for split in ("train", "validation", "test") for w in wording_pools(CATEGORIES[0], split)[1]
    }
    assert not used & retired and not used_safe & retired_safe


#: sha256 of the wordings of every round already read and of training's and validation's phrases, as
#: rounds 4-8 chose on them (round 7 once rewrote a validation wording by accident; this pins them)
READ_ROUNDS_DIGEST = "4db122756bce2fb9f1a6c8b7cd19a77badb5bb266e4d7cf8734022d619b1afb4"


def test_the_wordings_of_rounds_already_read_never_change():
    import hashlib
    import json

    import hysafe.data.prose_world as world

    pools = [
        world.ROUND1_WORDINGS,
        world.ROUND2_WORDINGS,
        world.ROUND3_WORDINGS,
        world.ROUND4_WORDINGS,
        world.ROUND5_WORDINGS,
        SAFE_WORDINGS["train"],
        SAFE_WORDINGS["validation"],
        ROUND4_SAFE_WORDINGS,
        ROUND5_SAFE_WORDINGS,
    ]
    digest = hashlib.sha256(json.dumps(pools, sort_keys=True).encode()).hexdigest()
    assert digest == READ_ROUNDS_DIGEST


def test_euphemisms_name_nothing_unsafe_and_captions_are_sentences_about_the_scene(prose):
    for e in EUPHEMISMS:
        assert not set(re.findall(r"[a-z-]+", e)) & EXPLICIT, e
    rows = prose["train"]
    vocabulary = {w for r in rows for w in re.findall(r"[a-z]+", r.safe_text.lower())}
    assert len(vocabulary) > 150  # far more words than the other worlds' captions use
    for r in rows[:20]:
        sentences = [s for s in r.safe_text.split(". ") if s]
        assert len(sentences) >= 2 and r.safe_text.endswith(".") and r.safe_text[0].isupper()
        assert r.unsafe_text.count(".") == r.safe_text.count(".") == 3


def test_the_world_is_the_same_bit_for_bit_on_every_run(prose, tmp_path):
    again = generate_world(
        tmp_path, WorldConfig(n_train=120, n_val=40, n_test=60, kind="prose"), progress=False
    )
    rows = load_manifest(again, split="test")
    assert [r.unsafe_text for r in rows] == [r.unsafe_text for r in prose["test"]]
    a, b = (np.asarray(Image.open(r[3].unsafe_image)) for r in (rows, prose["test"]))
    assert np.array_equal(a, b)


def test_text_aucs_split_euphemisms_from_explicit_wordings(tmp_path):
    safe = torch.tensor([0.0, 0.1, 0.2, 0.3])
    unsafe = torch.tensor([1.0, 0.9, 0.15, 0.05])  # two explicit (easy), two euphemisms (hard)
    mask = np.array([False, False, True, True])
    aucs = text_aucs(safe, unsafe, mask)
    assert aucs["explicit"] == 1.0 and aucs["euphemisms"] == pytest.approx(3 / 8)
    assert aucs["all"] == pytest.approx((8 + 3) / 16)
    assert set(text_aucs(safe, unsafe, np.zeros(4, dtype=bool))) == {"all"}
    record = {
        "text_tower": None,
        "test_captions": {"unsafe": 4, "euphemisms": 2},
        "text_roc_auc": {"HySAC": aucs, "CLIP logistic probe": {"all": 0.5, "C": 1.0}},
    }
    (tmp_path / "language.json").write_text(json.dumps(record))
    lines = "\n".join(language_lines(tmp_path))
    assert "| HySAC (distance to the root) (`HySAC`) | 0.688 | 1.000 | 0.375 |" in lines
    probe = "| probe on the pretrained CLIP's text embeddings (`CLIP logistic probe`) | 0.500 | - | - |"
    assert probe in lines
    assert language_lines(tmp_path / "elsewhere") == []


def test_unseen_wordings_are_counted_from_the_data_and_the_heading_claims_only_what_was_counted(
    prose, tmp_path
):
    row = prose["test"][0]
    wording = unsafe_wording(row)
    assert len(wording.split()) > 2 and wording in row.unsafe_text.lower()
    assert wording not in row.safe_text.lower()
    assert unseen_wording_mask(prose["train"], prose["test"]).all()
    assert unseen_wording_mask(prose["train"], prose["validation"]).all()
    assert not unseen_wording_mask(prose["train"], prose["train"]).any()
    shapes = generate_world(
        tmp_path / "shapes", WorldConfig(n_train=200, n_val=20, n_test=60), progress=False
    )
    train, test = (load_manifest(shapes, split=s) for s in ("train", "test"))
    assert not unseen_wording_mask(train, test).any()  # the embedded world's test wordings are training's
    record = {"text_tower": "/m", "text_roc_auc": {"HySAC": {"all": 0.9}}}
    headings = {}
    for unseen in (None, 0, 7):
        captions = {"unsafe": 60, "euphemisms": 0, **({} if unseen is None else {"unseen_wordings": unseen})}
        (tmp_path / "language.json").write_text(json.dumps({**record, "test_captions": captions}))
        headings[unseen] = "\n".join(language_lines(tmp_path))
    assert "never seen in training" not in headings[None] + headings[0]
    assert "these are not unseen wordings" in headings[0]
    assert "## Unsafe wordings never seen in training" in headings[7] and "7 of the 60 unsafe" in headings[7]
