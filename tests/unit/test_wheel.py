"""The built wheel holds everything `jiejing serve` and the admin commands need, and runs installed.

The wheel is built once (without build isolation, from a copy of the source tree so that neither build/ nor
the egg-info of the checkout is touched) and checked twice: by its file list, then installed into a fresh
virtualenv and run from a folder outside the checkout. That virtualenv gets its dependencies from the project's:
``venv --system-site-packages`` would only expose the base interpreter's site-packages, which do not hold
them, so a .pth file names the project's site-packages instead. It is a plain path line, so the project's
editable install (an import hook started by its own .pth file) stays inactive there: jiejing itself can only
come from the installed wheel, and the tests below check that it does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.migrate import head

REPO = Path(__file__).resolve().parents[2]
# What the build reads: pyproject.toml and the folders its packages come from.
BUILD_INPUTS = ("pyproject.toml", "core", "telephony", "sip-lab", "dialplan")
RULE_FILES = ("routing.toml", "keywords.toml", "surge.toml", "guidance.toml", "callback.toml")


def _source_files(folder: str, pattern: str = "*") -> list[str]:
    """The files under a folder of the source tree, as wheel paths (relative, with /)."""
    return sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob(pattern)
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    names: frozenset[str]
    venv: Path
    site: Path  # the installed wheel's site-packages
    cwd: Path  # a working directory outside the checkout
    etc: Path  # an empty Asterisk configuration folder (JIEJING_ASTERISK_ETC)
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=self.cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=60, check=False)

    def jiejing(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "jiejing"), *args, env=env)

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "python"), "-c", code)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    top = tmp_path_factory.mktemp("wheel")
    src, dist, venv, cwd, etc = (top / n for n in ("src", "dist", "venv", "elsewhere", "asterisk-etc"))
    src.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JIEJING_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
                           cwd=src, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("jiejing-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = frozenset(zf.namelist())

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    install = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
                              "-q", str(wheel)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True, timeout=60).stdout.strip())
    (site / "jiejing-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    cwd.mkdir()
    etc.mkdir()
    return Installed(wheel, names, venv, site, cwd, etc, {**env, "JIEJING_ASTERISK_ETC": str(etc),
                                                          "JIEJING_STATE_DIR": str(top / "state")})


# --- the file list --------------------------------------------------------------------------------------


def test_every_module_of_core_and_telephony_is_in_the_wheel(installed: Installed) -> None:
    modules = _source_files("core", "*.py") + _source_files("telephony", "*.py")
    assert "core/desk/__init__.py" in modules
    assert [m for m in modules if m not in installed.names] == []


def test_the_pages_and_the_migrations_are_in_the_wheel(installed: Installed) -> None:
    pages = _source_files("core/web/static")
    migrations = _source_files("core/migrations")
    assert "core/web/static/index.html" in pages
    assert "core/migrations/script.py.mako" in migrations
    assert any(m.startswith("core/migrations/versions/0001_") for m in migrations)
    assert [f for f in pages + migrations if f not in installed.names] == []


def test_the_deploy_files_are_in_the_wheel(installed: Installed) -> None:
    assert [f for f in _source_files("telephony/deploy") if f not in installed.names] == []


def test_the_dialplan_and_the_rule_files_are_in_the_wheel_and_the_lab_files_are_not(installed: Installed) -> None:
    confs = sorted(p.name for p in (REPO / "dialplan").glob("*.conf"))
    assert "extensions.conf" in confs and "manager.conf" in confs
    shipped = sorted(n.removeprefix("dialplan/") for n in installed.names
                     if n.startswith("dialplan/") and n.count("/") == 1)
    assert shipped == sorted([*confs, *RULE_FILES])
    assert [n for n in installed.names if n.startswith("dialplan/lab/")] == []
    assert [n for n in installed.names if n.rsplit("/", 1)[-1] in
            {p.name for p in (REPO / "dialplan" / "lab").glob("*")}] == []


# --- installed, run from outside the checkout ------------------------------------------------------------


def _inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_jiejing_comes_from_the_installed_wheel_with_its_data(installed: Installed) -> None:
    probe = installed.python(
        "import json, core, telephony, importlib.metadata as md\n"
        "from core.config import DEFAULT_RULES_DIR\n"
        "from core.migrate import MIGRATIONS, head\n"
        "from core.triage.desk import default_files\n"
        "from core.web.ops import STATIC\n"
        "print(json.dumps({'core': core.__file__, 'telephony': telephony.__file__, 'rules': str(DEFAULT_RULES_DIR),\n"
        "  'desk': [str(p) for p in default_files().values()], 'static': str(STATIC), 'migrations': str(MIGRATIONS),\n"
        "  'head': head(), 'dist': str(md.distribution('jiejing').locate_file(''))}))")
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for key in ("core", "telephony", "rules", "static", "migrations", "dist"):
        assert _inside(found[key], installed.site), (key, found[key])
    assert Path(found["rules"]) == installed.site / "dialplan"
    assert all(_inside(p, installed.site) and Path(p).is_file() for p in found["desk"])
    assert (Path(found["static"]) / "index.html").is_file()
    assert found["head"] == head()  # every revision shipped: the installed history ends where the source's does


def test_the_version_and_the_configuration_reference(installed: Installed) -> None:
    version = installed.jiejing("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "jiejing 0.1.0"
    reference = installed.jiejing("config", "reference")
    assert reference.returncode == 0, reference.stderr
    assert reference.stdout.startswith("# Configuration") and "JIEJING_ASTERISK_ETC" in reference.stdout
    assert str(REPO) not in reference.stdout


def test_rules_check_loads_the_installed_rule_files(installed: Installed) -> None:
    result = installed.jiejing("rules", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok: {', '.join(RULE_FILES)} load"
    # The same command reports a broken installed file: the one it reads.
    routing = installed.site / "dialplan" / "routing.toml"
    good = routing.read_bytes()
    try:
        routing.write_text("[[rule\n")
        broken = installed.jiejing("rules", "check")
    finally:
        routing.write_bytes(good)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "routing.toml" in broken.stdout


def test_dialplan_check_parses_the_installed_dialplan(installed: Installed) -> None:
    result = installed.jiejing("dialplan", "check", "--json")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["findings"], "an empty Asterisk folder leaves at least the site files' #tryinclude unmet"
    for finding in report["findings"]:
        assert _inside(finding["file"], installed.site / "dialplan") or _inside(finding["file"], installed.etc), \
            finding
    # Out of the lab, the AMI secrets the dialplan ships with are the only errors; a center sets its own.
    errors = [f for f in report["findings"] if f["level"] == "error"]
    assert {(Path(f["file"]).name, f["code"]) for f in errors} <= {("manager.conf", "ami-lab-secret")}, errors
    assert report["ok"] == (not errors) == (result.returncode == 0)
    manager = (installed.site / "dialplan" / "manager.conf").read_text(encoding="utf-8")
    if "#tryinclude manager_site.conf" in manager:
        site = installed.etc / "manager_site.conf"
        site.write_text("[jiejing](+)\nsecret = a-center-s-own-1\n\n[jiejing-admin](+)\nsecret = a-center-s-own-2\n")
        try:
            own = installed.jiejing("dialplan", "check")
        finally:
            site.unlink()
        assert own.returncode == 0, own.stdout + own.stderr
        assert str(REPO) not in own.stdout


def test_the_server_imports_no_lab_code(installed: Installed) -> None:
    result = installed.python("import sys, telephony.serve; print('siplab' in sys.modules, telephony.serve.__file__)")
    assert result.returncode == 0, result.stderr
    loaded, where = result.stdout.split()
    assert loaded == "False"
    assert _inside(where, installed.site)
