"""Hostile but realistic use: every case gets a clear one-line error naming the file/field, never a
traceback, a silent wrong answer or a lost checkpoint (docs/reliability.md)."""

import json
import os
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hysafe.cli.main import main
from hysafe.data import ManifestError, WorldConfig, generate_world, load_manifest
from hysafe.data.dataset import load_image, tokenize_captions
from hysafe.geometry import LorentzSpace
from hysafe.index.retrieval import RetrievalIndex
from hysafe.models.backbone import TINY_MODEL, LoraConfig
from hysafe.models.checkpoint import load_model, read_metadata, save_model
from hysafe.models.safety_model import create_model
from hysafe.training import TrainConfig, train
from hysafe.training.recipes import get_recipe
from hysafe.training.run_folder import locked_run_folder

LORA = LoraConfig(r=4, alpha=8.0, dropout=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(
        tmp_path_factory.mktemp("world"), WorldConfig(n_train=48, n_val=16, n_test=16, seed=2), progress=False
    )


@pytest.fixture(scope="module")
def trained(world, tiny_base, tmp_path_factory):
    """A small HySAC run: its run folder and best checkpoint."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    res = train(
        create_model("hysac", TINY_MODEL, tiny_base, lora=LORA),
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=16, lr=1e-3, progress=False, output_dir=str(out)),
    )
    return out, res


def fresh(tiny_base):
    torch.manual_seed(0)
    return create_model("hysac", TINY_MODEL, tiny_base, lora=LORA)


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def edited_copy(src, dst, edit):
    meta = read_metadata(src)
    edit(meta)
    save_file(load_file(str(src)), str(dst), metadata={"hysafe": json.dumps(meta)})
    return dst


# ----------------------------------------------------------------------------- data loss


def scripted_validation(monkeypatch, scores):
    """Validation recall sums in a fixed order: selection is then decided, not left to chance."""
    it = iter(scores)
    monkeypatch.setattr(
        "hysafe.training.loop.validation_recalls", lambda *a, **k: {"score": (v := next(it)), "recall_sum": v}
    )


class Kill(Exception):
    pass


def test_resumed_run_whose_later_epochs_do_not_improve_keeps_the_best(
    world, tiny_base, tmp_path, monkeypatch
):
    cfg = dict(epochs=3, batch_size=16, lr=3e-3, checkpoint_every=2, progress=False, log_every=1)
    epoch1 = {}

    def remember_epoch1(record):
        if record["step"] == 3:  # 48 rows / 16 = 3 steps per epoch
            epoch1.update({n: p.detach().clone() for n, p in model_a.named_parameters() if p.requires_grad})

    scripted_validation(monkeypatch, [10.0, 5.0, 5.0])
    model_a = fresh(tiny_base)
    train(
        model_a,
        world,
        "hysac",
        TrainConfig(**cfg, output_dir=str(tmp_path / "a")),
        callbacks=[remember_epoch1],
    )

    def kill_in_epoch_3(record):
        if record["step"] == 8:
            raise Kill

    scripted_validation(monkeypatch, [10.0, 5.0])
    with pytest.raises(Kill):
        train(
            fresh(tiny_base),
            world,
            "hysac",
            TrainConfig(**cfg, output_dir=str(tmp_path / "b")),
            callbacks=[kill_in_epoch_3],
        )
    scripted_validation(monkeypatch, [5.0])
    train(fresh(tiny_base), world, "hysac", TrainConfig(**cfg, output_dir=str(tmp_path / "b")))
    a, b = (
        load_file(str(tmp_path / "a" / "best.safetensors")),
        load_file(str(tmp_path / "b" / "best.safetensors")),
    )
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
        # the best epoch's weights, not the last
        assert torch.allclose(b[name], epoch1[name], atol=1e-6), name
    assert read_metadata(tmp_path / "b" / "best.safetensors")["extra"]["best_validation_score"] == 10.0
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()
        if '"validation"' not in line
    ]
    assert steps == list(range(1, 10))  # the steps re-run after the kill are logged once


def test_rerunning_a_finished_run_leaves_best_byte_identical(trained, world, tiny_base):
    """... and says that its epochs were reused (the demo's timings note it, not a cost)."""
    from hysafe.demo.timings import StageTimes, record_stage

    out, first = trained
    before = (out / "best.safetensors").read_bytes()
    log_before = (out / "log.jsonl").read_text()
    again = train(
        fresh(tiny_base),
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=16, lr=1e-3, progress=False, output_dir=str(out)),
    )
    assert (out / "best.safetensors").read_bytes() == before
    assert (out / "log.jsonl").read_text() == log_before
    assert first.reused_epochs == 0 and again.reused_epochs == 1
    timings = StageTimes()
    record_stage(timings, "first", first.seconds, first)
    record_stage(timings, "again", again.seconds, again)
    assert timings.notes == {
        "again": "reused: its 1 epoch ran in an earlier run of this command; the time is loading them"
    }


def test_two_trainings_cannot_share_a_run_folder(world, tiny_base, tmp_path):
    with locked_run_folder(tmp_path / "run"):
        with pytest.raises(ValueError, match=r"in use by another training \(pid \d+\)"):
            train(
                fresh(tiny_base),
                world,
                "hysac",
                TrainConfig(epochs=1, batch_size=16, progress=False, output_dir=str(tmp_path / "run")),
            )
    with locked_run_folder(tmp_path / "run"):  # released when the holder ends
        pass


# ---------------------------------------------------------------------------- silent wrong


def test_nan_tau_and_threshold_and_empty_texts_are_refused(trained, world, capsys):
    _, res = trained
    ckpt = str(res.best_checkpoint)
    for argv, message in [
        (["traverse", "--checkpoint", ckpt, "--data", str(world), "--query", ""], "empty or blank"),
        (
            ["classify", "--checkpoint", ckpt, "--text", "a cat", "--threshold", "nan"],
            "--threshold must be a finite number",
        ),
        (["classify", "--checkpoint", ckpt, "--text", ""], "empty or blank"),
        (["classify", "--checkpoint", ckpt, "--text", "   "], "empty or blank"),
    ]:
        code, err = run_cli(argv, capsys)
        assert code == 1 and message in err and err.count("\n") == 1, (argv, err)
    with pytest.raises(SystemExit) as stop:  # sizes are checked at parse time (exit 2)
        main(["traverse", "--checkpoint", ckpt, "--data", str(world), "--query", "a red circle", "-k", "0"])
    assert stop.value.code == 2 and "-k/--k: must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # and so is tau
        main(
            [
                "traverse",
                "--checkpoint",
                ckpt,
                "--data",
                str(world),
                "--query",
                "a red circle",
                "--tau",
                "nan",
            ]
        )
    assert stop.value.code == 2 and "--tau: must be a finite number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["bounds"]["V"].update(avg=float("nan")), "bound V.avg = nan"),
        (lambda m: m["scalars"].update(log_curv=50.0), "scalar log_curv = 50.0 is outside"),
        (lambda m: m["scalars"].update(log_alpha_text=float("inf")), "scalar log_alpha_text"),
        (lambda m: m["bounds"].update(X={"avg": 1.0}), "bounds entry 'X'"),
    ],
)
def test_edited_scalars_and_bounds_are_range_checked(trained, tmp_path, edit, message):
    _, res = trained
    bad = edited_copy(res.best_checkpoint, tmp_path / "edited.safetensors", edit)
    with pytest.raises(ValueError, match=message) as e:
        load_model(bad)
    assert str(bad) in str(e.value)


def test_truncated_captions_are_counted_once(tiny_base, caplog):
    model = create_model("clip", TINY_MODEL, tiny_base)
    with caplog.at_level("WARNING", logger="hysafe"):
        tokenize_captions(model.tokenizer, ["word " * 100_000, "a cat", "dog " * 90], what="captions")
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == ["captions: 2 of 3 reach the model's context length of 77 tokens and were truncated"]


# ------------------------------------------------------------------------------ tracebacks


def test_checkpoint_of_another_width_is_a_clear_error(tiny_base, tmp_path, capsys):
    import open_clip

    from hysafe.models.registry import _CONFIG_DIR

    cfg = json.loads((_CONFIG_DIR / "hysafe-tiny.json").read_text())
    cfg["text_cfg"]["width"] = 96
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "hysafe-tiny-wide.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfgs")
    with pytest.raises(ValueError, match="does not load into open_clip 'hysafe-tiny-wide'"):
        create_model("hysac", "hysafe-tiny-wide", tiny_base)
    code, err = run_cli(
        [
            "train",
            "--data",
            "m.jsonl",
            "--model",
            "hysafe-tiny-wide",
            "--pretrained",
            tiny_base,
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 1 and "a checkpoint of another model or width?" in err


class _Payload:
    def __reduce__(self):
        return (os.mkdir, ("PWNED",))


def test_a_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="never unpickles code"):
        create_model("clip", TINY_MODEL, str(tmp_path / "evil.pt"))
    assert not (tmp_path / "PWNED").exists()


def test_loading_a_runs_resume_state_as_a_model_says_which_file_to_load(trained):
    from hysafe.models.checkpoint import load_model

    out, _ = trained
    said = r"last.safetensors: a training run's resume state.*best.safetensors"
    with pytest.raises(ValueError, match=said):
        load_model(out / "last.safetensors")


def test_truncated_training_state_names_the_file_and_the_way_out(trained, world, tiny_base, tmp_path):
    out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    data = (run / "last.safetensors").read_bytes()
    (run / "last.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"last.safetensors: unreadable training state .*--no-resume"):
        train(
            fresh(tiny_base),
            world,
            "hysac",
            TrainConfig(epochs=1, batch_size=16, progress=False, output_dir=str(run)),
        )
    res = train(
        fresh(tiny_base),
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=16, progress=False, output_dir=str(run), resume=False),
    )
    assert res.steps == 3


def test_search_k_and_empty_queries():
    index = RetrievalIndex(LorentzSpace(1.0), 4)
    index.add(torch.randn(10, 4))
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(torch.zeros(1, 4), k)
    dist, ids = index.search(torch.zeros(0, 4), 3)
    assert dist.shape == (0, 3) and ids.shape == (0, 3)


def _image_rows(tmp_path, broken_name: str, broken_bytes: bytes | None = None, size=(8, 8)):
    img = tmp_path / "img"
    img.mkdir(exist_ok=True)
    for n in ("a.png", "a_u.png", "b.png"):
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(img / n)
    if broken_bytes is not None:
        (img / broken_name).write_bytes(broken_bytes)
    rows = [
        {
            "id": "a",
            "safe_text": "a cat",
            "unsafe_text": "a cat in blood",
            "safe_image": "img/a.png",
            "unsafe_image": "img/a_u.png",
        },
        {
            "id": "b",
            "safe_text": "a dog",
            "unsafe_text": "a dog in blood",
            "safe_image": "img/b.png",
            "unsafe_image": f"img/{broken_name}",
        },
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_decompression_bomb_is_a_named_error_and_skippable(tmp_path, monkeypatch):
    manifest = _image_rows(tmp_path, "b_u.png")
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "img" / "b_u.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is then over twice the limit
    with pytest.raises(
        ValueError, match=r"m.jsonl, row b, field 'unsafe_image': unreadable image .*decompression bomb"
    ):
        load_image(
            str(tmp_path / "img" / "b_u.png"),
            lambda im: im,
            row_id="b",
            field="unsafe_image",
            manifest=str(manifest),
        )
    rows = load_manifest(manifest, verify_images=True, skip_bad_rows=True)
    assert [r.id for r in rows] == ["a"]


def test_corrupt_image_with_workers_is_one_line(tmp_path, tiny_base, capsys):
    manifest = _image_rows(tmp_path, "b_u.png", b"\x89PNG not really")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = rows * 4
    for i, r in enumerate(rows):
        r["id"] = f"r{i}"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = run_cli(
        [
            "train",
            "--data",
            str(manifest),
            "--model",
            TINY_MODEL,
            "--pretrained",
            tiny_base,
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "2",
            "--batch-size",
            "2",
            "--epochs",
            "1",
            "--no-validate",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 1 and err.count("\n") == 1 and "m.jsonl, row r" in err and "unreadable image" in err, err


def test_out_under_a_regular_file(world, tiny_base, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run_cli(
        [
            "train",
            "--data",
            str(world),
            "--model",
            TINY_MODEL,
            "--pretrained",
            tiny_base,
            "--out",
            str(tmp_path / "file" / "run"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 1 and "is a file, not a folder" in err


# ------------------------------------------------------------------------ vague or misleading


def test_manifest_encodings_types_and_skipping(tmp_path):
    good = '{"safe_text": "a cat", "unsafe_text": "a cat in blood"}\n'
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        good.encode() + b'{"safe_text": "caf\xe9", "unsafe_text": "x"}\n' + b"{not json\n" + good.encode()
    )
    with pytest.raises(ManifestError, match=r"m.jsonl, row 2: not UTF-8 text \(byte 0xe9"):
        load_manifest(path)
    assert len(load_manifest(path, skip_bad_rows=True)) == 2  # bad encoding and bad JSON skipped, not fatal
    csv_path = tmp_path / "m.csv"
    csv_path.write_bytes("\ufeffid,safe_text,unsafe_text\nq1,a cat,a cat in blood\n".encode("utf-8"))
    assert load_manifest(csv_path)[0].id == "q1"  # a BOM is not part of the first column's name
    import pandas as pd

    pd.DataFrame({"safe_text": [7], "unsafe_text": ["x"]}).to_parquet(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match=r"row 1, field 'safe_text': a caption must be text, got int"):
        load_manifest(tmp_path / "m.parquet")


def test_resume_with_other_settings_names_the_difference(trained, world, tiny_base, tmp_path):
    out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    same = TrainConfig(epochs=1, batch_size=16, lr=1e-3, progress=False, output_dir=str(run))
    torch.manual_seed(0)
    other = create_model("hysac", TINY_MODEL, tiny_base, lora=LoraConfig(r=2, alpha=8.0, dropout=0.0))
    with pytest.raises(
        ValueError, match=r"holds a run with a different configuration \(model.lora.r: 4 there, 2 now"
    ):
        train(
            other, world, "hysac", TrainConfig(epochs=2, batch_size=16, progress=False, output_dir=str(run))
        )
    with pytest.raises(
        ValueError,
        match=r"different configuration \(cones: \[1.0, 'absolute', 0.1, 0.2\] there, "
        r"\[1.0, 'absolute', 0.3, 0.2\] now",
    ):
        train(
            fresh(tiny_base),
            world,
            get_recipe("hysac", min_radius=0.3),
            TrainConfig(epochs=2, batch_size=16, progress=False, output_dir=str(run)),
        )
    # another objective: the terms only one of the runs has, by name
    with pytest.raises(
        ValueError, match=r"objective terms \(only now: root_order\('T', 'V'\) x1.0, "
    ) as refused:
        train(
            fresh(tiny_base),
            world,
            get_recipe("hysac", order_weight=1.0),
            TrainConfig(epochs=1, batch_size=16, progress=False, output_dir=str(run)),
        )
    assert "order_margin" not in str(refused.value)  # the terms' margin, not a setting the user changed
    # more epochs would resume a cosine schedule that has ended: refused, like any other difference
    with pytest.raises(
        ValueError,
        match=r"different configuration \(epochs \(--epochs\): 1 there, 2 now; lr \(--lr\): 0.001 ",
    ):
        train(
            fresh(tiny_base),
            world,
            "hysac",
            TrainConfig(epochs=2, batch_size=16, progress=False, output_dir=str(run)),
        )
    # a finished run re-run with another seed or optimiser would return the old result as the new one's
    with pytest.raises(
        ValueError,
        match=r"different configuration \(seed \(--seed\): 0 there, 5 now; "
        r"weight_decay \(--weight-decay\): 0.2 there, 0.1 now\)",
    ):
        train(fresh(tiny_base), world, "hysac", replace(same, seed=5, weight_decay=0.1))
    with pytest.raises(
        ValueError, match=r"different configuration \(.*recipe: 'hysac' there, 'safeclip' now"
    ):
        torch.manual_seed(0)
        train(
            create_model("safeclip", TINY_MODEL, tiny_base, lora=LORA),
            world,
            "safeclip",
            TrainConfig(epochs=2, batch_size=16, progress=False, output_dir=str(run)),
        )


def test_a_run_file_from_before_the_settings_were_recorded_still_resumes(trained, world, tiny_base, tmp_path):
    """A run file whose fingerprint has no ``settings`` section (written by an older hysafe) is compared
    without it: the finished run is reused, not refused."""
    out, res = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    last = run / "last.safetensors"
    with safe_open(str(last), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state = json.loads(meta["hysafe_train_state"])
    assert state["fingerprint"]["settings"]["seed"] == 0
    del state["fingerprint"]["settings"]
    save_file(tensors, str(last), {**meta, "hysafe_train_state": json.dumps(state)})
    again = train(
        fresh(tiny_base),
        world,
        "hysac",
        TrainConfig(epochs=1, batch_size=16, lr=1e-3, progress=False, output_dir=str(run)),
    )
    assert again.reused_epochs == 1 and again.best_score == res.best_score


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu(tiny_base, capsys):
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        create_model("clip", TINY_MODEL, tiny_base, device="cuda")
    code, err = run_cli(
        [
            "embed",
            "--data",
            "m.jsonl",
            "--pretrained",
            tiny_base,
            "--out",
            "f.safetensors",
            "--device",
            "cuda",
        ],
        capsys,
    )
    assert code == 1 and "no usable CUDA GPU" in err and "Offline" not in err


def test_saved_index_files_that_do_not_belong(tmp_path):
    index = RetrievalIndex(LorentzSpace(1.0), 4)
    index.add(torch.randn(20, 4))
    path = index.save(tmp_path / "idx.faiss")
    data = path.read_bytes()
    (tmp_path / "cut.faiss").write_bytes(data[: len(data) // 3])
    shutil.copy(f"{path}.json", tmp_path / "cut.faiss.json")
    with pytest.raises(ValueError, match=r"cut.faiss: not a readable faiss index"):
        RetrievalIndex.load(tmp_path / "cut.faiss")
    Path = type(path)
    Path(f"{path}.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"idx.faiss.json: not a hysafe index description"):
        RetrievalIndex.load(path)
    Path(f"{path}.json").write_text(
        json.dumps(
            {"space": {"name": "lorentz", "curv": 1.0}, "dim": 7, "kind": "flat", "nlist": 1, "nprobe": 1}
        )
    )
    with pytest.raises(ValueError, match="do not belong together"):
        RetrievalIndex.load(path)


# --------------------------------------------------------------------------------- other


def test_adapter_checkpoint_loads_from_another_folder_and_after_a_move(
    trained, tiny_base, tmp_path, monkeypatch
):
    _, res = trained
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(tiny_base, work / "base.safetensors")
    monkeypatch.chdir(work)
    model = create_model("hysac", TINY_MODEL, "base.safetensors", lora=LORA)  # a relative path
    save_model(model, work / "ckpt.safetensors")
    monkeypatch.chdir(tmp_path)
    assert load_model(work / "ckpt.safetensors").config.backbone.pretrained == str(work / "base.safetensors")
    moved = tmp_path / "moved"
    shutil.move(work, moved)
    assert load_model(moved / "ckpt.safetensors").config.backbone.pretrained == str(
        moved / "base.safetensors"
    )


def test_checkpoints_respect_the_umask(trained, tmp_path):
    """Both writers: hysafe checkpoints and the plain open_clip weights (safetensors' own writer
    creates files 0600; the demo's clip-pretrained.safetensors was)."""
    from hysafe.training.pretrain import export_open_clip

    _, res = trained
    old = os.umask(0o022)
    try:
        paths = [save_model(res.model, tmp_path / "m.safetensors")]
        paths.append(export_open_clip(res.model, tmp_path / "base.safetensors"))
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [0o644, 0o644]


def test_quiet_logs_without_a_terminal(world, tiny_base, tmp_path, capsys, caplog):
    with caplog.at_level("WARNING"):
        create_model("clip", TINY_MODEL, None)
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]

    def progress_lines():
        lines = [r.getMessage() for r in caplog.records if r.name == "hysafe.progress"]
        caplog.clear()
        return lines

    caplog.clear()
    code, err = run_cli(
        [
            "train",
            "--data",
            str(world),
            "--model",
            TINY_MODEL,
            "--pretrained",
            tiny_base,
            "--out",
            str(tmp_path / "o"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
        ],
        capsys,
    )
    # stderr is no terminal here: no bars
    assert code == 0 and "\r" not in err and "loading images" not in err
    # a line per epoch instead
    assert [line.split(", loss")[0] for line in progress_lines()] == ["hysac epoch 1/1: step 3"]
    code, err = run_cli(
        [
            "train",
            "--data",
            str(world),
            "--model",
            TINY_MODEL,
            "--pretrained",
            tiny_base,
            "--out",
            str(tmp_path / "p"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0 and progress_lines() == []


# ------------------------------------------------------------------------- fault injection

CHILD = """
import sys, torch
from hysafe.models.backbone import LoraConfig
from hysafe.models import create_model
from hysafe.training import TrainConfig, train
torch.set_num_threads(1)
manifest, base, out = sys.argv[1:4]
torch.manual_seed(0)
model = create_model("hysac", "hysafe-tiny", base, lora=LoraConfig(r=4, alpha=8.0, dropout=0.1))
def tick(record):
    print("STEP", record["step"], flush=True)
config = TrainConfig(epochs=2, batch_size=8, lr=3e-3, checkpoint_every=1, log_every=1,
                     progress=False, output_dir=out)
train(model, manifest, "hysac", config, callbacks=[tick])
print("DONE", flush=True)
"""


def _child(world, tiny_base, out, kill_at=None):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(world), tiny_base, str(out)], stdout=subprocess.PIPE, text=True
    )
    for line in proc.stdout:
        if kill_at is not None and line.startswith("STEP") and int(line.split()[1]) >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    return proc.returncode


def _check_run_folder_loads(out):
    for path in out.iterdir():
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
    if (out / "best.safetensors").is_file():
        load_model(out / "best.safetensors")


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(world, tiny_base, tmp_path):
    """SIGKILL during training (mid-step, mid-save, mid-validation) at seeded random steps; the run
    folder stays loadable and the resumed run ends where an uninterrupted one does (1e-6)."""
    assert _child(world, tiny_base, tmp_path / "full") == 0
    reference = load_file(str(tmp_path / "full" / "last.safetensors"))
    rng = np.random.default_rng(7)
    for trial, kill_at in enumerate(sorted(rng.choice(np.arange(1, 12), size=3, replace=False))):
        out = tmp_path / f"killed{trial}"
        assert _child(world, tiny_base, out, kill_at=int(kill_at)) == -9
        assert _child(world, tiny_base, out) == 0
        # a kill mid-save leaves none behind a resume
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        _check_run_folder_loads(out)
        resumed = load_file(str(out / "last.safetensors"))
        for name, value in reference.items():
            if name.startswith(("model/", "best/")):
                assert torch.allclose(resumed[name], value, atol=1e-6), (kill_at, name)
        steps = [
            json.loads(line)["step"]
            for line in (out / "log.jsonl").read_text().splitlines()
            if '"validation"' not in line
        ]
        assert steps == sorted(set(steps)) == list(range(1, 13)), (kill_at, steps)


# ------------------------------------------------------------------------------ round 3 (issue 30)


def _train_argv(world, tiny_base, out, *extra):
    return [
        "train", "--objective", "hysac", "--data", str(world), "--model", TINY_MODEL,
        "--pretrained", tiny_base, "--epochs", "1", "--batch-size", "16", "--no-progress",
        "--lora-dropout", "0.1", "--out", str(out), *extra,
    ]  # fmt: skip


def test_the_same_seed_gives_byte_identical_checkpoints(world, tiny_base, tmp_path, capsys):
    """--seed seeds the model's creation too (LoRA init), not only the loop: R01b."""
    files = []
    for run in ("a", "b", "c"):
        seed = "4" if run != "c" else "5"
        assert run_cli(_train_argv(world, tiny_base, tmp_path / run, "--seed", seed), capsys)[0] == 0
        files.append((tmp_path / run / "best.safetensors").read_bytes())
    assert files[0] == files[1] and files[0] != files[2]


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--max-grad-norm", "-1"], "--max-grad-norm"),  # F16: trained *up* the loss
        (["--max-grad-norm", "nan"], "--max-grad-norm"),
        (["--log-every", "0"], "--log-every"),  # F25: ZeroDivisionError
        (["--lr", "inf"], "--lr"),
        (["--lr", "1e30"], None),  # finite: accepted (a user's choice), not this test's concern
        (["--lora-alpha", "nan"], "--lora-alpha"),
        (["--eval-batch-size", "0"], "--eval-batch-size"),
        (["--rank-weight", "nan"], "--rank-weight: HySAC rank_weight must be"),
        (["--safety-rank-weight", "-2"], "--safety-rank-weight: HySAC safety_rank_weight must be"),
        (["--order-margin", "-1", "--order-weight", "1"], "--order-margin: HySAC order_margin must be"),
        (["--min-radius", "0"], "--min-radius"),
    ],
)
def test_training_options_are_checked_before_any_work(world, tiny_base, tmp_path, capsys, extra, named):
    if named is None:
        return
    code, err = run_cli(_train_argv(world, tiny_base, tmp_path / "o", *extra), capsys)
    assert code == 1 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "best.safetensors").exists()


def test_collection_options_and_thresholds_are_checked(trained, world, tmp_path, capsys):
    out, _ = trained
    ckpt = str(out / "best.safetensors")
    images = str(world.parent / "images" / "test")
    score = ["score", "--checkpoint", ckpt, "--images", images, "--out", str(tmp_path / "s.parquet")]
    for argv in (
        score + ["--batch-size", "0"],
        [
            "index",
            "build",
            "--checkpoint",
            ckpt,
            "--images",
            images,
            "--index",
            str(tmp_path / "i"),
            "--batch-size",
            "0",
        ],
    ):
        with pytest.raises(SystemExit) as stop:  # argparse: exit 2 with the option named
            main(argv)
        assert stop.value.code == 2 and "--batch-size" in capsys.readouterr().err
    for rule, says in (("fpr:2", "(0, 1)"), ("fpr:-0.5", "(0, 1)"), ("fpr:abc", "takes a rate")):
        code, err = run_cli(score + ["--threshold", rule, "--calibrate", str(world)], capsys)
        assert code == 1 and says in err, err
    (tmp_path / "q.txt").write_text("a red circle\n")
    code, err = run_cli(
        ["compare", "--index", f"HySAC={tmp_path}/a", "--index", f"HySAC={tmp_path}/b",
         "--queries", str(tmp_path / "q.txt"), "--out", str(tmp_path / "page")], capsys,
    )  # fmt: skip
    assert code == 1 and "names 'HySAC' twice" in err  # K10: the first was dropped silently


def test_folder_walking_never_leaves_the_folder(world, tmp_path):
    """S25: a link from inside the folder to its parent is not followed (it recursed 40 levels)."""
    from hysafe.collection import ImageFolder

    folder = tmp_path / "imgs"
    shutil.copytree(world.parent / "images" / "test", folder)
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "outside").symlink_to(world.parent / "images" / "train", target_is_directory=True)
    items = list(ImageFolder(folder).items())
    assert len(items) == len(list((world.parent / "images" / "test").iterdir()))
    assert not any(i.id.startswith(("loop", "outside")) for i in items)


def test_a_broken_tar_shard_is_one_line_and_a_bug_says_so(trained, tmp_path, capsys, monkeypatch):
    out, _ = trained
    shard = tmp_path / "shard-000.tar"
    shard.write_bytes(b"not a tar file at all" * 50)
    code, err = run_cli(
        ["score", "--checkpoint", str(out / "best.safetensors"), "--shards", str(shard),
         "--out", str(tmp_path / "s.parquet")], capsys,
    )  # fmt: skip
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    import importlib

    cli_main = importlib.import_module("hysafe.cli.main")  # the module (hysafe.cli.main is also the function)

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli_main.COMMANDS, "plot", (*cli_main.COMMANDS["plot"][:2], broken))
    code = main(["plot", "--checkpoint", f"H={out / 'best.safetensors'}", "--data", "m.jsonl"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" in err and "this is a bug in hysafe" in err


def test_traverse_refuses_embeddings_of_another_width(trained):
    _, res = trained
    model = res.model
    with pytest.raises(ValueError, match=rf"\(B, {model.embed_dim}\)"):
        model.traverse(torch.zeros(2, model.embed_dim + 1))
    with pytest.raises(ValueError, match="got \\(3,\\)"):
        model.traverse(torch.zeros(3))


def test_an_fpr_threshold_is_calibrated_on_validation_rows_only(trained, world, tmp_path):
    """Issue 28, audit item 8: ``score --calibrate M`` read every split of M, test included."""
    from hysafe.collection.score import resolve_threshold
    from hysafe.data import QuadrupletDataset, load_manifest
    from hysafe.models.checkpoint import load_model
    from hysafe.models.classifier import choose_threshold
    from hysafe.models.embed import embed_dataset

    model = load_model(trained[0] / "best.safetensors")
    value, said = resolve_threshold(model, "image", "fpr:0.1", str(world))
    emb = embed_dataset(model, QuadrupletDataset.from_manifest(world, model, split="validation"))
    scores = torch.cat([model.nsfw_score(emb["V"], "image"), model.nsfw_score(emb["V*"], "image")])
    labels = torch.cat([torch.zeros(len(emb["V"])), torch.ones(len(emb["V*"]))])
    assert value == choose_threshold(scores, labels, rule="fpr", target_fpr=0.1) and "fpr <= 0.1" in said
    test_only = tmp_path / "test_only.jsonl"
    rows = [r for r in load_manifest(world) if r.split == "test"]
    test_only.write_text(
        "".join(
            json.dumps({"safe_text": r.safe_text, "unsafe_text": r.unsafe_text, "safe_image": r.safe_image,
                        "unsafe_image": r.unsafe_image, "split": "test"}) + "\n"
            for r in rows
        )
    )  # fmt: skip
    with pytest.raises(ValueError, match="no rows with split 'validation'.*never on test"):
        resolve_threshold(model, "image", "fpr:0.1", str(test_only))


def test_the_vague_messages_now_name_the_problem(trained, world, tiny_base, tmp_path, capsys):
    """Issue 30's "vague" list: each case now names the file, row, field or shape at fault."""
    from hysafe.models.checkpoint import load_model

    out, _ = trained
    ckpt = str(out / "best.safetensors")
    (tmp_path / "extra.csv").write_text("safe_text,unsafe_text,split\na,b,train,EXTRA\n")
    (tmp_path / "dup.csv").write_text("safe_text,safe_text,unsafe_text\na,b,c\n")
    for name, says in (
        ("extra", "row 1: 4 values for the header's 3 columns"),
        ("dup", "['safe_text'] named more"),
    ):
        with pytest.raises(ManifestError, match=re.escape(says)):
            load_manifest(tmp_path / f"{name}.csv")
    (tmp_path / "latin1.txt").write_bytes("a red circle\ncaf\xe9\n".encode("latin-1"))
    (tmp_path / "not.parquet").write_text("not parquet")
    texts = ["score", "--checkpoint", ckpt, "--texts"]
    for argv, says in (
        (texts + [str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "s.parquet")],
         "latin1.txt, line 2: not UTF-8 text (byte 0xe9)"),
        (texts + [str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "not.parquet")],
         "not.parquet exists and is not a Parquet file"),
        (["train", "--features", ckpt, "--out", str(tmp_path / "r")],
         "not a feature file from 'hysafe embed'"),
    ):  # fmt: skip
        code, err = run_cli(argv, capsys)
        assert code == 1 and says in err, err
    model = load_model(ckpt)
    assert model.tokenize("a red circle").shape[0] == 1  # one text, not one per character
    for shape in ((1, 3, 7, 7), (3, 32, 32)):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"shape (B, 3, 32, 32) (model.preprocess makes them from PIL images), got {shape}"
            ),
        ):
            model.encode_image(torch.zeros(shape))
    tensors = load_file(ckpt)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * float("nan")
    with safe_open(ckpt, "pt") as f:
        save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=f.metadata())
    with pytest.raises(ValueError, match=f"nan.safetensors: tensor .* holds {tensors[name].numel()} NaN/Inf"):
        load_model(tmp_path / "nan.safetensors")


@pytest.mark.parametrize("kind", ["hysac", "safeclip"])
def test_a_diverged_training_stops_with_its_cause_and_saves_no_nan_weights(world, tiny_base, tmp_path, kind):
    """Issue 30: ``--lr 1e30`` trained on, wrote NaN weights and failed later as "curv must be > 0"."""
    model = create_model(kind, TINY_MODEL, tiny_base, lora=LoraConfig(r=2, alpha=4.0, dropout=0.0))
    config = TrainConfig(epochs=2, batch_size=16, lr=1e30, progress=False, output_dir=str(tmp_path / "r"))
    with pytest.raises(
        ValueError, match=r"training diverged in epoch 1 \(step \d+\): .* not finite; lower --lr"
    ):
        train(model, world, kind, config)
    assert not (tmp_path / "r" / "best.safetensors").exists()
