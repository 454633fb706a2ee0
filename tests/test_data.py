"""Manifests, ViSU loading, the synthetic world and the Dataset: values and named errors."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hysafe.data import (
    CATEGORIES,
    ManifestError,
    QuadrupletDataset,
    WorldConfig,
    category_group,
    generate_world,
    load_manifest,
    load_visu,
)
from hysafe.data.synthetic import UNSAFE_PHRASES
from hysafe.models.backbone import TINY_MODEL, register_model_configs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / n)


def good_row(**kw):
    row = {
        "id": "a",
        "safe_text": "a cat",
        "unsafe_text": "a cat, covered in blood",
        "safe_image": "img/a.png",
        "unsafe_image": "img/a_u.png",
        "category": "blood",
        "split": "train",
    }
    row.update(kw)
    return row


def test_manifest_round_trip_and_relative_paths(tmp_path):
    make_images(tmp_path / "img", ["a.png", "a_u.png"])
    rows = load_manifest(write_jsonl(tmp_path / "m.jsonl", [good_row()]))
    assert rows[0].safe_image == str((tmp_path / "img/a.png").resolve())
    assert rows[0].category == "blood" and rows[0].split == "train"
    csv = tmp_path / "m.csv"
    csv.write_text("safe_text,unsafe_text\nhello,hello blood\n")
    text_only = load_manifest(csv)
    assert text_only[0].safe_image is None and text_only[0].id == "1"


@pytest.mark.parametrize(
    "row, match",
    [
        (good_row(safe_text="  "), r"m.jsonl, row 2, field 'safe_text': empty"),
        (good_row(colour="red"), r"row 2: unknown column\(s\) \['colour'\]"),
        (good_row(safe_image="img/missing.png"), r"row 2, field 'safe_image': image file not found"),
        (good_row(split="dev"), r"row 2, field 'split'"),
        (good_row(unsafe_image=None), r"row 2: give both safe_image and unsafe_image"),
    ],
)
def test_manifest_errors_name_file_row_field(tmp_path, row, match):
    make_images(tmp_path / "img", ["a.png", "a_u.png"])
    if row.get("unsafe_image") is None:
        row.pop("unsafe_image")
    path = write_jsonl(tmp_path / "m.jsonl", [good_row(), row])
    with pytest.raises(ManifestError, match=match):
        load_manifest(path)
    # skip mode drops and counts instead of raising
    assert len(load_manifest(path, skip_bad_rows=True)) == 1


def test_unreadable_image_is_named(tmp_path, caplog):
    make_images(tmp_path / "img", ["a.png"])
    (tmp_path / "img" / "a_u.png").write_bytes(b"not a png")
    path = write_jsonl(tmp_path / "m.jsonl", [good_row()])
    with pytest.raises(ManifestError, match=r"row 1, field 'unsafe_image': unreadable image"):
        load_manifest(path, verify_images=True)
    register_model_configs()
    import open_clip

    _, _, pre = open_clip.create_model_and_transforms(TINY_MODEL)
    ds = QuadrupletDataset(load_manifest(path), preprocess=pre, tokenizer=open_clip.get_tokenizer(TINY_MODEL))
    with pytest.raises(ValueError, match=r"row a, field 'unsafe_image': unreadable image"):
        ds[0]
    with caplog.at_level("WARNING"):
        with pytest.raises(ManifestError, match="no usable rows"):
            load_manifest(path, verify_images=True, skip_bad_rows=True)
    assert "skipped 1 bad row" in caplog.text


def test_manifest_bad_json_and_missing_file(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"safe_text": "a", "unsafe_text": "b"}\n{oops\n')
    with pytest.raises(ManifestError, match="row 2: invalid JSON"):
        load_manifest(tmp_path / "m.jsonl")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="unsupported manifest type"):
        (tmp_path / "m.xml").write_text("<x/>")
        load_manifest(tmp_path / "m.xml")


def test_categories_and_groups():
    assert len(CATEGORIES) == 20
    assert category_group("Drug use") == "illegal activity" and category_group("suicide") == "self-harm"
    assert category_group("weather") == "unknown"


def test_synthetic_world_is_deterministic_and_valid(tmp_path):
    cfg = WorldConfig(n_train=12, n_val=4, n_test=4, seed=3)
    a = generate_world(tmp_path / "a", cfg)
    b = generate_world(tmp_path / "b", cfg)
    rows_a, rows_b = load_manifest(a, verify_images=True), load_manifest(b)
    assert len(rows_a) == 20 and {r.split for r in rows_a} == {"train", "validation", "test"}
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra.safe_text == rb.safe_text and ra.unsafe_text == rb.unsafe_text
        assert np.array_equal(np.array(Image.open(ra.unsafe_image)), np.array(Image.open(rb.unsafe_image)))
        assert ra.unsafe_text.startswith(ra.safe_text + ", ")
        assert any(ra.unsafe_text.endswith(p) for p in UNSAFE_PHRASES[ra.category])
        safe, unsafe = np.array(Image.open(ra.safe_image)), np.array(Image.open(ra.unsafe_image))
        assert safe.shape == (32, 32, 3) and not np.array_equal(safe, unsafe)
    other = load_manifest(generate_world(tmp_path / "c", WorldConfig(n_train=12, n_val=4, n_test=4, seed=4)))
    assert [r.safe_text for r in other] != [r.safe_text for r in rows_a]
    # reuse: a second call with the same config does not rewrite
    mtime = a.stat().st_mtime_ns
    assert generate_world(tmp_path / "a", cfg).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("kind", ["crowd", "tint"])
def test_other_worlds_are_deterministic_and_differ_from_the_embedded_one(tmp_path, kind):
    from hysafe.data.more_worlds import CROWD_PHRASES, TINT_PHRASES

    cfg = WorldConfig(n_train=40, n_val=4, n_test=4, seed=1, kind=kind)
    rows = load_manifest(generate_world(tmp_path / "a", cfg), verify_images=True)
    again = load_manifest(generate_world(tmp_path / "b", cfg))
    assert [r.unsafe_text for r in rows] == [r.unsafe_text for r in again]
    assert all(
        np.array_equal(np.array(Image.open(a.unsafe_image)), np.array(Image.open(b.unsafe_image)))
        for a, b in zip(rows, again, strict=True)
    )
    for r in rows:
        safe, unsafe = np.array(Image.open(r.safe_image)), np.array(Image.open(r.unsafe_image))
        assert safe.shape == (32, 32, 3) and not np.array_equal(safe, unsafe)
        if kind == "crowd":  # the unsafe phrase opens the caption; the safe caption follows it whole
            assert r.unsafe_text.endswith(" beside " + r.safe_text)
            assert any(r.unsafe_text.startswith(p) for p in CROWD_PHRASES[r.category])
        else:  # the unsafe phrase sits in the middle; 5% carry another category's phrase (label noise)
            head, phrase, tail = r.unsafe_text.split(", ")
            assert f"{head} {tail}" == r.safe_text and any(phrase in ps for ps in TINT_PHRASES.values())
    if kind == "tint":  # a global cue: most pixels of the unsafe image change
        r = rows[0]
        changed = (
            np.abs(
                np.array(Image.open(r.unsafe_image), float) - np.array(Image.open(r.safe_image), float)
            ).mean(-1)
            > 20
        )
        assert changed.mean() > 0.3  # the embedded world's 12 x 12 marker is 14% of the image
    with pytest.raises(ValueError, match="unknown synthetic world 'moon'"):
        WorldConfig(kind="moon")


def test_dataset_items_preload_and_targets(tmp_path):
    register_model_configs()
    import open_clip

    _, _, pre = open_clip.create_model_and_transforms(TINY_MODEL)
    tok = open_clip.get_tokenizer(TINY_MODEL)
    rows = load_manifest(generate_world(tmp_path, WorldConfig(n_train=6, n_val=1, n_test=1)), split="train")
    lazy = QuadrupletDataset(rows, preprocess=pre, tokenizer=tok)
    eager = QuadrupletDataset(rows, preprocess=pre, tokenizer=tok, preload=True, targets=[5, 4, 3, 2, 1, 0])
    item, item2 = lazy[2], eager[2]
    assert item["image"].shape == (3, 32, 32) and item["text"].shape == (77,)
    assert torch.equal(item["image"], item2["image"]) and torch.equal(
        item["unsafe_text"], item2["unsafe_text"]
    )
    assert torch.equal(item2["target_text"], lazy[3]["text"]) and torch.equal(
        item2["target_image"], lazy[3]["image"]
    )
    with pytest.raises(ValueError, match="one entry per row"):
        QuadrupletDataset(rows, preprocess=pre, tokenizer=tok, targets=[0])


def test_visu_loader_images_and_text_only(tmp_path):
    visu = tmp_path / "visu"
    visu.mkdir()
    rows = [
        {
            "incremental_id": 7,
            "safe": "a man riding a horse",
            "nsfw": "a man whipping a horse",
            "coco_id": 42,
            "tag": "cruelty",
            "prompt_id": 1,
        },
        {
            "incremental_id": 8,
            "safe": "two dogs",
            "nsfw": "two dogs fighting in blood",
            "coco_id": 43,
            "tag": "blood",
            "prompt_id": 2,
        },
    ]
    write_jsonl(visu / "test.jsonl", rows)
    make_images(tmp_path / "coco" / "val2014", ["COCO_val2014_000000000042.jpg", "000000000043.jpg"])
    make_images(tmp_path / "unsafe", ["7.png", "8.jpg"])
    out = load_visu(visu, split="test", coco_root=tmp_path / "coco", unsafe_root=tmp_path / "unsafe")
    assert [q.id for q in out] == ["7", "8"]
    assert out[0].safe_image.endswith("COCO_val2014_000000000042.jpg") and out[1].unsafe_image.endswith(
        "8.jpg"
    )
    assert out[0].category == "cruelty" and out[0].unsafe_text == "a man whipping a horse"
    text_only = load_visu(visu / "test.jsonl")
    assert text_only[1].safe_image is None
    # errors name file, row and field
    (tmp_path / "unsafe" / "8.jpg").unlink()
    with pytest.raises(ManifestError, match=r"test.jsonl, row 2, field 'incremental_id': no unsafe image"):
        load_visu(visu, split="test", coco_root=tmp_path / "coco", unsafe_root=tmp_path / "unsafe")
    assert (
        len(
            load_visu(
                visu,
                split="test",
                coco_root=tmp_path / "coco",
                unsafe_root=tmp_path / "unsafe",
                skip_bad_rows=True,
            )
        )
        == 1
    )
    write_jsonl(visu / "train.jsonl", [{**rows[0], "nsfw": ""}])
    with pytest.raises(ManifestError, match=r"train.jsonl, row 1, field 'nsfw': empty"):
        load_visu(visu, split="train")
    with pytest.raises(FileNotFoundError, match="no ViSU split file for 'validation'"):
        load_visu(visu, split="validation")
    with pytest.raises(ValueError, match="both coco_root and unsafe_root"):
        load_visu(visu, coco_root=tmp_path / "coco")


def test_the_demo_says_loudly_when_unsafe_captions_lose_words(caplog):
    """Issue 28: with sentences of 15-30 words, most unsafe captions were cut at the tiny model's
    24-token context, silently (one log line among many)."""
    import functools

    import open_clip

    from hysafe.data import Quadruplet, QuadrupletDataset
    from hysafe.demo.pipeline import context_note

    tok = functools.partial(open_clip.tokenize, context_length=24)
    short = "a red circle"
    long = (
        "a photo of a quiet street at dusk with parked cars, tall trees, a bakery and, "
        "far behind it all, blood"
    )

    def split(n_long, n=50):
        rows = [Quadruplet(str(i), short, long if i < n_long else short) for i in range(n)]
        return QuadrupletDataset(rows, preprocess=None, tokenizer=tok)

    assert context_note((split(1), split(0), split(1))) is None  # 2% or less: no note
    note = context_note((split(0), split(0), split(10)))
    assert "24-token text context" in note and "10 of 50 in test" in note and "longer context" in note


def test_parametric_worlds_are_reproducible_and_vary_what_they_say(tmp_path):
    """``synthetic:param:SEED`` (issue 28 item 1): one member of a family per seed, bit-identical on
    a second generation, with held-out unsafe wordings on the test split when the spec says so."""
    from hysafe.data.param_worlds import sample_spec, train_wordings

    specs = [sample_spec(s) for s in range(40)]
    assert sample_spec(3) == specs[3]  # a pure function of the seed
    for knob in ("cue", "objects", "phrase_at", "image_format", "image_size", "unseen_wordings"):
        assert len({getattr(s, knob) for s in specs}) > 1, knob  # every knob varies over the family
    seed = next(s for s, spec in enumerate(specs) if spec.unseen_wordings and spec.image_format == "jpeg")
    config = WorldConfig(n_train=30, n_val=4, n_test=30, kind=f"param:{seed}")
    first = generate_world(tmp_path / "a", config, progress=False)
    again = generate_world(tmp_path / "b", config, progress=False)
    rows, rows_again = load_manifest(first), load_manifest(again)
    assert [(r.safe_text, r.unsafe_text) for r in rows] == [(r.safe_text, r.unsafe_text) for r in rows_again]
    assert Path(rows[0].unsafe_image).read_bytes() == Path(rows_again[0].unsafe_image).read_bytes()
    assert rows[0].safe_image.endswith(".jpg") and Image.open(rows[0].safe_image).format == "JPEG"
    assert Image.open(rows[0].safe_image).size == (specs[seed].image_size,) * 2
    assert json.loads((tmp_path / "a" / "spec.json").read_text()) == specs[seed].to_dict()

    def wordings(split):
        return {p for r in rows if r.split == split for p in train_wordings(r.category) if p in r.unsafe_text}

    assert wordings("test") and not wordings("test") & wordings("train")
    other = load_manifest(
        generate_world(tmp_path / "c", replace(config, kind=f"param:{seed + 1}"), progress=False)
    )
    assert [r.safe_text for r in other] != [r.safe_text for r in rows]  # another member draws other scenes
    with pytest.raises(ValueError, match="'param:SEED'"):
        WorldConfig(kind="param:x")
