"""What a newcomer runs first: the README's two commands (read by CI out of the README), the
base install's surface (a missing extra is one line naming it, never ``No module named``), a
demo that fails before its training or keeps it, and ``serve --demo`` on an unfinished report."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from hysafe.cli.main import COMMAND_EXTRAS, error_message, main
from hysafe.utils.extras import EXTRAS, extra_of_module, missing_module_message, require_extra

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_has_two_setup_commands_and_ci_runs_them_as_written():
    rc = _readme_commands()
    first, second = rc.setup_commands((ROOT / "README.md").read_text())
    assert "pip install -c constraints.txt -e . " in first and "[" not in first  # the base install: no extras
    assert first.endswith("hysafe demo")
    assert '-e ".[test]"' in second and second.endswith("python -m pytest")
    assert ".venv/bin/ruff check . && .venv/bin/ruff format --check ." in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py README.md 1" in ci and "readme_commands.py README.md 2" in ci
    assert 'bash -c "$first"' in ci and 'bash -c "$second"' in ci
    assert 'pip install -q -c constraints.txt -e ".[test]"' not in ci  # no copy of a README command to drift
    with pytest.raises(ValueError, match="exactly two"):
        rc.setup_commands(f"{rc.SECTION}\n\n```bash\nonly one\n```\n\n## Next\n")


def test_a_missing_module_is_one_line_that_names_the_extra():
    msg = error_message(ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn"))
    assert "'serve' extra" in msg and "hysafe[serve]" in msg and "No module named" not in msg
    assert "'hf' extra" in missing_module_message(ModuleNotFoundError(name="transformers.models"))
    other = error_message(ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow"))
    assert "reinstall hysafe" in other and "No module named" not in other
    assert extra_of_module("fastapi.responses") == "serve" and extra_of_module("torch") is None
    assert set(COMMAND_EXTRAS.values()) <= set(EXTRAS)


def test_a_command_without_its_extra_stops_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ImportError, match=r"hysafe serve needs the 'serve' extra \(fastapi"):
        require_extra("serve", "hysafe serve")
    report = tmp_path / "report"  # would be refused as incomplete, if the command got that far
    assert main(["serve", "--demo", str(report)]) == 1
    err = capsys.readouterr().err
    assert "needs the 'serve' extra" in err and "hysafe[serve]" in err and len(err.strip().splitlines()) == 1
    assert not report.exists()


def test_serve_on_an_unfinished_report_names_what_is_missing(tmp_path, capsys):
    report = tmp_path / "report"
    (report / "checkpoints").mkdir(parents=True)
    (report / "demo_config.json").write_text("{}")
    (report / "checkpoints" / "clip-pretrained.safetensors").write_bytes(b"x")
    assert main(["serve", "--demo", str(report)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "incomplete hysafe demo report" in err
    missing = "world/manifest.jsonl, checkpoints/safeclip.safetensors, checkpoints/safer-clip.safetensors, "
    assert missing + "checkpoints/hysac.safetensors" in err
    assert f"hysafe demo --out {report}" in err
    (report / "indexes" / "HySAC").mkdir(parents=True)  # indexes do not make up for missing checkpoints
    (report / "indexes" / "HySAC" / "index.json").write_text("{}")
    assert main(["serve", "--demo", str(report)]) == 1
    assert "checkpoints/hysac.safetensors" in capsys.readouterr().err
    assert main(["serve", "--demo", str(tmp_path / "none")]) == 1
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["serve", "--demo", str(tmp_path / "afile")]) == 1
    assert "is a file, not a hysafe demo report folder" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(tmp_path / "afile")]) == 1
    assert "--out " + str(tmp_path / "afile") + " is a file, not a folder" in capsys.readouterr().err


def test_demo_without_a_piece_of_its_report_fails_before_training(tmp_path):
    out = tmp_path / "demo"
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"  # an install without pyarrow
        "from hysafe.cli import main\n"
        f"sys.exit(main(['demo', '--quick', '--no-progress', '--out', {str(out)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "hysafe demo cannot write its report" in proc.stderr and "pyarrow" in proc.stderr
    assert "No module named" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "runs").exists()  # nothing was trained


def test_serve_refuses_a_bad_or_busy_port_in_one_line_before_loading(tmp_path, capsys):
    """A port out of range is a usage error (exit 2; 99999 once listened on 34463); a port in use is
    one line naming it (exit 1, not uvicorn's traceback after the models loaded)."""
    import socket

    from hysafe.cli.serve import listening_socket

    for bad in ("99999", "-5", "http"):
        with pytest.raises(SystemExit) as e:
            main(["serve", "--demo", str(tmp_path), "--port", bad])
        assert e.value.code == 2 and "--port" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: .*pick another --port"):
            listening_socket("127.0.0.1", port)
        with pytest.raises(OSError, match="--host 'no.such.host.invalid': not an address"):
            listening_socket("no.such.host.invalid", 0)
    with listening_socket("127.0.0.1", 0) as free:  # 0: any free port, the one taken is known
        assert free.getsockname()[1] > 0
        # listening from the start: a second server, even one whose first is still loading, is refused
        with pytest.raises(OSError, match="pick another --port"):
            listening_socket("127.0.0.1", free.getsockname()[1])
