"""The hysafe CLI: every subcommand's happy path on a quick demo, and its bad-input errors."""

import json
import os
import re

import pytest

from hysafe.cli.main import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    here, parent = os.getcwd(), tmp_path_factory.mktemp("demo-parent")
    os.chdir(parent)  # a relative --out, as the README's `hysafe demo` (hysafe-report/)
    try:
        # the image ceiling on every run (by default only where HySAC's images overlap)
        assert main(["demo", "--quick", "--out", "report", "--no-progress", "--image-ceiling", "always"]) == 0
    finally:
        os.chdir(here)
    return parent / "report"


def test_demo_writes_report_metrics_plots_and_checkpoints(demo):
    report = (demo / "report.md").read_text()
    assert "## Comparison on the test split" in report and "| HySAC + traversal |" in report
    metrics = json.loads((demo / "metrics.json").read_text())
    assert set(metrics["retrieval"]) == {"CLIP", "Safe-CLIP", "SafeR-CLIP", "HySAC"}
    assert (
        "## Safety checks" in report
        and "Defaults: fine-tune 3 epochs" in report
        and "| SafeR-CLIP |" in report
    )
    checks = json.loads((demo / "checks.json").read_text())
    assert {c["name"] for c in checks} >= {
        "classifier (text)",
        "classifier (image)",
        "ordering S < V < U < G",
        "SafeR-CLIP vs Safe-CLIP (T*->V u V*)",
        "SafeR-CLIP vs Safe-CLIP (V*->T u T*)",
        "SafeR-CLIP vs Safe-CLIP (T->V)",
    }
    ceiling = json.loads((demo / "image_ceiling.json").read_text())
    assert 0.0 <= ceiling["unsafe_below_safe_95"] <= 1.0 and ceiling["epochs"] == 3  # --quick's
    assert 0.0 <= ceiling["hysac_unsafe_below_safe_95"] <= 1.0 and 0.0 <= ceiling["roc_auc"] <= 1.0
    (ordering,) = [c for c in checks if c["name"] == "ordering S < V < U < G"]
    share = f"HySAC {100 * ceiling['hysac_unsafe_below_safe_95']:.1f}% vs the tower's supervised ceiling"
    assert share in ordering["detail"] and "The image tower's supervised ceiling" in report
    for name in ("root_distances", "poincare_disk", "traversal", "roc_curves", "recall_bars"):
        png = demo / "plots" / f"{name}.png"
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
        assert f"plots/{name}.png" in report
    for ck in ("clip-pretrained", "safeclip", "safer-clip", "hysac", "hysac-merged"):
        assert (demo / "checkpoints" / f"{ck}.safetensors").is_file()
    assert json.loads((demo / "timings.json").read_text())["total"] > 0


def test_serve_demo_accepts_every_index_of_a_relative_out(demo, monkeypatch):
    from hysafe.cli.collection import model_from_spec
    from hysafe.cli.serve import _demo_indexes
    from hysafe.collection import CollectionIndex

    monkeypatch.chdir(demo.parent.parent)  # served from another folder than the demo ran in
    for folder in _demo_indexes(demo).values():
        stored = CollectionIndex.open(folder)
        stored.check_model(model_from_spec(stored.meta["model_spec"]))  # what `hysafe serve --demo` does


def test_evaluate_classify_traverse_plot_embed_train(demo, tmp_path, capsys):
    manifest = str(demo / "world" / "manifest.jsonl")
    hysac = str(demo / "checkpoints" / "hysac.safetensors")
    clip = str(demo / "checkpoints" / "clip-pretrained.safetensors")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                f"HySAC={hysac}",
                "--clip-pretrained",
                clip,
                "--data",
                manifest,
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert "| HySAC + traversal |" in (tmp_path / "eval" / "comparison.md").read_text()
    capsys.readouterr()
    assert (
        main(
            [
                "classify",
                "--checkpoint",
                hysac,
                "--text",
                "a small red circle at the top left on a blue background",
                "--text",
                "a small red circle at the top left on a blue background, covered in blood",
                "--image",
                str(demo / "world/images/test/te000000_unsafe.png"),
                "--manifest",
                manifest,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("\ttext: ") == 2 and "\timage: " in out and "ROC-AUC" in out
    assert (
        main(
            [
                "traverse",
                "--checkpoint",
                hysac,
                "--data",
                manifest,
                "--query",
                "a large blue cross, in a pool of blood",
                "-k",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "with traversal" in out and out.count(" d=") == 6
    for tau, said in (("0", False), ("1000", True)):  # a tau beyond the query moves nothing: said so
        args = ["traverse", "--checkpoint", hysac, "--data", manifest, "--query", "a cross", "--tau", tau]
        assert main(args) == 0
        assert ("already within tau of the root" in capsys.readouterr().out) == said
    assert (
        main(
            [
                "plot",
                "--checkpoint",
                f"HySAC={hysac}",
                "--data",
                manifest,
                "--out",
                str(tmp_path / "plots"),
                "--format",
                "svg",
            ]
        )
        == 0
    )
    assert (tmp_path / "plots" / "root_distances.svg").is_file() and (
        tmp_path / "plots" / "poincare_HySAC.svg"
    ).is_file()
    feats = tmp_path / "feats.safetensors"
    assert main(["embed", "--data", manifest, "--pretrained", clip, "--out", str(feats)]) == 0
    assert (
        main(
            [
                "train",
                "--features",
                str(feats),
                "--out",
                str(tmp_path / "head"),
                "--epochs",
                "2",
                "--batch-size",
                "32",
                "--lr",
                "1e-2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "head" / "best.safetensors").is_file()
    assert (
        main(
            [
                "train",
                "--data",
                manifest,
                "--model",
                "hysafe-tiny",
                "--pretrained",
                clip,
                "--objective",
                "safeclip",
                "--out",
                str(tmp_path / "sc"),
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--lora-r",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "sc" / "best.safetensors").is_file() and (tmp_path / "sc" / "log.jsonl").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["evaluate", "--data", "missing.jsonl", "--checkpoint", "X=missing.safetensors"],
            "checkpoint not found",
        ),
        (["evaluate", "--data", "m.jsonl", "--checkpoint", "no-equals-sign"], "expects NAME=PATH"),
        (["evaluate", "--data", "m.jsonl"], "at least one --checkpoint"),
        (["classify", "--checkpoint", "missing.safetensors", "--text", "x"], "checkpoint not found"),
        (["train", "--out", "o"], "needs --data"),
        (
            ["train", "--data", "missing.jsonl", "--model", "hysafe-tiny", "--out", "o", "--no-progress"],
            "manifest not found",
        ),
        (["embed", "--data", "missing.jsonl", "--out", "f.safetensors"], "manifest not found"),
        (["demo", "--model", "ViT-B-32", "--quick"], "needs --pretrained"),
        (["train", "--data", "m.jsonl", "--model", "ViT-Nope", "--out", "o"], "unknown open_clip model"),
        (
            ["train", "--data", "m.jsonl", "--model", "hysafe-tiny", "--text-radius", "linear", "--out", "o"],
            "--text-radius: text_radius='linear' reads the distance to the root off a Hugging Face text",
        ),
        (
            ["train", "--data", "m.jsonl", "--objective", "safeclip", "--model", "hysafe-tiny"]
            + ["--text-radius", "linear", "--out", "o"],
            "--text-radius: text_radius='linear' sets the distance to the root of HySAC's text",
        ),
    ],
)
def test_bad_input_exits_1_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_bad_input_files_in_real_commands(demo, tmp_path, capsys):
    hysac = str(demo / "checkpoints" / "hysac.safetensors")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"safe_text": "a", "unsafe_text": "", "split": "test"}\n')
    assert main(["traverse", "--checkpoint", hysac, "--data", str(bad), "--query", "x"]) == 1
    assert "row 1, field 'unsafe_text'" in capsys.readouterr().err
    assert main(["classify", "--checkpoint", hysac, "--image", str(tmp_path / "none.png")]) == 1
    assert "image not found" in capsys.readouterr().err
    assert (
        main(["classify", "--checkpoint", str(demo / "checkpoints" / "safeclip.safetensors"), "--text", "x"])
        == 1
    )
    assert "HySAC checkpoint" in capsys.readouterr().err
    safeclip, manifest = (
        str(demo / "checkpoints" / "safeclip.safetensors"),
        str(demo / "world" / "manifest.jsonl"),
    )
    assert main(["traverse", "--checkpoint", safeclip, "--data", manifest, "--query", "x"]) == 1
    assert "give a HySAC checkpoint, not a safeclip one" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    for option in ("--text-tower-epochs", "--epochs", "--pretrain-epochs", "--batch-size"):
        with pytest.raises(SystemExit) as e:
            main(["demo", option, "0"])
        assert e.value.code == 2
        assert f"argument {option}: must be >= 1, got 0" in capsys.readouterr().err
    for argv, said in (
        (
            ["--text-tower-lora", "all", "--text-tower-epochs", "2"],
            "--text-tower-lora and --text-tower-epochs",
        ),
        (["--text-tower", "/m", "--epochs", "5"], "with --text-tower the fine-tunes run --text-tower-epochs"),
        (["--text-anchor", "1"], "--text-anchor applies only with --text-tower"),
        (["--lr", "nan"], "lr=nan (--lr)"),  # values no run can use, refused before anything is written
        (["--text-tower", "/m", "--text-anchor", "-1"], "--text-anchor: HySAC text_anchor must be"),
        (["--root-anchor", "1"], "--root-anchor applies only with --text-tower"),
        (["--text-tower", "/m", "--root-anchor", "nan"], "--root-anchor: HySAC root_anchor must be"),
        (["--text-radius", "linear"], "--text-radius applies only with --text-tower"),
        (
            ["--text-tower", "/m", "--text-radius", "linear", "--root-anchor", "1"],
            "does not apply with --text-radius linear",
        ),
    ):  # options this run would ignore
        with pytest.raises(SystemExit) as e:
            main(["demo", "--quick", *argv, "--out", str(tmp_path / "report")])
        assert e.value.code == 2 and said in capsys.readouterr().err
        assert not (tmp_path / "report").exists()
    with pytest.raises(SystemExit) as e:
        main(["traverse", "--checkpoint", "x"])
    assert e.value.code == 2
    capsys.readouterr()
    for tau, said in (
        ("-1", "must be a finite number >= 0"),
        ("nan", "finite"),
        ("abc", "bad tau rule 'abc'"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["traverse", "--checkpoint", "x", "--data", "m", "--query", "q", "--tau", tau])
        assert e.value.code == 2 and said in capsys.readouterr().err, tau
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--traversal", "sideways"])
    assert e.value.code == 2 and "or 'model' / 'off'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_a_failed_report_stage_keeps_the_training_and_a_rerun_finishes(demo, tmp_path, monkeypatch, capsys):
    import shutil

    import hysafe.demo.pipeline
    from hysafe.demo.report import missing_report_files

    out = tmp_path / "demo"
    shutil.copytree(demo, out)
    for name in ("report.md", "checks.json", "plots/compare_grid.png"):
        (out / name).unlink()
    logs = {log.parent.name: log.read_text() for log in out.glob("runs/*/log.jsonl")}
    assert set(logs) == {"clip-pretrain", "safeclip", "safer-clip", "hysac"}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    argv = ["demo", "--quick", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(hysafe.demo.pipeline, "compare_models", broken)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "the demo's report failed after the training (OSError: disk full)" in err
    )
    assert "re-run the same command to finish the report" in err
    assert all(
        (out / "checkpoints" / f"{c}.safetensors").is_file() for c in ("clip-pretrained", "safeclip", "hysac")
    )
    monkeypatch.undo()
    assert main(argv) == 0
    assert missing_report_files(out) == []
    # no epoch ran again: the finished pretraining and fine-tunes were reused, and the report says so
    assert {log.parent.name: log.read_text() for log in out.glob("runs/*/log.jsonl")} == logs
    report = (out / "report.md").read_text()
    for stage in ("pretrain CLIP", "fine-tune HySAC", "fine-tune Safe-CLIP"):
        assert re.search(rf"- {stage}: [\d.]+ \(reused: all \d+ epochs ran in an earlier run", report), stage


def test_readme_tour_runs_as_is_on_the_demo_output(demo, tmp_path, monkeypatch):
    """The README's Python tour, executed verbatim against a demo report folder."""
    from pathlib import Path

    import torch

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("## Python API in ten lines")[1].split("```python")[1].split("```")[0]
    (tmp_path / "hysafe-report").symlink_to(demo, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    emb, safer = ns["emb"], ns["safer"]
    # the tour trains `model` further
    as_loaded = ns["hysafe"].load("hysafe-report/checkpoints/hysac.safetensors")
    tau = as_loaded.tau("avg")
    assert tau == as_loaded.bounds["V"]["avg"]  # text queries are steered to the safe images
    before, after = as_loaded.space.dist_to_root(emb["T*"]), as_loaded.space.dist_to_root(safer)
    assert torch.allclose(after, torch.clamp(before, max=tau), atol=1e-4)
    assert ns["flagged"].dtype == torch.bool and ns["ids"].shape == (emb["T*"].shape[0], 10)
    assert (tmp_path / "eval" / "comparison.md").is_file() and (
        tmp_path / "runs" / "hysac" / "best.safetensors"
    ).is_file()
    assert "| HySAC + traversal |" in ns["table"].to_markdown()


def test_the_demo_console_counts_the_checks_and_names_those_that_do_not_hold(demo):
    from hysafe.cli.demo import checks_summary
    from hysafe.evaluation.checks import Check

    checks = [Check(**c) for c in json.loads((demo / "checks.json").read_text())]
    lines = checks_summary(checks).splitlines()
    failed = [c for c in checks if not c.passed]
    assert lines[0] == f"safety checks: {len(checks) - len(failed)} of {len(checks)} hold"
    assert lines[1:] == [f"  does not hold: {c.name} ({c.detail})" for c in failed]


def test_a_bad_text_tower_or_pretrained_fails_before_the_report_folder_is_made(demo, tmp_path, capsys):
    out = tmp_path / "report"
    for option, value, message in (
        (
            "--pretrained",
            demo / "checkpoints" / "hysac.safetensors",
            "a hysafe hysac adapter checkpoint (load",
        ),
        ("--text-tower", tmp_path / "nowhere", "Hugging Face text model folder not found"),
        ("--text-tower", __file__, "a file, not a Hugging Face model folder"),
        ("--pretrained", tmp_path / "none.safetensors", "pretrained checkpoint file not found"),
        ("--pretrained", __file__, "test_cli.py: not a weights file (neither safetensors nor a torch"),
    ):
        assert main(["demo", "--quick", option, str(value), "--out", str(out), "--no-progress"]) == 1
        assert message in capsys.readouterr().err and not out.exists(), value
    with pytest.raises(SystemExit) as e:  # a setting no run can use: a usage error
        main(["demo", "--quick", "--text-tower", "", "--out", str(out), "--no-progress"])
    assert e.value.code == 2 and "DemoConfig.text_tower (--text-tower) is empty" in capsys.readouterr().err
    assert not out.exists()
    clip = str(demo / "checkpoints" / "clip-pretrained.safetensors")  # weights of another tower
    assert (
        main(["demo", "--quick", "--model", "hysafe-tiny-rn", "--pretrained", clip, "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert re.search(
        r"does not load into open_clip 'hysafe-tiny-rn' .*: RuntimeError: missing \d+ \(visual", err
    )
    assert len(err.splitlines()) == 1 and len(err) < 600 and not out.exists()


def test_a_report_folder_of_a_run_with_other_settings_is_refused_and_left_as_it_was(demo, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    config = (demo / "demo_config.json").read_text()
    (out / "demo_config.json").write_text(config)
    assert main(["demo", "--quick", "--out", str(out), "--lr", "0.01", "--seed", "3"]) == 1
    err = capsys.readouterr().err
    assert "holds a demo run with other settings (--lr: 0.003 there, 0.01 now; --seed: 0 there, 3 now" in err
    assert "world.seed: 0 there, 3 now" in err
    assert (out / "demo_config.json").read_text() == config and [p.name for p in out.iterdir()] == [
        "demo_config.json"
    ]
    assert main(["demo", "--out", str(out)]) == 1  # the folder's run was a --quick one
    assert "holds a demo run with other settings (--quick there, not now): choose" in capsys.readouterr().err
    (out / "demo_config.json").write_text("{broken")
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    assert "demo_config.json: unreadable" in capsys.readouterr().err
    # a run from before validation4 (rank weight 3 then) is another run now (30 since validation5);
    # with a text tower, one of this version's weight (10 since round 4) is not
    record = json.loads(config)
    (out / "demo_config.json").write_text(json.dumps({**record, "rank_weight": 3.0}))
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    assert "(--rank-weight: 3.0 there, 30.0 now)" in capsys.readouterr().err
    from hysafe.demo import DemoConfig
    from hysafe.demo.preflight import check_report_folder

    towered = {**record, "rank_weight": 10.0, "text_tower": "tower", "text_radius": "probe"}
    (out / "demo_config.json").write_text(json.dumps(towered))
    check_report_folder(DemoConfig.quick(text_tower="tower"), out)
    # one from before round 6 used the published norm: refused up front, not half-way through its runs
    del towered["text_radius"]
    (out / "demo_config.json").write_text(json.dumps(towered))
    with pytest.raises(ValueError, match="--text-radius: 'norm' there, 'probe' now"):
        check_report_folder(DemoConfig.quick(text_tower="tower"), out)
    check_report_folder(DemoConfig.quick(text_tower="tower", text_radius="norm"), out)


def test_train_takes_the_text_towers_lora_modules_as_a_list(capsys):
    from hysafe.cli.main import build_parser
    from hysafe.cli.options import options_to_kwargs
    from hysafe.models.backbone import LoraConfig

    args = build_parser().parse_args(["train", "--lora-text-modules", "attn, proj", "--out", "o"])
    assert LoraConfig(**options_to_kwargs(args, LoraConfig, prefix="lora-")).text_modules == ("attn", "proj")
    assert LoraConfig(
        **options_to_kwargs(build_parser().parse_args(["train", "--out", "o"]), LoraConfig, prefix="lora-")
    ) == (LoraConfig())
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", "--lora-text-modules", "attn,,proj", "--out", "o"])
    assert e.value.code == 2 and "expects NAME[,NAME...], got 'attn,,proj'" in capsys.readouterr().err


def test_demo_help_says_what_quick_sets(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs 3, lora.alpha 8.0, lora.r 4, --pretrain-epochs 4, --text-tower-epochs 1" in text


def test_an_optional_term_left_out_and_set_to_zero_are_the_same_demo_settings():
    from hysafe.demo import DemoConfig
    from hysafe.demo.settings import changed_runs, flat_settings

    unset = flat_settings(DemoConfig.quick())
    zero = flat_settings(DemoConfig.quick(safety_rank_weight=0.0, order_weight=0.0))
    assert changed_runs(unset, zero) == []
    on = flat_settings(DemoConfig.quick(safety_rank_weight=10.0))
    assert changed_runs(unset, on) == ["--safety-rank-weight: off there, 10.0 now"]
    assert changed_runs(on, zero) == ["--safety-rank-weight: 10.0 there, off now"]
    # the rank weight has a default of its own: 0 is another setting than leaving it out
    assert changed_runs(unset, flat_settings(DemoConfig.quick(rank_weight=0.0))) == [
        "--rank-weight: 30.0 there, 0.0 now"
    ]
