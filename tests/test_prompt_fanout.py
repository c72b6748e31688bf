"""Prompts at high fanout: every descriptor above 1024 must work (no select())."""
import os
import resource

import pytest

from conftest import TESTS, run_classh

PROMPTING_SSH = os.path.join(TESTS, "standin-prompt-ssh")


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 5000,
                    reason="the hard fd limit is too low for 600 ptys here")
def test_password_prompts_at_fanout_600(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret word\n")
    secret.chmod(0o600)
    r = run_classh(["--password-file", str(secret), "-n", "600", "--format", "json",
                    "echo {host}", "pw[1-600]"],
                   env={"CLASSH_SSH": PROMPTING_SSH, "STANDIN_EXPECT_FILE": str(secret)},
                   timeout=300)
    assert "internal error" not in r.err
    assert r.rc == 0, r
    assert r.out.count('"status": "ok"') == 600
    assert '"stdout": "pw600\\n"' in r.out


def test_a_wrong_answer_at_fanout_600_fails_every_host_as_an_ssh_error(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("right\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong\n")
    r = run_classh(["--password-file", str(wrong), "-n", "600", "--progress", "true", "pw[1-600]"],
                   env={"CLASSH_SSH": PROMPTING_SSH, "STANDIN_EXPECT_FILE": str(secret)},
                   timeout=300)
    assert "internal error" not in r.err
    assert r.rc == 4, r
    assert r.err.count("~") == 600
