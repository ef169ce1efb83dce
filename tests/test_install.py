"""A regular install: a built wheel in a fresh virtual environment, used from another directory;
and the Makefile's own virtual environment on a system Python that refuses global installs."""
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """The project built as a wheel and installed, alone, into a new virtual environment.

    Its dependencies (torch and the rest, already installed for the tests) are reached through a
    path entry instead of a second multi-GB install; the project itself comes only from the wheel.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a clean copy: a build/ folder left in the checkout would leak stale files into it.
    src = tmp / "src"
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
         str(src)])
    wheel = next((tmp / "dist").glob("float_rt-*.whl"))
    (tmp / "names").write_text("\n".join(zipfile.ZipFile(wheel).namelist()))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = Path(run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
                    ).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         str(wheel)])
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(FLOAT_RT_CACHE=str(tmp / "cache"), PATH=f"{venv / 'bin'}:{env['PATH']}")
    return venv, site, elsewhere, env


CODE = ("float_rt", "streaming", "server", "export")        # the import packages, and only these
SOURCES = (*CODE, "configs", "client_demo", "pyproject.toml", "README.md")


def test_wheel_installs_four_import_packages_and_every_module(wheel_env):
    venv, site, _, _ = wheel_env
    listed = (venv.parent / "names").read_text().split("\n")
    top = {n.split("/")[0] for n in listed}
    assert top == {*CODE, "float_rt-0.1.0.dist-info"}, top        # no `configs` or `client_demo` in site-packages
    for package in CODE:                                           # every module of the checkout ships
        for py in (ROOT / package).rglob("*.py"):
            assert py.relative_to(ROOT).as_posix() in listed, f"{py.relative_to(ROOT)} is not in the wheel"
    for rel in ("float_rt/configs/small.yaml", "server/page/index.html", "server/page/avatars/astronaut.jpg"):
        assert rel in listed, rel


def test_wheel_holds_the_package_data(wheel_env):
    venv, site, elsewhere, env = wheel_env
    r = run([str(venv / "bin" / "python"), "-c",
             "import float_rt, server, json; from float_rt.resources import config_path;"
             "from server.config import packaged_page; "
             "print(json.dumps([float_rt.__file__, str(config_path('small')), str(packaged_page()), "
             "server.__file__]))"], cwd=elsewhere, env=env)
    paths = json.loads(r.stdout)
    assert all(p.startswith(str(site)) for p in paths), paths        # from the wheel, not the checkout
    for rel in ("float_rt/configs/float-512.yaml", "float_rt/configs/small.yaml", "float_rt/configs/stream.yaml",
                "float_rt/configs/server.yaml", "server/page/index.html", "server/page/app.js",
                "server/page/avatars/astronaut.jpg", "server/PROTOCOL.md"):
        assert (site / rel).is_file(), rel


def test_wheel_install_generates_from_another_directory(wheel_env, portrait_png, speech_wav):
    venv, _, elsewhere, env = wheel_env
    float_rt = str(venv / "bin" / "float-rt")
    run([float_rt, "demo-weights", "--config", "small", "--out", "w"], cwd=elsewhere, env=env)
    run([float_rt, "generate", "--config", "small", "--checkpoints", "w", "--ref", str(portrait_png),
         "--audio", str(speech_wav), "--out", "out.mp4", "--nfe", "3"], cwd=elsewhere, env=env)
    assert (elsewhere / "out.mp4").stat().st_size > 1000


@pytest.mark.parametrize("family,model", [(None, "small"), ("ditto", "ditto-tiny")])
def test_wheel_install_serves_the_demo_from_another_directory(wheel_env, family, model):
    """``serve --demo`` (``--config ditto``: that family's demo config) on recipe weights, said so."""
    venv, _, elsewhere, env = wheel_env
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(venv / "bin" / "float-rt"), "serve", "--demo", "--port", str(port),
                               *(["--config", family] if family else [])],
                              cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base, health = f"http://127.0.0.1:{port}", None
        end = time.monotonic() + 180
        while health is None and time.monotonic() < end:
            assert server.poll() is None, server.stdout.read()
            try:
                health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=2).read())
            except OSError:
                time.sleep(0.3)
        assert health == {"status": "ok", "sessions": 0, "max_sessions": 4, "model": model, "models": [model],
                          "demo_weights": True}
        page = urllib.request.urlopen(base + "/").read().decode()
        assert "<video" in page and "app.js" in page
        assert urllib.request.urlopen(base + "/avatars/astronaut.jpg").read()[:2] == b"\xff\xd8"
    finally:
        server.terminate()
        server.wait(30)
    out = server.stdout.read()
    assert f"FLOAT-RT serving {model} on http://127.0.0.1:{port}/" in out
    assert "[demo weights: output is noise, not a face]" in out       # the honest banner


def _externally_managed() -> str | None:
    """A system Python that refuses `pip install` (PEP 668), as on Debian 12."""
    for python in ("/usr/bin/python3",):
        if not Path(python).exists():
            continue
        stdlib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                                capture_output=True, text=True).stdout.strip()
        if (Path(stdlib) / "EXTERNALLY-MANAGED").is_file():
            return python
    return None


def test_make_install_uses_a_project_venv_on_an_externally_managed_python(tmp_path):
    python = _externally_managed()
    if python is None:
        pytest.skip("no externally managed system Python (PEP 668) on this machine")
    refused = subprocess.run([python, "-m", "pip", "install", "--dry-run", "six"], capture_output=True, text=True)
    assert "externally-managed-environment" in refused.stderr + refused.stdout
    # The project's Makefile and venv script over a one-module package (no large downloads).
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "scripts" / "make-venv.sh", tmp_path / "scripts" / "make-venv.sh")
    (tmp_path / "tinypkg.py").write_text("VALUE = 42\n")
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinypkg"\nversion = "0"\n[tool.setuptools]\npy-modules = ["tinypkg"]\n')
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    run(["make", "install", f"PYTHON={python}"], cwd=tmp_path, env=env)
    r = run([str(tmp_path / ".venv" / "bin" / "python"), "-c", "import sys, tinypkg; print(tinypkg.VALUE, sys.prefix)"],
            cwd=tmp_path, env=env)
    assert r.stdout.split() == ["42", str(tmp_path / ".venv")]
    # An active virtual environment is used as it is: no second one is made.
    shutil.rmtree(tmp_path / ".venv")
    other = tmp_path / "active"
    run([python, "-m", "venv", str(other)])
    run(["make", "install", f"PYTHON={python}"], cwd=tmp_path, env={**env, "VIRTUAL_ENV": str(other)})
    assert not (tmp_path / ".venv").exists()
    run([str(other / "bin" / "python"), "-c", "import tinypkg"], cwd=tmp_path, env=env)
