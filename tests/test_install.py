"""`pip install .` gives the classh command and its man page where `man` finds them."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def test_pip_install_puts_the_command_and_the_man_page_in_the_prefix(tmp_path):
    if shutil.which("man") is None:
        pytest.fail("man is not installed (apt-get install man-db)")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "*.egg-info", "build", "__pycache__", ".pytest_cache"))
    prefix = tmp_path / "prefix"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--prefix", str(prefix), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert os.access(prefix / "bin" / "classh", os.X_OK)
    page = prefix / "share" / "man" / "man1" / "classh.1"
    assert page.read_bytes() == open(os.path.join(ROOT, "man", "classh.1"), "rb").read()
    env = dict(os.environ, PATH="%s:%s" % (prefix / "bin", os.environ["PATH"]))
    env.pop("MANPATH", None)
    found = subprocess.run(["man", "-w", "classh"], env=env, capture_output=True, text=True)
    assert found.stdout.strip() == str(page), found
