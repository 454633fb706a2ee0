"""Structure the project keeps: no import cycle inside hysafe, short functions in the
orchestration layer, long modules say why at their top."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"hysafe": ROOT / "hysafe", "hysafe.geometry": ROOT / "geometry", "hysafe.losses": ROOT / "losses"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            if package == "hysafe" and path.parts[len(folder.parts)] in ("geometry", "losses"):
                continue
            rel = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *rel))
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """hysafe modules imported anywhere in a module (a lazy import inside a function still ties
    the two concepts together; so does a module named in a string, as a package's lazy exports
    name theirs: :mod:`hysafe.utils.lazy`)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            candidates = [node.value]
        else:
            continue
        out |= {c for c in candidates if c in known and c != name}
    return out


def test_no_import_cycle_between_hysafe_modules():
    modules = _modules()
    graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
    # a package importing its own submodules is not a cycle of concepts
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    assert "hysafe.models.checkpoint" in graph and "hysafe.training.loop" in graph
    for m in graph:
        if m not in state:
            visit(m, [m])


#: packages by layer, bottom first: a module imports only from its own package or from lower layers;
#: the apps (last layer) may import anything, and nothing imports them but each other
LAYERS = (
    ("hysafe.utils", "hysafe.populations", "hysafe.geometry"),
    ("hysafe.losses", "hysafe.data"),
    ("hysafe.models",),
    ("hysafe.index",),
    ("hysafe.evaluation",),
    ("hysafe.training",),
    ("hysafe.collection", "hysafe.interop"),
    ("hysafe.serve", "hysafe.demo", "hysafe.cli"),
)
APPS = LAYERS[-1]


def _package_of(module: str) -> str | None:
    return next((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), None)


def _layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def test_layers_point_down_and_the_library_never_imports_an_app():
    modules = _modules()
    known = set(modules)
    placed = {m for m in modules if m != "hysafe"}
    assert all(_package_of(m) for m in placed), sorted(m for m in placed if not _package_of(m))
    wrong = []
    for m, path in modules.items():
        if m == "hysafe":  # the public API: every library layer, no app
            assert not {_package_of(d) for d in _imports(m, path, known)} & set(APPS)
            continue
        own = _package_of(m)
        for d in _imports(m, path, known):
            target = _package_of(d)
            if target is None or target == own or own in APPS:
                continue
            if target in APPS or _layer_of(target) >= _layer_of(own):
                wrong.append(f"{m} imports {d}")
    assert not wrong, wrong


def test_only_one_module_reads_the_launcher_environment():
    readers = []
    for path in [*ROOT.glob("hysafe/**/*.py"), *ROOT.glob("losses/*.py"), *ROOT.glob("geometry/*.py")]:
        text = path.read_text()
        if '"WORLD_SIZE"' in text or '"LOCAL_RANK"' in text or "dist.get_world_size(" in text:
            readers.append(str(path.relative_to(ROOT)))
    assert readers == ["hysafe/utils/distributed.py"]


def test_the_top_level_holds_packages_and_shared_vocabulary_only():
    modules = sorted(p.name for p in (ROOT / "hysafe").glob("*.py"))
    assert modules == ["__init__.py", "populations.py"]
    for package in (ROOT / "hysafe").iterdir():
        if package.is_dir() and (package / "__init__.py").is_file():
            doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
            assert len(doc.split()) >= 15, f"{package.name}/__init__.py: a paragraph on what the package owns"


@pytest.mark.parametrize("folder", ["hysafe"])
def test_orchestration_functions_are_short(folder):
    long = []
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > 60
            ):
                long.append(
                    f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
                )
    assert not long, long


def test_long_modules_state_why():
    for path in (
        list(ROOT.glob("hysafe/**/*.py")) + list(ROOT.glob("geometry/*.py")) + list(ROOT.glob("losses/*.py"))
    ):
        text = path.read_text()
        if text.count("\n") > 300:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            assert "Over 300 lines" in docstring, (
                f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines and no reason at its top"
            )


def test_packages_import_their_exports_on_first_use():
    """``import hysafe`` and ``hysafe.models`` name their exports' modules (lazy, hysafe.utils.lazy):
    a process that needs only an index does not import open_clip or scikit-learn, and every public
    name still resolves, aliases included; the layering test above reads the named modules."""
    import subprocess
    import sys

    import hysafe
    import hysafe.models

    heavy = "{'open_clip', 'sklearn', 'transformers'}"
    probe = f"import sys, hysafe.index.retrieval; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert all(getattr(hysafe, name) is not None for name in hysafe.__all__)
    assert hysafe.load is hysafe.load_model and hysafe.HySAC is hysafe.models.HySAC
    assert set(hysafe.__all__) <= set(dir(hysafe)) and "build_model" in dir(hysafe.models)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        hysafe.nope  # noqa: B018
    from hysafe.utils.lazy import lazy_exports

    with pytest.raises(ValueError, match="aliases of names it does not export"):
        lazy_exports("hysafe", {"a": "hysafe.populations"}, aliases={"b": "c"})
