"""The command line means what docopt-ng accepts: every spelling of every option.

Parse-level tests on ``classh.cli.parse`` first, then a few end-to-end runs
with the stand-in ssh and against the real loopback sshd.
"""
import os

import pytest

from classh import cli
from classh.cli import UsageError, parse
from classh.persist import DEFAULT_PERSIST


def given(argv):
    """The parsed arguments that were given (no None/False/[] defaults)."""
    return {k: v for k, v in parse(argv).items() if v not in (None, False, [], 0)}


# -x / --exclude: every spelling, once or twice, anywhere
@pytest.mark.parametrize("argv", [
    ["-x", "node2", "true", "node[1-3]"],
    ["-xnode2", "true", "node[1-3]"],
    ["-qx", "node2", "true", "node[1-3]"],
    ["-qxnode2", "true", "node[1-3]"],
    ["--exclude", "node2", "true", "node[1-3]"],
    ["--exclude=node2", "true", "node[1-3]"],
    ["--excl", "node2", "true", "node[1-3]"],
    ["--excl=node2", "true", "node[1-3]"],
    ["-q", "--excl", "node2", "-S", "-", "true", "node[1-3]"],
    ["true", "node[1-3]", "-x", "node2"],
    ["true", "-x", "node2", "node[1-3]"],
])
def test_exclude_every_spelling_gives_one_value(argv):
    args = parse(argv)
    assert args["--exclude"] == ["node2"]
    assert args["COMMAND"] == "true" and args["TARGET"] == ["node[1-3]"]


@pytest.mark.parametrize("argv", [
    ["-x", "a", "-x", "b", "true", "h"],
    ["-xa", "-xb", "true", "h"],
    ["-qxa", "--exclude=b", "true", "h"],
    ["--excl", "a", "true", "h", "-x", "b"],
])
def test_exclude_twice_keeps_both_values_once(argv):
    assert parse(argv)["--exclude"] == ["a", "b"]


@pytest.mark.parametrize("option,key,prefix", [("-O", "--ssh-option", "--ssh-o"),
                                               ("-S", "--success", "--succ"),
                                               ("-E", "--failure", "--failu"),
                                               ("-x", "--exclude", "--ex")])
def test_each_repeatable_option_keeps_its_values_in_every_spelling(option, key, prefix):
    argv = ["-q" + option[1:], "v1", option + "v2", key, "v3", prefix + "=v4", "true", "h"]
    assert parse(argv)[key] == ["v1", "v2", "v3", "v4"]


def test_stacked_quiet_and_failure_router():
    args = parse(["-qE", "F", "true", "h"])
    assert args["--quiet"] and args["--failure"] == ["F"]


# --copy: one source per --copy, any order; the host file stays a target
@pytest.mark.parametrize("argv,sources,targets", [
    (["--dest", "D", "--copy", "app.conf", "./hosts.txt"], ["app.conf"], ["./hosts.txt"]),
    (["--copy", "a", "-n", "5", "--dest", "D", "n1"], ["a"], ["n1"]),
    (["--copy=a", "--copy", "b", "--dest=D", "n1"], ["a", "b"], ["n1"]),
    (["n1", "--copy", "a", "--dest", "D", "--copy", "b"], ["a", "b"], ["n1"]),
    (["--cop", "a", "--de", "D", "n1"], ["a"], ["n1"]),
])
def test_copy_sources_and_targets_are_what_docopt_says(argv, sources, targets):
    args = parse(argv)
    assert args["--copy"] == sources and args["TARGET"] == targets and args["--dest"] == "D"
    assert args["COMMAND"] is None


@pytest.mark.parametrize("argv", [
    ["--copy", "a", "n1"],             # no --dest
    ["--dest", "D", "true", "n1"],     # --dest without a mode
    ["--slurp", "/r", "--copy", "a", "--dest", "D", "n1"],
    ["-i", "--copy", "a", "--dest", "D", "n1"],
    ["--list", "true", "--close"],
])
def test_modes_that_cannot_go_together_are_usage_errors(argv):
    with pytest.raises(UsageError):
        parse(argv)


# --sudo[=USER], --persist[=SECS]
@pytest.mark.parametrize("argv,user", [
    (["--sudo", "true", "h"], None),
    (["--sudo=bob", "true", "h"], "bob"),
    (["--sudo-user", "bob", "true", "h"], "bob"),
    (["--sudo-user=bob", "true", "h"], "bob"),
    (["true", "h", "--sudo=bob"], "bob"),
])
def test_sudo_spellings(argv, user):
    args = parse(argv)
    assert args["--sudo"] or args["--sudo-user"]
    assert args["--sudo-user"] == user
    assert args["COMMAND"] == "true" and args["TARGET"] == ["h"]


@pytest.mark.parametrize("argv,secs,command,targets", [
    (["--persist", "true", "h"], str(DEFAULT_PERSIST), "true", ["h"]),
    (["--persist=60", "true", "h"], "60", "true", ["h"]),
    (["--pers", "true", "h"], str(DEFAULT_PERSIST), "true", ["h"]),
    (["--pers=60", "true", "h"], "60", "true", ["h"]),
    (["true", "h", "--persist"], str(DEFAULT_PERSIST), "true", ["h"]),
])
def test_persist_spellings(argv, secs, command, targets):
    args = parse(argv)
    assert args["--persist"] == secs
    assert args["COMMAND"] == command and args["TARGET"] == targets


@pytest.mark.parametrize("argv,command,targets", [
    (["--", "--persist", "h"], "--persist", ["h"]),
    (["--", "--sudo=x", "h"], "--sudo=x", ["h"]),
    (["-l", "u", "--", "-x", "h"], "-x", ["h"]),
    (["-q", "--", "echo x", "h1"], "echo x", ["h1"]),
    (["-q", "echo x", "--", "h1"], "echo x", ["h1"]),
])
def test_double_dash_ends_the_options_and_is_no_target(argv, command, targets):
    args = parse(argv)
    assert args["COMMAND"] == command and args["TARGET"] == targets
    assert not args["--persist"] and not args["--sudo-user"] and not args["--exclude"]


def test_an_option_value_that_looks_like_an_option_is_a_value():
    args = parse(["--ssh", "--persist", "true", "h"])
    assert args["--ssh"] == "--persist" and args["--persist"] is None
    args = parse(["-S", "--sudo=x", "true", "h"])
    assert args["--success"] == ["--sudo=x"] and args["--sudo-user"] is None


# -i, --close, --list, --fold: every target is a TARGET
@pytest.mark.parametrize("mode", ["-i", "--interactive", "--close", "--list"])
def test_modes_without_command_take_every_word_as_target(mode):
    args = parse([mode, "-x", "n2", "n[1-3]", "m1"])
    assert args["COMMAND"] is None
    assert args["TARGET"] == ["n[1-3]", "m1"] and args["--exclude"] == ["n2"]


def test_fold_and_count():
    assert given(["--fold"]) == {"--fold": True}
    assert given(["--fold", "--count"]) == {"--fold": True, "--count": True}
    assert given(["--list", "--count", "n1"])["--count"]


def test_raw_is_an_option():
    assert parse(["--raw", "true", "h"])["--raw"]


@pytest.mark.parametrize("argv,text", [
    (["--no-such", "true", "h"], "--no-such"),
    (["-t"], "-t"),
    (["--quiet=yes", "true", "h"], "--quiet"),
    ([], "COMMAND"),
    (["--co", "a", "true", "h"], "--co"),
])
def test_bad_syntax_names_the_offending_text(argv, text):
    with pytest.raises(UsageError) as caught:
        parse(argv)
    assert text in str(caught.value) and "\n" not in str(caught.value)


# end to end: the real loopback sshd (classh) and the stand-in ssh (standin)


def hosts_of(out):
    return sorted(out.split())


@pytest.mark.parametrize("spelling", [["-qx", "node2"], ["-q", "--excl", "node2"],
                                      ["-qxnode2"], ["-q", "--exclude=node2"]])
def test_stacked_or_abbreviated_exclude_never_runs_on_the_excluded_host(classh, spelling):
    r = classh(*spelling, "-S", "-", "true", "node[1-3]")
    assert r.rc == 0, r
    assert hosts_of(r.out) == ["node1", "node3"]
    assert "2 hosts" in r.err


def test_stacked_exclude_with_the_standin(standin):
    r = standin("-qx", "n2", "-x", "n4", "-S", "-", "true", "n[1-5]")
    assert r.rc == 0 and hosts_of(r.out) == ["n1", "n3", "n5"], r


def test_stacked_failure_router_writes_its_file(classh, tmp_path):
    failed = tmp_path / "failed.txt"
    r = classh("-qE", str(failed), "[ {host} != node2 ]", "node[1-3]")
    assert r.rc == 5, r
    assert failed.read_text() == "node2\n"


def test_copy_then_a_host_file_takes_the_file_for_targets(classh, remote_dir, tmp_path):
    src = tmp_path / "app.conf"
    src.write_text("x=1\n")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("node1\nnode2\n")
    dest = os.path.join(remote_dir, "{host}.conf")
    r = classh("-q", "--dest", dest, "--copy", str(src), str(hosts))
    assert r.rc == 0, r
    for host in ("node1", "node2"):
        assert open(os.path.join(remote_dir, host + ".conf")).read() == "x=1\n"


def test_copy_with_an_option_between_copy_and_dest(standin, tmp_path):
    src = tmp_path / "a"
    src.write_text("a\n")
    r = standin("-q", "--copy", str(src), "-n", "5", "--dest", str(tmp_path / "{host}.got"), "h1,h2")
    assert r.rc == 0, r
    assert (tmp_path / "h1.got").read_text() == (tmp_path / "h2.got").read_text() == "a\n"


def test_sudo_user_and_persist_values_reach_the_options():
    args = cli.parse(["--sudo=root", "--persist", "-q", "true", "h"])
    options = cli.build_options(args, {})
    assert options.sudo and options.sudo_user == "root" and options.persist == 300
    assert cli.build_options(cli.parse(["--raw", "true", "h"]), {}).raw


def test_every_long_option_of_the_usage_is_in_the_man_page():
    """--help (the docopt usage) and man/classh.1 describe the same options."""
    import os
    import re

    from classh.cli import USAGE

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "man", "classh.1")) as fh:
        man = fh.read().replace("\\-", "-")
    options = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", USAGE, re.M))
    assert len(options) > 40
    missing = sorted(name for name in options if name not in man)
    assert missing == []


def test_the_man_synopsis_names_every_option_of_the_usage_lines():
    """Every option the Usage: lines of --help name is in the man page's SYNOPSIS."""
    import os
    import re

    from classh.cli import USAGE

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "man", "classh.1")) as fh:
        man = fh.read().replace("\\-", "-")
    synopsis = man[man.index(".SH SYNOPSIS"):man.index(".SH DESCRIPTION")]
    usage = USAGE[USAGE.index("Usage:"):USAGE.index("\n\n", USAGE.index("Usage:"))]
    named = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z-]*)", usage))
    assert {"--machines", "--input", "--init-file", "--node"} <= named
    assert sorted(name for name in named if name not in synopsis) == []
