"""One import name: the wheel holds only `execal`, and an installed execal never imports a user's own
`models/` or `app.py` (issue 9, item 1).

The wheel is built offline from a copy of the checkout (`pip wheel --no-deps --no-build-isolation`;
setuptools needs the `wheel` package for that, listed in the `test` extra), installed into a fresh
virtual environment that sees this interpreter's site-packages for the dependencies, and run from a
directory that holds a `models/` package and an `app.py` which both raise when imported:
`import execal, execal.app` works and `execal serve` (the console script, gunicorn) serves execal's
page. The last test keeps pyproject's `packages` list in step with the folders.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

from browser_utils import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "raise RuntimeError('a user module named {name!r} was imported instead of execal\\'s')\n"


def _checkout_copy(dest: Path) -> Path:
    """The files git would commit (tracked and new, ignored ones left out), copied to `dest`."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    try:
        import wheel as _wheel  # noqa: F401  (setuptools' bdist_wheel needs it)
    except ImportError:
        pytest.fail("the 'wheel' package is needed to build execal's wheel offline: pip install '.[test]'")
    work = tmp_path_factory.mktemp("wheel")
    src = _checkout_copy(work / "src")
    out = work / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (built,) = out.glob("execal-*.whl")
    return built


def test_the_wheel_holds_only_execal(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and next(iter(dist_info)).startswith("execal-")
    assert top - dist_info == {"execal"}, sorted(top)
    inside = set(names)
    for needed in ("execal/__init__.py", "execal/app.py", "execal/cli.py", "execal/models/impact/fit.py",
                   "execal/models/core/report.py", "execal/components/layout.py",
                   "execal/sample_data/fills.csv", "execal/sample_data/options_chain.csv",
                   "execal/assets/execal.css"):
        assert needed in inside, needed
    assert not any(n.startswith(("execal/tests/", "execal/bench/", "execal/docs/")) for n in names)
    top_level = zipfile.ZipFile(wheel).read(f"{next(iter(dist_info))}/top_level.txt").decode().split()
    assert top_level == ["execal"]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A venv with the wheel installed (dependencies from this interpreter's site-packages) and a
    hostile working directory; returns {"python", "execal", "cwd", "env"}."""
    work = tmp_path_factory.mktemp("venv")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cwd = work / "user_project"
    (cwd / "models").mkdir(parents=True)
    (cwd / "models" / "__init__.py").write_text(HOSTILE.format(name="models"))
    (cwd / "app.py").write_text(HOSTILE.format(name="app"))
    (cwd / "cli.py").write_text(HOSTILE.format(name="cli"))
    (cwd / "components").mkdir()
    (cwd / "components" / "__init__.py").write_text(HOSTILE.format(name="components"))
    # the installed package only: no PYTHONPATH to a checkout, a private cache
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("EXECAL_")}
    env["EXECAL_CACHE_DIR"] = str(work / "cache")
    return {"python": python, "execal": venv / "bin" / "execal", "cwd": cwd, "env": env}


def test_import_from_a_directory_with_its_own_models_and_app(installed):
    code = ("import sys, execal, execal.app, execal.cli\n"
            "from execal.models.impact.fit import Calibrator\n"
            "assert 'models' not in sys.modules and 'app' not in sys.modules\n"
            "print(execal.__file__)")
    proc = subprocess.run([str(installed["python"]), "-c", code], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "site-packages" in proc.stdout and str(ROOT) not in proc.stdout


def test_execal_serve_serves_execal_from_that_directory(installed):
    port = free_port()
    log = installed["cwd"] / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(installed["execal"]), "serve", "--port", str(port), "--workers", "1"],
                                cwd=installed["cwd"], env=installed["env"], stdout=fh, stderr=subprocess.STDOUT)
    try:
        html, deadline = None, time.monotonic() + 120
        while html is None and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                    html = r.read().decode()
            except OSError:
                time.sleep(0.3)
        assert html is not None, log.read_text(errors="replace")
        assert "<title>execal</title>" in html and "_dash-config" in html
        assert "was imported instead of execal" not in log.read_text(errors="replace")
    finally:
        stop(proc)


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {"execal": "."}
    found = {"execal"}
    tops = ("models", "components", "live")     # the package folders at the root (tests, bench: not shipped)
    for top in tops:
        for init in (ROOT / top).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                found.add(".".join(["execal", *init.parent.relative_to(ROOT).parts]))
    assert found == listed, {"missing from pyproject": sorted(found - listed),
                             "listed without a folder": sorted(listed - found)}
    # and a folder of modules without an __init__.py would silently be left out of the wheel
    for top in tops:
        for folder in (ROOT / top).rglob("*"):
            if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py")):
                assert (folder / "__init__.py").exists(), f"{folder.relative_to(ROOT)} has modules but no __init__.py"
