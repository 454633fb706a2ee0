"""Collections: score, index, search and compare on generated folders, lists and shards."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from hysafe.cli.main import main
from hysafe.collection import (
    CollectionIndex,
    ImageFolder,
    Shards,
    TextFile,
    add_to_index,
    build_index,
    compare_page,
    expand_braces,
    labels_from_manifest,
    score_collection,
)
from hysafe.data import WorldConfig, generate_world, load_image, load_manifest
from hysafe.models.backbone import TINY_MODEL, LoraConfig
from hysafe.models.checkpoint import save_model
from hysafe.models.safety_model import create_model
from hysafe.training import TrainConfig, train


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(
        tmp_path_factory.mktemp("world"), WorldConfig(n_train=48, n_val=16, n_test=24, seed=3), progress=False
    )


@pytest.fixture(scope="module")
def hysac(world, tiny_base, tmp_path_factory):
    torch.manual_seed(0)
    res = train(
        create_model("hysac", TINY_MODEL, tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0)),
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=16, lr=1e-3, progress=False),
    )
    path = save_model(res.model, tmp_path_factory.mktemp("ckpt") / "hysac.safetensors", bounds=res.bounds)
    return res.model, path


@pytest.fixture(scope="module")
def folder(world, tmp_path_factory):
    """The world's test images in nested folders, plus a corrupt, a zero-byte and a non-image file."""
    root = tmp_path_factory.mktemp("collection")
    for i, path in enumerate(sorted((world.parent / "images" / "test").glob("*.png"))):
        sub = root / ("a" if i % 2 else "b") / "deep"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, sub / path.name)
    (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("not an image, and not listed either")
    return root


def test_scores_are_distances_to_the_root_and_bad_files_are_listed(hysac, folder, tmp_path):
    model, _ = hysac
    res = score_collection(model, ImageFolder(folder), tmp_path / "s.parquet", batch_size=7, progress=False)
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert res.rows == len(table) == 48 and res.skipped == 2
    with torch.no_grad():
        imgs = torch.stack([load_image(r["path"], model.preprocess) for r in table])
        ref = model.space.dist_to_root(model.encode_image(imgs)).double()
    assert torch.allclose(torch.tensor([r["score"] for r in table], dtype=torch.float64), ref, atol=1e-6)
    assert all(r["unsafe"] == (r["score"] >= res.threshold) for r in table)
    assert [r["index"] for r in table] == sorted(r["index"] for r in table)
    skipped = (tmp_path / "s.skipped.csv").read_text()
    assert "corrupt.png" in skipped and "empty.jpg" in skipped and "notes.txt" not in skipped
    meta = json.loads(pq.read_metadata(tmp_path / "s.parquet").metadata[b"hysafe"])
    assert meta["rows"] == 48 and meta["skipped"] == 2 and meta["model"] and meta["rule"].startswith("bounds")
    # texts: one per line; a blank line is skipped, not scored
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n\na blue square, covered in blood\n")
    res = score_collection(model, TextFile(prompts), tmp_path / "t.parquet", threshold=0.5, progress=False)
    rows = pq.read_table(tmp_path / "t.parquet").to_pylist()
    with torch.no_grad():
        ref = model.nsfw_score(model.encode_text(model.tokenize([rows[0]["text"], rows[1]["text"]])))
    assert res.skipped == 1 and [r["text"] for r in rows] == [
        "a red circle",
        "a blue square, covered in blood",
    ]
    assert torch.allclose(torch.tensor([r["score"] for r in rows]), ref.double().float(), atol=1e-6)
    assert [r["unsafe"] for r in rows] == [s >= 0.5 for s in ref.tolist()]


def _shards(folder, out, per_shard=10):
    files = sorted(p for p in folder.rglob("*.png") if p.name != "corrupt.png")
    out.mkdir()
    for s in range(0, len(files), per_shard):
        with tarfile.open(out / f"{s // per_shard:03d}.tar", "w") as tar:
            for f in files[s : s + per_shard]:
                key = f.stem
                tar.add(f, arcname=f"{key}.png")
                caption = out / f"{key}.txt"
                caption.write_text(f"caption of {key}")
                tar.add(caption, arcname=f"{key}.txt")
                caption.unlink()
    return files, f"{out}/{{000..{(len(files) - 1) // per_shard:03d}}}.tar"


def test_webdataset_shards_score_like_the_files(hysac, folder, tmp_path):
    model, _ = hysac
    files, pattern = _shards(folder, tmp_path / "shards")
    assert expand_braces("x/{08..10}.tar") == ["x/08.tar", "x/09.tar", "x/10.tar"]
    score_collection(model, Shards(pattern), tmp_path / "sh.parquet", progress=False)
    rows = pq.read_table(tmp_path / "sh.parquet").to_pylist()
    assert len(rows) == len(files) and rows[0]["id"] == f"000.tar/{files[0].stem}"
    with torch.no_grad():
        ref = model.nsfw_score(
            model.encode_image(torch.stack([load_image(str(f), model.preprocess) for f in files]))
        )
    assert torch.allclose(torch.tensor([r["score"] for r in rows]), ref, atol=1e-5)
    score_collection(model, Shards(pattern, "text"), tmp_path / "sht.parquet", progress=False)
    assert pq.read_table(tmp_path / "sht.parquet").column("text")[0].as_py() == f"caption of {files[0].stem}"


CHILD = """
import os, sys, torch
from hysafe.models.checkpoint import load_model
from hysafe.collection import ImageFolder, build_index, score_collection
torch.set_num_threads(1)
kind, ckpt, folder, out = sys.argv[1:5]
model = load_model(ckpt)
def tick():
    print("CHUNK", flush=True)
if kind == "score":
    import hysafe.collection.parts as parts
    write = parts.PartStore.write
    def slow_write(self, *a, **k):
        write(self, *a, **k); tick()
    parts.PartStore.write = slow_write
    score_collection(model, ImageFolder(folder), out, batch_size=5, progress=False)
else:
    build_index(model, ImageFolder(folder), out, batch_size=5, progress=False)
print("DONE", flush=True)
"""


def _run(args, env=None, kill_after=None):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)], stdout=subprocess.PIPE, text=True, env=env
    )
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("CHUNK")
        if kill_after is not None and seen >= kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    return proc.wait()


@pytest.mark.slow
def test_kill_9_mid_score_then_rerun_has_every_row_once(hysac, folder, tmp_path):
    _, ckpt = hysac
    assert _run(["score", ckpt, folder, tmp_path / "full.parquet"]) == 0
    assert _run(["score", ckpt, folder, tmp_path / "k.parquet"], kill_after=4) == -9
    assert (
        not (tmp_path / "k.parquet").exists()
        and len(list((tmp_path / "k.parquet.parts").glob("part-*.parquet"))) >= 4
    )
    assert _run(["score", ckpt, folder, tmp_path / "k.parquet"]) == 0
    full, resumed = pq.read_table(tmp_path / "full.parquet"), pq.read_table(tmp_path / "k.parquet")
    assert (
        resumed.column("index").to_pylist()
        == full.column("index").to_pylist()
        == sorted(set(full.column("index").to_pylist()))
    )
    assert resumed.column("score").to_pylist() == pytest.approx(full.column("score").to_pylist(), abs=1e-6)
    assert not (tmp_path / "k.parquet.parts").exists()


@pytest.mark.slow
def test_two_processes_give_exactly_the_single_process_output(hysac, folder, tmp_path):
    _, ckpt = hysac
    assert _run(["score", ckpt, folder, tmp_path / "one.parquet"]) == 0
    assert _run(["index", ckpt, folder, tmp_path / "one-index"]) == 0
    for kind, out in (("score", tmp_path / "two.parquet"), ("index", tmp_path / "two-index")):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, kind, str(ckpt), str(folder), str(out)],
                stdout=subprocess.DEVNULL,
                env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"},
            )
            for r in range(2)
        ]
        assert [p.wait() for p in procs] == [0, 0]
    one, two = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "two.parquet")
    assert one.drop(["score"]).equals(two.drop(["score"])) and one.column(
        "score"
    ).to_pylist() == pytest.approx(two.column("score").to_pylist(), abs=1e-6)
    a, b = CollectionIndex.open(tmp_path / "one-index"), CollectionIndex.open(tmp_path / "two-index")
    assert a.items.column("id").to_pylist() == b.items.column("id").to_pylist()
    q = torch.randn(4, a.index.dim) * 0.05
    assert torch.equal(a.index.search(q, 5)[1], b.index.search(q, 5)[1])


def test_index_in_two_adds_equals_one_build_and_refuses_another_model(hysac, folder, tmp_path, tiny_base):
    model, _ = hysac
    whole = build_index(model, ImageFolder(folder), tmp_path / "whole", progress=False)
    parts = [tmp_path / "p1", tmp_path / "p2"]
    for i, p in enumerate(parts):
        p.mkdir()
        for f in sorted(folder.rglob("*.png"))[i::2]:
            shutil.copy(f, p / f"{f.parent.parent.name}-{f.name}")
    build_index(model, ImageFolder(parts[0]), tmp_path / "two", progress=False)
    two = add_to_index(model, ImageFolder(parts[1]), tmp_path / "two", progress=False)
    assert len(two.index) == len(whole.index) == 48 and two.items.column("row").to_pylist() == list(range(48))
    with torch.no_grad():
        q = model.encode_text(model.tokenize(["a red circle, covered in blood", "a green square"]))
    hits_whole, hits_two = (
        whole.search(model, q, 5, modality="text"),
        two.search(model, q, 5, modality="text"),
    )
    name = lambda h: h["path"].rsplit("/", 1)[-1].split("-", 1)[-1]  # noqa: E731
    assert [[name(h) for h in hs] for hs in hits_whole] == [[name(h) for h in hs] for hs in hits_two]
    assert [h["distance"] for hs in hits_whole for h in hs] == pytest.approx(
        [h["distance"] for hs in hits_two for h in hs], abs=1e-5
    )
    other = create_model("hysac", TINY_MODEL, tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0))
    with pytest.raises(ValueError, match="was built with another model"):
        CollectionIndex.open(tmp_path / "two").search(other, q, 3, modality="text")
    with pytest.raises(ValueError, match="already holds an index"):
        build_index(model, ImageFolder(parts[0]), tmp_path / "two", progress=False)


def test_cli_score_index_search_and_compare(hysac, world, folder, tmp_path, capsys):
    _, ckpt = hysac
    assert (
        main(
            [
                "score",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(folder),
                "--out",
                str(tmp_path / "s.parquet"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "score",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(folder),
                "--out",
                str(tmp_path / "s.parquet"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "index",
                "build",
                "--index",
                str(tmp_path / "idx"),
                "--checkpoint",
                str(ckpt),
                "--images",
                str(folder),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "index",
                "search",
                "--index",
                str(tmp_path / "idx"),
                "--query",
                "a red circle",
                "-k",
                "2",
                "--tau",
                "avg",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result[0]["query"] == "a red circle" and len(result[0]["hits"]) == 2
    for argv, message in [
        (
            ["score", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.parquet")],
            "exactly one of --images",
        ),
        (
            [
                "score",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "x.parquet"),
            ],
            "image list not found",
        ),
        (
            [
                "score",
                "--checkpoint",
                str(ckpt),
                "--images",
                str(folder),
                "--out",
                str(tmp_path / "s.parquet"),
                "--threshold",
                "0.3",
            ],
            "written by another run",
        ),
        (["index", "search", "--index", str(tmp_path / "missing")], "not a hysafe index folder"),
    ]:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit) as stop:  # sizes are checked at parse time (exit 2)
        main(["index", "search", "--index", str(tmp_path / "idx"), "--query", "x", "-k", "0"])
    assert stop.value.code == 2 and "-k/--k: must be >= 1, got 0" in capsys.readouterr().err


def test_compare_page_renders_every_thumbnail_in_a_real_browser(hysac, world, folder, tmp_path, tiny_base):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    model, _ = hysac
    clip = create_model("clip", TINY_MODEL, tiny_base)
    images = ImageFolder(world.parent / "images" / "test")
    indexes = {
        "CLIP": (clip, build_index(clip, images, tmp_path / "clip", progress=False)),
        "HySAC": (model, build_index(model, images, tmp_path / "hysac", progress=False)),
    }
    queries = [r.unsafe_text for r in load_manifest(world, split="test")[:3]]
    page = compare_page(indexes, queries, tmp_path / "page", k=4, labels=labels_from_manifest(world))
    html = page.read_text()
    assert (
        html.count('class="hit"') == 3 * 3 * 4
        and "HySAC + traversal" in html
        and 'class="badge unsafe"' in html
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-images="36"' in dom and 'data-broken="0"' in dom  # every thumbnail decoded by the browser
    wide = subprocess.run(
        [chromium, *flags, "--window-size=1400,900", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    width = int(wide.split('data-width="', 1)[1].split('"', 1)[0])
    assert width <= 1400, width  # every model's column inside a 1,400 px window
    with torch.no_grad():
        query = clip.encode_text(clip.tokenize(queries[:1]))
    names = [Path(h["id"]).name for h in indexes["CLIP"][1].search(clip, query, 4, modality="text")[0]]
    assert all(f">{n}</span>" in html for n in names)  # captions show file names
    shot = tmp_path / "page.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1400,900", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 20_000 and np.asarray(Image.open(shot)).std() > 10


def test_chunk_counts_give_the_progress_bar_its_total(folder, tmp_path):
    assert ImageFolder(folder).num_chunks(7) == -(-50 // 7)  # 48 images + the corrupt and the empty file
    _, pattern = _shards(folder, tmp_path / "shards", per_shard=20)
    assert Shards(pattern).num_chunks(7) == 3


def test_compressed_collection_index_keeps_its_vectors_in_the_folder(hysac, folder, tmp_path, capsys):
    model, _ = hysac
    copies = tmp_path / "copies"  # 288 images: a product quantizer trains on >= 256
    copies.mkdir()
    for i in range(6):
        for f in sorted(folder.rglob("*.png")):
            shutil.copy(f, copies / f"{i}-{f.parent.parent.name}-{f.name}")
    flat = build_index(model, ImageFolder(copies), tmp_path / "flat", kind="flat", progress=False)
    built = build_index(model, ImageFolder(copies), tmp_path / "pq", kind="ivfpq", progress=False)
    assert sorted(str(p.relative_to(tmp_path / "pq")) for p in (tmp_path / "pq").rglob("index.faiss*")) == [
        "g1/index.faiss",
        "g1/index.faiss.json",
        "g1/index.faiss.refine.npz",
        "index.faiss.vectors",  # shared by the generations
    ]
    assert (tmp_path / "pq" / "index.faiss.vectors").stat().st_size == 288 * model.embed_dim * 4
    reopened = CollectionIndex.open(tmp_path / "pq")
    assert reopened.index.kind == "ivfpq" and len(reopened.index) == 288
    with torch.no_grad():
        q = model.encode_text(model.tokenize(["a red circle, covered in blood", "a green square"]))
    want = [h["distance"] for hs in flat.search(model, q, 8, modality="text") for h in hs]
    for index in (built, reopened):
        assert [
            h["distance"] for hs in index.search(model, q, 8, modality="text") for h in hs
        ] == pytest.approx(want, abs=1e-5)
    # the CLI's search settings: every list probed, one candidate per result (then the index's own again)
    search = ["index", "search", "--checkpoint", str(hysac[1]), "--query", "a green square", "-k", "8"]
    capsys.readouterr()
    assert main([*search, "--json", "--index", str(tmp_path / "pq"), "--nprobe", "64", "--rerank", "1"]) == 0
    (hits,) = json.loads(capsys.readouterr().out)
    assert len(hits["hits"]) == 8 and CollectionIndex.open(tmp_path / "pq").index.rerank == 50
    for index, option, message in (
        ("flat", "--nprobe", "is a flat index"),
        ("flat", "--rerank", "only ivfpq"),
    ):
        assert main([*search, "--index", str(tmp_path / index), option, "2"]) == 1
        assert message in capsys.readouterr().err


def test_bf16_scoring_runs_the_towers_under_autocast_and_a_resume_cannot_mix_precisions(
    hysac, folder, tmp_path
):
    model, _ = hysac
    fp32 = score_collection(
        model, ImageFolder(folder), tmp_path / "fp32.parquet", batch_size=16, progress=False
    )
    bf16 = score_collection(
        model, ImageFolder(folder), tmp_path / "bf16.parquet", batch_size=16, progress=False, precision="bf16"
    )
    a = np.array(pq.read_table(fp32.path)["score"].to_pylist())
    b = np.array(pq.read_table(bf16.path)["score"].to_pylist())
    assert bf16.rows == fp32.rows == 48
    assert 0 < np.abs(a - b).max() < 0.02 * np.abs(a).max()  # autocast is on (not bit-equal), bf16-close
    meta = json.loads(pq.read_metadata(bf16.path).metadata[b"hysafe"])
    assert meta["precision"] == "bf16" and "precision" not in json.loads(
        pq.read_metadata(fp32.path).metadata[b"hysafe"]
    )
    with pytest.raises(ValueError, match="written by another run"):
        score_collection(
            model,
            ImageFolder(folder),
            tmp_path / "fp32.parquet",
            batch_size=16,
            progress=False,
            precision="bf16",
        )


def test_a_comparison_page_of_too_many_queries_is_refused_before_any_work(tmp_path):
    """K11: 100k queries wrote nothing for 300 s (one query at a time); a page holds at most
    MAX_COMPARE_QUERIES rows, and its queries are encoded in batches."""
    from hysafe.collection.page import MAX_COMPARE_QUERIES

    with pytest.raises(ValueError, match=f"at most {MAX_COMPARE_QUERIES} rows"):
        compare_page({}, ["a red circle"] * 100_000, tmp_path / "page")
    assert not (tmp_path / "page").exists()


def test_a_shard_sample_in_any_image_format_is_scored_and_one_without_an_image_is_listed(
    hysac, folder, tmp_path
):
    """S21: a .gif sample was neither scored nor listed as skipped."""
    import csv
    import io

    from PIL import Image

    model, _ = hysac
    shard = tmp_path / "000.tar"
    png = next(p for p in sorted(folder.rglob("*.png")) if p.name != "corrupt.png")
    gif = io.BytesIO()
    Image.open(png).convert("RGB").save(gif, format="GIF")
    with tarfile.open(shard, "w") as tar:
        for name, data in (("a.png", png.read_bytes()), ("b.gif", gif.getvalue()), ("c.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    res = score_collection(model, Shards(str(shard)), tmp_path / "s.parquet", progress=False)
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [r["id"] for r in rows] == ["000.tar/a", "000.tar/b"] and res.skipped == 1
    with open(tmp_path / "s.skipped.csv") as f:
        skipped = list(csv.DictReader(f))
    assert (
        skipped[0]["id"] == "000.tar/c"
        and "no image member in the sample (found: json)" in skipped[0]["error"]
    )


class _Killed(BaseException):
    """A simulated kill -9: nothing catches it, no cleanup of the library runs."""


def _kill_at(monkeypatch, when: int | None) -> list[str]:
    """Count every write point (each ``os.replace`` and file removal); raise :class:`_Killed` at
    number ``when``. Returns the log of write points seen."""
    seen, replace, unlink = [], os.replace, Path.unlink

    def point(what):
        seen.append(what)
        if when is not None and len(seen) == when + 1:
            raise _Killed(what)

    def patched_replace(src, dst, *a, **k):
        point(f"replace {Path(dst).name}")
        return replace(src, dst, *a, **k)

    def patched_unlink(self, *a, **k):
        point(f"unlink {self.name}")
        return unlink(self, *a, **k)

    monkeypatch.setattr(os, "replace", patched_replace)
    monkeypatch.setattr(Path, "unlink", patched_unlink)
    return seen


def test_index_build_and_add_survive_a_kill_at_every_write_point(hysac, world, tmp_path, monkeypatch):
    """Issue 30 B05/B06/I33: a kill at any write point of ``index build`` then ``index add``, then the
    same two commands again (and the add a third time): the index opens and holds every item exactly
    once."""
    model, _ = hysac
    images = sorted((world.parent / "images" / "test").glob("*.png"))
    first, more = tmp_path / "first", tmp_path / "more"
    for target, chosen in ((first, images[:6]), (more, images[6:12])):
        target.mkdir()
        for p in chosen:
            shutil.copy(p, target / p.name)
    expected = sorted(str(p) for p in [*first.iterdir(), *more.iterdir()])

    def build(out):
        build_index(model, ImageFolder(first), out, progress=False, batch_size=4)

    def add(out):
        add_to_index(model, ImageFolder(more), out, progress=False, batch_size=4)

    def run_both(out):
        build(out)
        add(out)

    points = _kill_at(monkeypatch, None)
    run_both(tmp_path / "count")
    monkeypatch.undo()
    assert len(points) >= 10, points
    for k in range(len(points)):
        out = tmp_path / f"kill-{k}"
        _kill_at(monkeypatch, k)
        killed_in_build = True
        with pytest.raises(_Killed):
            build(out)
            killed_in_build = False
            add(out)
        monkeypatch.undo()
        if killed_in_build:  # the user re-runs the command that was killed, then the next one
            build(out)
        add(out)
        add(out)  # a finished add again (I33)
        index = CollectionIndex.open(out)
        paths = index.items.column("path").to_pylist()
        assert sorted(paths) == expected, (k, points[k])
        assert len(index.index) == len(expected) and index.items.column("row").to_pylist() == list(range(12))
        leftovers = sorted(p.name for p in out.iterdir() if p.name not in ("index.json", ".lock"))
        assert leftovers == [f"g{index.generation}"], (k, points[k], leftovers)


def test_one_writer_per_index_and_the_advice_keeps_the_running_one(hysac, world, tmp_path):
    """Issue 30 R12: a second writer is refused while the first holds the index, with advice that
    does not break the running one; the lock is released when the holder ends."""
    from hysafe.utils.folder_lock import locked_folder

    model, _ = hysac
    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted((world.parent / "images" / "test").glob("*.png"))[:4]:
        shutil.copy(p, images / p.name)
    out = tmp_path / "idx"
    build_index(model, ImageFolder(images), out, progress=False)
    with locked_folder(out, holder="a test", advice="-"):
        with pytest.raises(
            ValueError, match=r"in use by another 'hysafe index add' \(pid \d+\); wait for it"
        ):
            add_to_index(model, ImageFolder(images), out, progress=False)
    assert (
        len(add_to_index(model, ImageFolder(images), out, progress=False).items) == 4
    )  # same files: none added


def test_resuming_an_add_with_another_batch_size_is_refused_not_lossy(hysac, world, tmp_path, monkeypatch):
    """A killed add re-run with another --batch-size dropped items (chunk numbers mean other items)."""
    model, _ = hysac
    images = sorted((world.parent / "images" / "test").glob("*.png"))
    first, more = tmp_path / "first", tmp_path / "more"
    for target, chosen in ((first, images[:4]), (more, images[4:16])):
        target.mkdir()
        for p in chosen:
            shutil.copy(p, target / p.name)
    out = tmp_path / "idx"
    build_index(model, ImageFolder(first), out, progress=False)
    points = _kill_at(monkeypatch, 3)  # after two of the add's three chunks are written
    with pytest.raises(_Killed):
        add_to_index(model, ImageFolder(more), out, progress=False, batch_size=4)
    monkeypatch.undo()
    assert points[-1].startswith("replace part-")
    with pytest.raises(ValueError, match=r"unfinished run with other settings \(batch_size\)"):
        add_to_index(model, ImageFolder(more), out, progress=False, batch_size=5)
    assert len(add_to_index(model, ImageFolder(more), out, progress=False, batch_size=4).items) == 16


def test_scoring_many_chunks_leaves_the_adapter_model_bit_identical(
    folder, tiny_base, randomize_lora, tmp_path
):
    """Issue 29: peft's attention LoRA merges and unmerges into the base in every forward, so
    embedding chunk after chunk through the adapter model moved its weights by float rounding; the
    collection embeds through the merged copy instead, and the scores equal the adapter model's."""
    torch.manual_seed(5)
    model = create_model("hysac", TINY_MODEL, tiny_base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.0))
    randomize_lora(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score_collection(model, ImageFolder(folder), tmp_path / "s.parquet", batch_size=4, progress=False)
    after = model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert not moved, f"{len(moved)} tensors moved, e.g. {moved[:3]}"
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    with torch.no_grad():
        imgs = torch.stack([load_image(r["path"], model.preprocess) for r in table])
        ref = model.space.dist_to_root(model.eval().encode_image(imgs)).double()
    assert torch.allclose(torch.tensor([r["score"] for r in table], dtype=torch.float64), ref, atol=1e-5)
