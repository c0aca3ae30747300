"""A worker that drops to its tenant's uid can still import what is on its path.

A worker starts as root and drops to the tenant's uid itself (become_user.py), so the interpreter
may live where only root can pass (pyenv under /root, as on this machine). Before the fix, what the
worker had imported kept working, but any other module on its path (most of the standard
library, the packages of its site-packages) raised ModuleNotFoundError in tenant code. Real
setuid, in a real subprocess: only root can run it, so the test fails, and says why, elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

UID = GID = 299_999  # in the range the sandbox hands out, past any tenant a test registers

AS_TENANT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from fanout.dispatch import become_user
    become_user.become(int(sys.argv[2]), int(sys.argv[3]))
    assert os.getuid() == int(sys.argv[2])
    import only_root_passes
    print(only_root_passes.VALUE, only_root_passes.__name__)
    try:
        os.listdir(os.path.dirname(sys.argv[1]))
    except PermissionError:
        print("the private folder is still closed")
    """
)


@pytest.fixture
def root_only_lib(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("only root can change its uid: run this test as root")
    private = tmp_path / "private"
    lib = private / "lib"
    lib.mkdir(parents=True)
    (lib / "only_root_passes.py").write_text("VALUE = 42\n")
    (private / "secret").write_text("root's\n")
    lib.chmod(0o755)  # readable by anyone who can reach it ...
    private.chmod(0o700)  # ... which only root can
    return lib


def test_a_module_behind_a_folder_only_root_passes_is_importable_after_the_drop(root_only_lib: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", AS_TENANT, str(root_only_lib), str(UID), str(GID)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["42 only_root_passes", "the private folder is still closed"]
