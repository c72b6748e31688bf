"""classh --copy, --slurp, --persist and --close through the command line, against a real sshd."""
import json
import os


from classh.persist import control_dir




def test_copy_to_every_host_with_progress_and_routers(classh, remote_dir, tmp_path):
    src = tmp_path / "app.conf"
    src.write_text("x=1\n")
    ok = tmp_path / "ok.txt"
    r = classh("--progress", "-S", str(ok), "--copy", str(src), "--dest",
               os.path.join(remote_dir, "{host}.conf"), "node[1-3],refused")
    assert r.rc == 4, r
    assert sorted(r.err.splitlines()[0]) == [".", ".", ".", "~"]
    for host in ("node1", "node2", "node3"):
        assert open(os.path.join(remote_dir, host + ".conf")).read() == "x=1\n"
    assert sorted(ok.read_text().split()) == ["node1", "node2", "node3"]


def test_copy_several_sources_and_a_directory(classh, remote_dir, tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "deep").write_text("deep\n")
    (tmp_path / "a").write_text("a\n")
    dest = os.path.join(remote_dir, "{host}")
    r = classh("-q", "--copy", str(tmp_path / "a"), "--copy", str(tmp_path / "d"), "--dest", dest, "node1,node2")
    assert r.rc == 0, r
    for host in ("node1", "node2"):
        assert open(os.path.join(remote_dir, host, "a")).read() == "a\n"
        assert open(os.path.join(remote_dir, host, "d", "e", "deep")).read() == "deep\n"


def test_copy_of_a_missing_file_is_refused_before_anything_runs(classh, tmp_path):
    r = classh("--copy", str(tmp_path / "nope"), "--dest", "/tmp/x", "node1")
    assert r.rc == 2 and "nope" in r.err and len(r.err.strip().splitlines()) == 1


def test_slurp_into_dir_host_basename_with_results(classh, remote_dir, tmp_path):
    for host in ("node1", "node2"):
        with open(os.path.join(remote_dir, host + ".log"), "wb") as f:
            f.write(b"log of %s\n\x00\xff" % host.encode())
    got = tmp_path / "got"
    results = tmp_path / "r"
    r = classh("--format", "json", "-o", str(results), "--slurp", os.path.join(remote_dir, "{host}.log"),
               "--dest", str(got), "node[1-3]")
    assert r.rc == 5, r  # node3 has no such file
    assert (got / "node1" / "node1.log").read_bytes() == b"log of node1\n\x00\xff"
    assert (got / "node2" / "node2.log").read_bytes() == b"log of node2\n\x00\xff"
    records = {d["host"]: d for d in map(json.loads, r.out.splitlines())}
    assert records["node1"]["stdout"] == ""  # the tar stream is never shown
    assert records["node3"]["exitcode"] != 0 and "node3.log" in records["node3"]["stderr"]
    assert (results / "node1.out").read_bytes() == b""
    assert (results / "node3.ret").read_text() != "0\n"


def test_persist_reuses_connections_and_close_ends_them(classh, fleet):
    directory = control_dir()
    first = classh("-q", "--persist=60", "true", "node[1-8]")
    assert first.rc == 0, first
    sockets = [n for n in os.listdir(directory) if "@node" in n and n.endswith(":%d" % fleet.port)]
    assert len(sockets) == 8, sockets
    assert os.stat(directory).st_mode & 0o777 == 0o700
    again = classh("--persist=60", "--format", "lines", "echo reused", "node[1-8]")
    assert again.rc == 0 and again.out.count("reused") == 8
    assert again.elapsed < first.elapsed
    closed = classh("--close", "node[1-8]")
    assert closed.rc == 0 and "closed 8 of 8" in closed.err, closed
    assert not [n for n in os.listdir(directory) if n in sockets]


def test_without_persist_nothing_persists(classh, fleet):
    directory = control_dir()
    classh("-q", "true", "node9")
    assert not [n for n in os.listdir(directory) if "@node9:" in n]


def test_stale_sockets_are_removed(classh, fleet):
    import socket
    directory = control_dir()
    stale = os.path.join(directory, "%s@node10:%d" % (fleet.user, fleet.port))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(stale)
    sock.close()  # a socket file nobody listens on: a dead master's leftover
    r = classh("-q", "--persist=60", "true", "node10")
    assert r.rc == 0, r
    assert classh("--close", "node10").rc == 0
    assert not os.path.exists(stale)


def test_close_with_nothing_open(classh):
    r = classh("--close", "node11")
    assert r.rc == 0 and "no open connections" in r.err
