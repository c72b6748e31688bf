"""classh.parallax, the drop-in for parallax 1.0.6, run side by side with the real package
(pip ``parallax==1.0.6``, in the ``test`` extra) on the loopback fleet: same results.

The real parallax reaches the fleet through ``opts.ssh_extra = ["-F", config]``
(its ssh and scp both take it); classh.parallax gets the very same options.
"""
import io
import os
import subprocess
import sys

import parallax as real  # the real package, 1.0.6
import pytest

import classh
from classh import parallax as ours
from conftest import ROOT
from fleet import Fleet

BOTH = [real, ours]


def options(mod, fleet, **values):
    """An Options of ``mod`` set up as a parallax user does: attributes after construction."""
    opts = mod.Options()
    opts.ssh_extra = ["-F", fleet.ssh_config]
    for name, value in values.items():
        setattr(opts, name, value)
    return opts


def shape(results):
    """Results with each Error as ("Error", msg, exit status, error output, str())."""
    return {host: ("Error", r.msg, r.task.exitstatus, r.task.errorbuffer, str(r))
            if isinstance(r, BaseException) else r for host, r in results.items()}


def both(call, fleet, *args, **values):
    """``call`` (a function name) with the same arguments through each package: (real, ours)."""
    return [shape(getattr(mod, call)(*args, options(mod, fleet, **values))) for mod in BOTH]


@pytest.fixture
def remote(remote_dir):
    """A directory the fleet's login account may write: the 'remote' side is this machine."""
    return remote_dir


def tree(path):
    """{relative path: file bytes or 'dir'} under ``path``."""
    found = {}
    for top, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.relpath(os.path.join(top, name), path)] = "dir"
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                found[os.path.relpath(os.path.join(top, name), path)] = f.read()
    return found


# -- the README's usage, side by side ---------------------------------------------------

def test_call_same_results_bytes_none_for_empty_and_errors(fleet):
    hosts = ["node1", ("node2", str(fleet.port)), ("node3", str(fleet.port), fleet.user), "refused",
             ["node4", None, fleet.user], "%s@node5" % fleet.user]
    real_results, our_results = both("call", fleet, hosts, "echo out; echo err >&2")
    assert real_results == our_results
    assert our_results["node1"] == (0, b"out\n", b"err\n")
    assert our_results["refused"][:3] == ("Error", "Exited with error code 255", 255)
    assert "Connection refused" in our_results["refused"][4]
    real_results, our_results = both("call", fleet, ["node1", "node2"], "exit 3")
    assert real_results == our_results == {h: ("Error", "Exited with error code 3", 3, b"",
                                               "Exited with error code 3") for h in ("node1", "node2")}
    real_results, our_results = both("call", fleet, ["node1"], "true")
    assert real_results == our_results == {"node1": (0, None, None)}
    real_results, our_results = both("call", fleet, ["node1"], "echo '{host}'")  # no classh {host}
    assert real_results == our_results == {"node1": (0, b"{host}\n", None)}


def test_run_gives_non_zero_exits_as_results_and_ssh_errors_as_errors(fleet):
    # parallax 1.0.6 has no run() (its README has): it is call() where the command exited 0.
    assert not hasattr(real, "run")
    results = ours.run(["node1", "node2", "refused"], "echo out; [ $PARALLAX_X ] || exit 4",
                       options(ours, fleet))
    assert results["node1"] == results["node2"] == (4, b"out\n", None)
    assert isinstance(results["refused"], ours.Error) and results["refused"].task.exitstatus == 255
    assert shape(ours.run(["node1"], "echo ok", options(ours, fleet))) == \
        shape(real.call(["node1"], "echo ok", options(real, fleet)))


def test_copy_puts_files_where_scp_does(fleet, remote, tmp_path):
    src = tmp_path / "app.conf"
    src.write_bytes(b"conf\n")
    folder = tmp_path / "static"
    (folder / "css").mkdir(parents=True)
    (folder / "css" / "a.css").write_bytes(b"a{}\n")
    (folder / "index.html").write_bytes(b"<p>\n")
    for mod in BOTH:
        dest = os.path.join(remote, mod.__name__)
        os.mkdir(dest)
        os.chmod(dest, 0o777)
        opts = options(mod, fleet)
        assert mod.copy(["node1"], str(src), dest + "/new.conf", opts) == {"node1": (0, None, None)}
        assert mod.copy(["node2"], str(src), dest, opts) == {"node2": (0, None, None)}  # into a dir
        assert mod.copy(["node1"], str(folder), dest + "/site", opts) == {"node1": (0, None, None)}
        assert mod.copy(["node1"], str(folder), dest + "/site", opts) == {"node1": (0, None, None)}
        outdir = str(tmp_path / ("out-" + mod.__name__))
        assert mod.copy(["node1"], str(src), dest, options(mod, fleet, outdir=outdir)) == {
            "node1": (0, outdir, None)}
        assert tree(outdir) == {"node1": b""}
    assert tree(os.path.join(remote, "parallax")) == tree(os.path.join(remote, "classh.parallax"))
    assert set(tree(os.path.join(remote, "classh.parallax"))) == {
        "new.conf", "app.conf", "site", "site/css", "site/css/a.css", "site/index.html",
        "site/static", "site/static/css", "site/static/css/a.css", "site/static/index.html"}


def test_copy_failures_are_errors_for_every_host(fleet, remote, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    real_results, our_results = both("copy", fleet, ["node1", "node2"], str(src),
                                     remote + "/no/such/dir/f")
    assert {h: r[:3] for h, r in real_results.items()} == {h: r[:3] for h, r in our_results.items()}
    for mod in BOTH:
        results = mod.copy(["node1", "node2"], str(tmp_path / "missing"), remote, options(mod, fleet))
        assert all(isinstance(r, mod.Error) and r.task.exitstatus == 255 for r in results.values())
        assert sorted(results) == ["node1", "node2"]
    real_results, our_results = both("copy", fleet, ["node1"], str(tmp_path), remote, recursive=False)
    assert real_results["node1"][:3] == our_results["node1"][:3] == ("Error", "Exited with error code 1", 1)
    assert b"not a regular file" in our_results["node1"][3]
    real_results, our_results = both("slurp", fleet, ["node1"], remote, "d", recursive=False,
                                     localdir=str(tmp_path / "local"))
    assert real_results["node1"][:3] == our_results["node1"][:3] == ("Error", "Exited with error code 1", 1)
    assert b"not a regular file" in our_results["node1"][3]


def test_slurp_4_tuple_and_dir_host_layout_like_scp(fleet, remote, tmp_path, monkeypatch):
    with open(os.path.join(remote, "log"), "w") as f:
        f.write("line\n")
    os.makedirs(os.path.join(remote, "etc", "sub"))
    with open(os.path.join(remote, "etc", "sub", "conf"), "w") as f:
        f.write("c\n")
    got = {}
    for mod in BOTH:
        base = tmp_path / mod.__name__
        opts = options(mod, fleet, localdir=str(base))
        results = mod.slurp(["node1", "node2", ("node3", str(fleet.port))], remote + "/log", "log", opts)
        assert results == {h: (0, None, None, os.path.join(str(base), h, "log"))
                           for h in ("node1", "node2", "node3")}
        mod.slurp(["node1"], remote + "/log", "log", opts)  # again: replaced
        mod.slurp(["node1"], remote + "/etc", "etc", opts)
        mod.slurp(["node1"], remote + "/etc", "etc", opts)  # again: scp puts it inside
        results = mod.slurp(["node1"], remote + "/missing", "m", opts)
        assert isinstance(results["node1"], mod.Error)
        assert results["node1"].task.exitstatus != 0
        got[mod] = tree(str(base))
        monkeypatch.chdir(tmp_path)  # no localdir: HOST/dst in the current directory
        opts.localdir = None
        assert mod.slurp(["node4"], remote + "/log", "here-" + mod.__name__, opts) == {
            "node4": (0, None, None, os.path.join("node4", "here-" + mod.__name__))}
        with pytest.raises(ValueError, match="relative"):
            mod.slurp(["node1"], remote + "/log", "/abs", opts)
    assert got[real] == got[ours]
    assert got[ours]["node1/etc/etc/sub/conf"] == b"c\n" and got[ours]["node3/log"] == b"line\n"
    assert (tmp_path / "node4" / "here-classh.parallax").read_bytes() == b"line\n"


# -- Options set after construction ---------------------------------------------------

def test_options_outdir_errdir_input_inline_limit(fleet, tmp_path):
    hosts = ["node1", ("node2", str(fleet.port), fleet.user)]
    results, dirs = [], []
    for mod in BOTH:
        out, err = tmp_path / mod.__name__ / "out", tmp_path / mod.__name__ / "err"
        opts = options(mod, fleet, limit=1, outdir=str(out), errdir=str(err), input_stream=b"12345",
                       default_user=fleet.user, ssh_options=["ConnectTimeout=7"])
        results.append(shape(mod.call(hosts, "wc -c; echo e >&2", opts)))
        dirs.append((tree(str(out)), tree(str(err))))
        opts.inline = False
        results.append(shape(mod.call(hosts, "echo quiet", opts)))
        opts.inline, opts.inline_stdout, opts.outdir, opts.errdir = False, True, None, None
        results.append(shape(mod.call(hosts, "echo o; echo e >&2", opts)))
    assert results[:3] == [swap(r, "/classh.parallax/", "/parallax/") for r in results[3:]]
    assert results[3]["node1"] == (0, b"5\n", b"e\n")
    assert results[4]["node1"] == (0, str(tmp_path / "classh.parallax" / "out"),
                                   str(tmp_path / "classh.parallax" / "err"))
    assert results[5]["node1"] == (0, b"o\n", None)
    assert dirs[0] == dirs[1] and dirs[1][0] == {"node1": b"5\n", "node2:%d" % fleet.port: b"5\n"}
    opts = options(ours, fleet, input_stream=io.BytesIO(b"123"))  # a file object: read once
    assert ours.call(hosts, "wc -c", opts) == {"node1": (0, b"3\n", None), "node2": (0, b"3\n", None)}


def swap(results, ours_text, real_text):
    """``results`` with ``ours_text`` in string values changed to ``real_text``."""
    return {host: tuple(v.replace(ours_text, real_text) if isinstance(v, str) else v for v in r)
            for host, r in results.items()}


def test_limit_caps_the_hosts_at_once(fleet, remote):
    lock = os.path.join(remote, "lock")
    command = "mkdir %s || exit 9; sleep 1; rmdir %s" % (lock, lock)
    hosts = ["node1", "node2", "node3"]
    real_results, our_results = both("call", fleet, hosts, command, limit=1)
    assert real_results == our_results == {h: (0, None, None) for h in hosts}
    results = ours.call(hosts, command, options(ours, fleet))  # 32 at once: they meet
    assert any(isinstance(r, ours.Error) and r.task.exitstatus == 9 for r in results.values())


def test_ssh_key_is_ssh_i(fleet, tmp_path):
    config = tmp_path / "config"
    config.write_text(open(fleet.ssh_config).read().replace(fleet.client_key, str(tmp_path / "none")))
    opts = ours.Options()
    opts.ssh_extra = ["-F", str(config)]
    assert isinstance(ours.call(["node1"], "echo in", opts)["node1"], ours.Error)
    opts.ssh_key = fleet.client_key
    assert ours.call(["node1"], "echo in", opts) == {"node1": (0, b"in\n", None)}


def test_timeout_is_an_error_named_timed_out(fleet):
    real_results, our_results = both("call", fleet, ["node1"], "sleep 6", timeout=1)
    # parallax adds ", Killed by signal 9" when it reaps the ssh it killed before it looks again
    assert real_results["node1"][1].startswith("Timed out")
    assert real_results["node1"][2] == our_results["node1"][2] == -9
    assert our_results["node1"][:2] == ("Error", "Timed out")
    result = ours.run(["node1"], "sleep 6", options(ours, fleet, timeout=1))["node1"]
    assert isinstance(result, ours.Error) and result.msg == "Timed out"


def test_parallax_env_reaches_a_server_that_accepts_it(tmp_path):
    with Fleet(str(tmp_path / "f"), hosts=3, extra_sshd_config="AcceptEnv PARALLAX_*\n") as envfleet:
        real_results, our_results = both("call", envfleet, ["node1", "node2", "node3"],
                                         'echo "$PARALLAX_HOST $PARALLAX_NODENUM"')
    assert real_results == our_results
    assert our_results["node3"] == (0, b"node3 2\n", None)


def test_options_from_parallax_environment(monkeypatch, tmp_path, fleet):
    monkeypatch.setenv("PARALLAX_PAR", "7")
    monkeypatch.setenv("PARALLAX_USER", fleet.user)
    monkeypatch.setenv("PARALLAX_OUTDIR", str(tmp_path / "out"))
    monkeypatch.setenv("PARALLAX_OPTIONS", "ConnectTimeout=4")
    monkeypatch.setenv("PARALLAX_VERBOSE", "1")
    hosts = tmp_path / "hosts"
    hosts.write_text("# the fleet\nnode1\n%s@node2:%d\n" % (fleet.user, fleet.port))
    monkeypatch.setenv("PARALLAX_HOSTS", str(hosts))
    opts = options(ours, fleet)
    assert (opts.limit, opts.default_user, opts.ssh_options, opts.verbose) == (
        7, fleet.user, ["ConnectTimeout=4"], True)
    assert ours.call(None, "echo hi", opts) == {"node1": (0, b"hi\n", None), "node2": (0, b"hi\n", None)}
    # parallax's file names: [user@]host[:port], the user left out when it is default_user
    assert tree(str(tmp_path / "out")) == {"node1": b"hi\n", "node2:%d" % fleet.port: b"hi\n"}


def test_askpass_asks_once_and_answers_ssh(fleet, tmp_path, monkeypatch):
    key = str(tmp_path / "key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-f", key], check=True)
    authorized = os.path.join(fleet.workdir, "authorized_keys")
    saved = open(authorized).read()
    config = tmp_path / "config"
    config.write_text(open(fleet.ssh_config).read().replace(fleet.client_key, key))
    asked = []
    monkeypatch.setattr(ours.getpass, "getpass", lambda prompt: asked.append(prompt) or "open sesame")
    try:
        with open(authorized, "a") as keys:
            keys.write(open(key + ".pub").read())
        opts = ours.Options()
        opts.ssh_extra = ["-F", str(config)]
        assert isinstance(ours.call(["node1"], "echo in", opts)["node1"], ours.Error)
        opts.askpass = True
        assert ours.call(["node1", "node2"], "echo in", opts) == {
            "node1": (0, b"in\n", None), "node2": (0, b"in\n", None)}
    finally:
        with open(authorized, "w") as keys:
            keys.write(saved)
    assert len(asked) == 1 and asked[0].startswith("Warning")


def test_unknown_option_refused_parallax_ones_kept():
    opts = ours.Options()
    for name in ("limit", "timeout", "askpass", "outdir", "errdir", "ssh_options", "ssh_extra",
                 "verbose", "quiet", "print_out", "inline", "inline_stdout", "input_stream",
                 "default_user", "recursive", "localdir", "warn_message"):
        assert getattr(opts, name) == getattr(real.Options, name)
        setattr(opts, name, getattr(opts, name))
    with pytest.raises(AttributeError, match="'limt'"):
        opts.limt = 3
    assert ours.Options().ssh_options is not opts.ssh_options
    assert issubclass(ours.Error, classh.Error)


def test_classh_options_refuse_an_attribute_that_is_no_option():
    opts = classh.Options()
    with pytest.raises(AttributeError, match="'limit'") as caught:
        opts.limit = 1
    assert isinstance(caught.value, classh.options.OptionError)
    assert "numjobs" in str(caught.value)
    opts.numjobs = 5
    assert opts.replace(timeout=3).numjobs == 5


def test_print_out_writes_host_lines_where_parallax_1_0_6_fails_on_python_3(fleet):
    for name in ("print_out", "quiet"):
        with pytest.raises(TypeError):  # the real one mixes bytes and text
            real.call(["node1"], "echo hi", options(real, fleet, **{name: True}))
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from classh import parallax\n"
              "opts = parallax.Options(); opts.ssh_extra = ['-F', %r]; opts.print_out = True\n"
              "opts.quiet = True\n"
              "result = parallax.call(['node1', 'node2'], 'echo hi; echo two', opts)\n"
              "sys.stderr.write(repr(sorted(result.items())))\n") % (os.path.join(ROOT, "lib"),
                                                                     fleet.ssh_config)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert sorted(proc.stdout.decode().splitlines()) == [
        "node1: hi", "node1: two", "node2: hi", "node2: two"]
    assert proc.stderr.decode() == repr([("node1", (0, b"hi\ntwo\n", None)),
                                         ("node2", (0, b"hi\ntwo\n", None))])


CTRL_C = """
import os, signal, sys, threading
sys.path.insert(0, %r)
if sys.argv[1] == "real":
    import parallax
else:
    from classh import parallax
opts = parallax.Options(); opts.ssh_extra = ["-F", sys.argv[2]]; opts.limit = 1
threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
results = parallax.call(["node1", "node2", "node3"], "sleep 8", opts)
print(sorted((host, r.msg, r.task.exitstatus) for host, r in results.items()))
""" % os.path.join(ROOT, "lib")


def test_ctrl_c_returns_interrupted_and_cancelled_errors_as_parallax_does(fleet):
    lines = []
    for which in ("real", "ours"):
        proc = subprocess.run([sys.executable, "-c", CTRL_C, which, fleet.ssh_config],
                              capture_output=True, timeout=60)
        lines.append(proc.stdout.decode().splitlines()[-1])
    assert lines[0] == lines[1] == repr([("node1", "Interrupted", None), ("node2", "Cancelled", None),
                                         ("node3", "Cancelled", None)])


README_SCRIPT = """
import os, sys
sys.path.insert(0, %r)
import parallax
config, port, user, remote = sys.argv[1:5]
hosts = ["node1", ("node2", port), ("node3", port, user), "refused"]
opts = parallax.Options()
opts.ssh_extra = ["-F", config]
opts.limit = 2


def show(results):
    return sorted((host, ("Error", r.msg, r.task.exitstatus) if isinstance(r, parallax.Error) else r)
                  for host, r in results.items())


print(show(parallax.call(hosts, "echo hi; echo there >&2", opts)))
print(show(parallax.call(hosts, "exit 1", opts)))
with open("f.txt", "w") as f:
    f.write("payload\\n")
print(show(parallax.copy(hosts, "f.txt", remote + "/f.txt", opts)))
opts.localdir = "got"
print(show(parallax.slurp(hosts, remote + "/f.txt", "f.txt", opts)))
for top, dirs, files in sorted(os.walk("got")):
    print(top, sorted(dirs), [(name, open(os.path.join(top, name)).read()) for name in sorted(files)])
""" % os.path.join(ROOT, "lib")


def test_a_parallax_script_gives_the_same_output_after_changing_its_import(fleet, remote, tmp_path):
    outputs = []
    for which, line in (("real", "import parallax"), ("ours", "from classh import parallax")):
        script = README_SCRIPT.replace("import parallax\n", line + "\n", 1)
        where = tmp_path / which
        where.mkdir()
        there = os.path.join(remote, which)
        os.mkdir(there)
        os.chmod(there, 0o777)
        proc = subprocess.run([sys.executable, "-c", script, fleet.ssh_config, str(fleet.port),
                               fleet.user, there], cwd=str(where), capture_output=True, timeout=120)
        outputs.append([line for line in proc.stdout.decode().splitlines() if line.startswith(("[", "got"))])
    assert outputs[0] == outputs[1]
    assert len(outputs[1]) == 4 + 5 and "b'hi\\n'" in outputs[1][0]
    assert "got/node3 [] [('f.txt', 'payload\\n')]" in outputs[1]
