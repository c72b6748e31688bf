"""--slurp extraction never writes through a symlink (a host directory that is one, a link
swapped in after the start), and a write error on the temporary archive is a SinkError."""
import errno
import os
import tarfile

import pytest

from test_transfer import archive_of, feed_sink, tree

from classh.observers import SinkError
from classh.results import OK, Record
from classh.supervisor import Task
from classh.transfer import SlurpSink

ARCHIVE = archive_of([({"name": "d", "type": tarfile.DIRTYPE, "mode": 0o755}, None),
                      ({"name": "d/f", "mode": 0o644}, b"data")])


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_host_directory_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(elsewhere), str(dest / "node1"))
    fds = _open_fds()
    sink = SlurpSink(str(dest))
    record = feed_sink(sink, "node1", ARCHIVE)
    sink.close()
    assert record.status != OK and "node1" in record.error and "symlink" in record.error
    assert os.listdir(str(elsewhere)) == []
    assert os.path.islink(str(dest / "node1"))
    assert _open_fds() == fds


def test_host_directory_swapped_for_a_link_after_the_start_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    sink = SlurpSink(str(dest))
    task = Task(key="node1", argv=["ssh"])
    sink.started(task)
    sink.output(task, 1, ARCHIVE)
    os.rename(str(dest / "node1"), str(dest / "moved"))
    os.symlink(str(elsewhere), str(dest / "node1"))
    record = Record(host="node1", exitcode=0)
    sink.finished(task, record)
    sink.close()
    assert os.listdir(str(elsewhere)) == []
    assert record.status == OK, record.error
    assert tree(dest / "moved") == {"d": "dir/", "d/f": b"data"}


def test_planted_partial_link_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    dest = tmp_path / "dest"
    (dest / "node1").mkdir(parents=True)
    os.symlink(str(victim), str(dest / "node1" / ".classh-slurp.tar.partial"))
    sink = SlurpSink(str(dest))
    record = feed_sink(sink, "node1", ARCHIVE)
    sink.close()
    assert record.status == OK, record.error
    assert victim.read_bytes() == b"precious\n"
    assert tree(dest / "node1") == {"d": "dir/", "d/f": b"data"}


def test_disk_full_while_slurping_is_a_sink_error_for_the_host(full_fs):
    fds = _open_fds()
    sink = SlurpSink(full_fs)
    task = Task(key="node1", argv=["ssh"])
    sink.started(task)
    with pytest.raises(SinkError) as caught:
        for _ in range(64):
            sink.output(task, 1, b"\0" * 65536)
    assert caught.value.host == "node1" and caught.value.error.errno == errno.ENOSPC
    sink.output(task, 1, b"more")  # dropped: no second error
    record = Record(host="node1", exitcode=0)
    sink.finished(task, record)
    sink.close()
    assert record.status != OK and "No space left" in record.error
    assert os.listdir(full_fs) == []
    assert _open_fds() == fds
