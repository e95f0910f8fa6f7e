"""The numerical core never imports the UI: models/ must not import dash or plotly."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"dash", "plotly", "dash_bootstrap_components", "dash_ag_grid", "components", "app"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_models_do_not_import_ui():
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN)
                 for p in (ROOT / "models").rglob("*.py") if _imports(p) & FORBIDDEN}
    assert offenders == {}


def test_checker_sees_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import plotly.graph_objects as go\nfrom dash import html\n")
    assert _imports(bad) & FORBIDDEN == {"plotly", "dash"}
