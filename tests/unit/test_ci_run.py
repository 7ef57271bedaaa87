"""``.ci/run`` sets ``CI=true`` itself: the tests read it to fail, not skip, when a browser, a database or a tool
is missing, so CI must not depend on the runner's environment for it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_run_exports_ci_true_to_the_test_command(tmp_path: Path) -> None:
    # .ci/run as it is, in front of a stand-in for the test command that prints what it was given.
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "sip-lab").mkdir()
    (tmp_path / "sip-lab" / "test.sh").write_text('echo "CI=${CI-unset}"\n')
    env = {k: v for k, v in os.environ.items() if k != "CI"}

    done = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True,
                          timeout=30)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "CI=true"
