"""The layer rules of ARCHITECTURE.md, held from the code's real imports (ast, not grep).

- `models/core` imports nothing of execal but itself; `models/data` imports only `core`; every other
  subpackage of `models/` is an area and imports only `core`, `data` and itself, never another area.
- Nothing in `models/` imports Dash, plotly, `execal.components`, `execal.app` or `execal.cli`.
- No import inside a function to dodge a cycle: a function-level import is allowed only for an
  optional heavy dependency listed in LAZY_OK (third-party, never execal).
- The old top-level names (`models`, `components`, `app`, `cli`) are never imported: one import
  name, `execal`.
- UI: a panel module never imports another panel or `layout`; `layout` is the only module that
  imports the panels.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI_LIBS = {"dash", "plotly", "dash_bootstrap_components", "dash_ag_grid"}
OLD_TOP_LEVEL = {"models", "components", "app", "cli"}
# the command line imports each command's area when that command runs, so `execal --version` and
# `execal --help` start instantly; nowhere else may an execal import sit inside a function
LAZY_FILES_OK = {"cli.py"}
# optional or heavy third-party libraries a function may import on first use (documented in
# ARCHITECTURE.md): everything else is imported at the top of its module
LAZY_OK = {"arch", "statsmodels", "numba", "QuantLib", "celery", "redis", "dask", "distributed",
           "websockets", "cryptofeed", "playwright", "locust", "polars", "resource", "gunicorn",
           "yaml", "pyarrow", "orjson", "lmfit", "py_lets_be_rational", "mpmath", "hypothesis",
           "multiprocessing", "dash_auth"}


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = ["execal", *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, bool, int]]:
    """(absolute module imported, inside a function?, line) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path, root).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out: list[tuple[str, bool, int]] = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                # `from execal.models.vol import garch` names the module execal.models.vol.garch
                out.extend((f"{mod}.{a.name}" if mod.startswith("execal") else mod, in_function, child.lineno)
                           for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return out


def _layer(module: str) -> str | None:
    """'core', 'data', an area name, 'models' (the package itself), or None outside models."""
    parts = module.split(".")
    if parts[:2] != ["execal", "models"]:
        return None
    return parts[2] if len(parts) > 2 else "models"


def violations(root: Path = ROOT) -> list[str]:
    """Every broken layer rule under `root` (a checkout of execal), one line each."""
    found = []
    files = [p for p in root.rglob("*.py") if ".git" not in p.parts and "build" not in p.parts]
    for path in files:
        rel = path.relative_to(root)
        here = _module_name(path, root)
        layer = _layer(here)
        is_package_code = rel.parts[0] in ("models", "components") or rel.name in ("app.py", "cli.py", "__init__.py")
        for module, in_function, line in imports(path, root):
            top = module.split(".")[0]
            where = f"{rel}:{line}"
            if top in OLD_TOP_LEVEL:
                found.append(f"{where} imports the old top-level name {module!r} (use execal.{module})")
            if in_function and is_package_code and rel.as_posix() not in LAZY_FILES_OK and (
                    top == "execal" or top not in LAZY_OK):
                found.append(f"{where} imports {module!r} inside a function")
            if layer is None:
                continue
            if top in UI_LIBS or module.startswith(("execal.components", "execal.app", "execal.cli")):
                found.append(f"{where}: models/ imports the UI ({module})")
                continue
            target = _layer(module) if top == "execal" else None
            if top == "execal" and target is None and module != "execal":
                found.append(f"{where}: models/ imports {module}")
            if target is None or target == layer:
                continue
            if layer == "core":
                found.append(f"{where}: core imports {module} (core imports nothing of execal)")
            elif layer == "data" and target != "core":
                found.append(f"{where}: data imports {module} (data imports only core)")
            elif layer not in ("core", "data", "models") and target not in ("core", "data"):
                found.append(f"{where}: area '{layer}' imports area '{target}' ({module}); move the shared need to core")
        if rel.parts[0] == "components" and rel.stem.endswith("_panel"):
            for module, _, line in imports(path, root):
                name = module.split(".")
                if name[:2] == ["execal", "components"] and len(name) > 2 and (
                        name[2].endswith("_panel") and name[2] != rel.stem or name[2] == "layout"):
                    found.append(f"{rel}:{line}: a panel imports {module} (panels import the shell, never "
                                 "another panel or layout)")
    return sorted(found)


def test_layer_rules_hold():
    assert violations() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_catches_each_injected_violation(tmp_path):
    root = _tree(tmp_path, {
        "models/__init__.py": "",
        "models/core/__init__.py": "",
        "models/core/params.py": "from execal.models.data import schema\n",            # core -> data
        "models/data/__init__.py": "",
        "models/data/io.py": "from execal.models.impact.fit import Calibrator\n",        # data -> area
        "models/vol/__init__.py": "",
        "models/vol/garch.py": "from execal.models.impact import models\n",             # area -> area
        "models/surface/__init__.py": "",
        "models/surface/svi.py": ("import plotly.graph_objects as go\n"                  # UI in models
                                  "def f():\n    from execal.models.surface import options\n"),   # lazy
        "models/impact/__init__.py": "",
        "models/impact/fit.py": "from .. import vol\nfrom models.io import load\n",       # relative + old
        "components/__init__.py": "",
        "components/tweak_panel.py": "from execal.components.diagnostics_panel import x\n"
                                     "from execal.components import layout\n",
        "components/layout.py": "from execal.components import tweak_panel\n",
    })
    found = "\n".join(violations(root))
    assert "core imports execal.models.data.schema" in found
    assert "data imports execal.models.impact.fit" in found
    assert "area 'vol' imports area 'impact'" in found
    assert "models/ imports the UI (plotly.graph_objects)" in found
    assert "imports 'execal.models.surface.options' inside a function" in found
    assert "area 'impact' imports area 'vol'" in found
    assert "old top-level name 'models.io'" in found
    assert "a panel imports execal.components.diagnostics_panel" in found
    assert "a panel imports execal.components.layout" in found
    assert "components/layout.py" not in found          # layout may import panels
    assert len(violations(root)) == 9


def test_lazy_third_party_import_is_allowed_only_if_listed(tmp_path):
    root = _tree(tmp_path, {"models/__init__.py": "", "models/vol/__init__.py": "",
                            "models/vol/garch.py": "def f():\n    import arch\n    import sklearn\n"})
    found = violations(root)
    assert found == ["models/vol/garch.py:3 imports 'sklearn' inside a function"]


def test_importing_the_calibrator_loads_no_other_area():
    import subprocess
    import sys
    code = ("import sys; from execal.models.impact.fit import Calibrator; "
            "print(sorted(m for m in sys.modules if m.startswith(('execal.models.vol', 'execal.models.surface', "
            "'arch', 'statsmodels'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"
