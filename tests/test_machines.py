"""Unit tests of classh.machines: kssh's machines file (--machines FILE). No sshd needed."""
import json

import pytest

from classh.jobs import MAX_SLOTS
from classh.machines import LEGACY_KEYS, Machine, MachinesError, parse_machines, read_machines
from classh.targets import Target, TargetError

# The kssh seed's example, its '#' comments removed (JSON has none).
SEED = """[{
	"hostname": "default",
	"username": "user",
	"connect_cmd": "ssh -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o ConnectTimeout=10 -o ConnectionAttempts=2",
	"poll_interval": 10,
	"poll_timeout": 2,
	"upload_timeout": 2,
	"download_timeout": 2,
	"init_timeout": 2
},
{
	"hostname": "worker1.example.com",
	"wd": "~/working_dir",
	"init_timeout": 10
},
{
	"hostname": "worker2.example.com"
}
]
"""
SEED_SSH = ("ssh -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "
            "-o ConnectTimeout=10 -o ConnectionAttempts=2")


def parse(entries, where="m.json"):
    """parse_machines of a Python list written as JSON."""
    return parse_machines(json.dumps(entries), where)


def error(entries_or_text, where="m.json"):
    """The message of the MachinesError that parsing raises."""
    text = entries_or_text if isinstance(entries_or_text, str) else json.dumps(entries_or_text)
    with pytest.raises(MachinesError) as info:
        parse_machines(text, where)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("machines file %s: " % where)
    return message


# -- the seed's example -------------------------------------------------------

def test_seed_example_applies_defaults_and_per_machine_overrides():
    machines, _ = parse_machines(SEED, "m.json")
    assert machines == [
        Machine(Target("worker1.example.com", "user"), 1, "~/working_dir", SEED_SSH, 10.0),
        Machine(Target("worker2.example.com", "user"), 1, None, SEED_SSH, 2.0),
    ]


def test_seed_legacy_keys_give_one_notice_each_naming_the_key():
    _, notices = parse_machines(SEED, "m.json")
    assert len(notices) == 4
    for key, notice in zip(["poll_interval", "poll_timeout", "upload_timeout", "download_timeout"],
                           notices):
        assert notice.startswith("machines file m.json: '%s' ignored: " % key)
        assert notice.endswith(LEGACY_KEYS[key])
        assert "\n" not in notice


def test_legacy_key_in_many_entries_gives_one_notice():
    entries = [{"hostname": "n%d" % i, "poll_interval": i} for i in range(1, 6)]
    entries.append({"hostname": "default", "poll_interval": None})
    machines, notices = parse(entries)
    assert len(machines) == 5
    assert notices == ["machines file m.json: 'poll_interval' ignored: " + LEGACY_KEYS["poll_interval"]]


def test_no_legacy_key_no_notice():
    assert parse([{"hostname": "a"}]) == ([Machine(Target("a"))], [])


def test_read_machines_reads_a_file(tmp_path):
    path = tmp_path / "machines.json"
    path.write_text(SEED)
    machines, notices = read_machines(str(path))
    assert [m.target.label for m in machines] == ["user@worker1.example.com", "user@worker2.example.com"]
    assert len(notices) == 4 and all(n.startswith("machines file %s: " % path) for n in notices)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"hostname": "a"}]).encode())
    assert read_machines(str(path))[0] == [Machine(Target("a"))]


# -- defaults, types, order ---------------------------------------------------

def test_default_entry_placed_last_still_applies():
    machines, _ = parse([{"hostname": "a"}, {"hostname": "b", "slots": 3},
                         {"hostname": "default", "slots": 2, "port": 2222, "wd": "/w"}])
    assert machines == [Machine(Target("a", None, 2222), 2, "/w"),
                        Machine(Target("b", None, 2222), 3, "/w")]


def test_every_key_is_carried():
    machines, _ = parse([{"hostname": "h", "username": "u", "port": 22, "connect_cmd": "ssh -F cfg",
                          "wd": "dir", "slots": MAX_SLOTS, "init_timeout": 0.5}])
    assert machines == [Machine(Target("h", "u", 22), MAX_SLOTS, "dir", "ssh -F cfg", 0.5)]
    assert isinstance(machines[0].init_timeout, float)


def test_machines_keep_file_order():
    names = ["zeta", "alpha", "mid", "beta"]
    machines, _ = parse([{"hostname": n} for n in names])
    assert [m.target.name for m in machines] == names


def test_hostname_pattern_is_expanded_with_the_entry_settings():
    machines, _ = parse([{"hostname": "default", "username": "u"},
                         {"hostname": "worker[1-3]", "slots": 2, "wd": "/tmp/w"},
                         {"hostname": "gpu[08-10/2]"}])
    assert machines == [Machine(Target("worker%d" % i, "u"), 2, "/tmp/w") for i in (1, 2, 3)] + [
        Machine(Target("gpu08", "u")), Machine(Target("gpu10", "u"))]


def test_machines_error_is_a_target_error():
    with pytest.raises(TargetError):
        parse_machines("[]", "m.json")


# -- errors ----------------------------------------------------------------

def test_json_syntax_error_names_line_and_column():
    message = error('[{"hostname": "a"}\n  {"hostname": "b"}]')
    assert "line 2, column 3" in message and "not valid JSON" in message


def test_comments_as_in_the_seed_are_a_syntax_error():
    message = error('[{"hostname": "default", # defaults\n "username": "u"}]')
    assert "line 1, column 26" in message  # the "#"


@pytest.mark.parametrize("text, kind", [('{"hostname": "a"}', "an object"), ('"a"', "a string"),
                                        ("3", "a number"), ("null", "null")])
def test_top_level_must_be_a_list(text, kind):
    assert "must be a JSON list of objects, not %s" % kind in error(text)


def test_entry_not_an_object_is_named_by_number():
    message = error([{"hostname": "a"}, ["b"]])
    assert "entry 2 must be an object, not a list" in message


def test_unknown_key_names_key_and_entry():
    message = error([{"hostname": "default"}, {"hostname": "a"}, {"hostname": "worker1", "slot": 2}])
    assert "entry 3 (worker1): unknown key 'slot'" in message


def test_unknown_key_in_the_default_entry_is_refused():
    assert "entry 1 (default): unknown key 'usr'" in error([{"hostname": "default", "usr": "x"},
                                                             {"hostname": "a"}])


def test_missing_hostname_names_the_entry():
    assert "entry 2: missing 'hostname'" in error([{"hostname": "a"}, {"wd": "/x"}])


@pytest.mark.parametrize("key, value, expected", [
    ("hostname", 7, "a string"),
    ("username", ["u"], "a string"),
    ("port", "22", "a whole number from 1 to 65535"),
    ("port", True, "a whole number from 1 to 65535"),
    ("port", 0, "a whole number from 1 to 65535"),
    ("port", 65536, "a whole number from 1 to 65535"),
    ("port", 22.0, "a whole number from 1 to 65535"),
    ("slots", 0, "a whole number from 1 to %d" % MAX_SLOTS),
    ("slots", MAX_SLOTS + 1, "a whole number from 1 to %d" % MAX_SLOTS),
    ("slots", False, "a whole number from 1 to %d" % MAX_SLOTS),
    ("slots", 2.5, "a whole number from 1 to %d" % MAX_SLOTS),
    ("wd", 3, "a string"),
    ("wd", "", "a non-empty directory name"),
    ("wd", "a\nb", "a non-empty directory name"),
    ("wd", "a\0b", "a non-empty directory name"),
    ("connect_cmd", ["ssh"], "a string"),
    ("connect_cmd", "   ", "a command line"),
    ("init_timeout", "10", "a number of seconds above 0"),
    ("init_timeout", True, "a number of seconds above 0"),
    ("init_timeout", 0, "a number of seconds above 0"),
    ("init_timeout", -1.5, "a number of seconds above 0"),
    ("init_timeout", None, "a number of seconds above 0"),
    ("init_timeout", 10**400, "a number of seconds above 0"),
])
def test_wrong_type_names_key_expected_and_value(key, value, expected):
    entry = {"hostname": "worker1", key: value}
    message = error([entry])
    assert "entry 1" in message and "%r must be %s" % (key, expected) in message
    shown = json.dumps(value)
    assert message.endswith(", not %s" % (shown if len(shown) <= 60 else shown[:57] + "..."))


def test_long_bad_value_is_shortened():
    message = error([{"hostname": "a", "wd": ["x" * 10000]}])
    assert len(message) < 200 and message.endswith("...")


@pytest.mark.parametrize("text", ["1e999", "-1e999", "Infinity", "NaN"])
def test_infinite_or_nan_init_timeout_is_refused(text):
    message = error('[{"hostname": "a", "init_timeout": %s}]' % text)
    assert "'init_timeout' must be a number of seconds" in message


def test_init_timeout_over_max_seconds_is_refused():
    from classh.options import MAX_SECONDS
    assert "'init_timeout'" in error([{"hostname": "a", "init_timeout": MAX_SECONDS + 1}])
    assert parse([{"hostname": "a", "init_timeout": MAX_SECONDS}])[0][0].init_timeout == MAX_SECONDS


@pytest.mark.parametrize("cmd, why", [("-oProxyCommand=x ssh", "starts with an option"),
                                      ('ssh -o "A=1', "cannot be split: No closing quotation")])
def test_bad_connect_cmd(cmd, why):
    assert "entry 1 (a): 'connect_cmd'" in error([{"hostname": "a", "connect_cmd": cmd}])
    assert why in error([{"hostname": "a", "connect_cmd": cmd}])


@pytest.mark.parametrize("hostname, why", [
    ("-oProxyCommand=x", "invalid character '='"),
    ("-oProxy", "host name '-oProxy' starts with '-'"),
    ("a b", "invalid character ' '"),
    ("a[1-3", "unclosed '['"),
    ("a]", "unmatched ']'"),
    ("", "'hostname' is empty"),
    ("u@h", "holds '@'"),
    ("h:22", "holds ':'"),
    ("a,b", "holds ','"),
])
def test_bad_hostname_is_refused_with_host_mode_message(hostname, why):
    message = error([{"hostname": hostname}])
    assert "entry 1" in message and why in message


def test_hostname_message_matches_host_mode():
    with pytest.raises(TargetError) as host_mode:
        Target("-oProxy")
    assert str(host_mode.value) in error([{"hostname": "-oProxy"}])


def test_bad_username_is_refused():
    assert "user '-x' starts with '-'" in error([{"hostname": "a", "username": "-x"}])


def test_two_default_entries():
    message = error([{"hostname": "default"}, {"hostname": "a"}, {"hostname": "default"}])
    assert "entry 3: a second 'default' entry (the first is entry 1)" in message


def test_same_machine_twice():
    message = error([{"hostname": "a"}, {"hostname": "b"}, {"hostname": "a"}])
    assert "entry 3 (a): machine a is already listed (entry 1)" in message


def test_same_machine_twice_through_a_pattern_and_a_default_user():
    message = error([{"hostname": "default", "username": "u"}, {"hostname": "n[1-3]"},
                     {"hostname": "n2"}])
    assert "entry 3 (n2): machine u@n2 is already listed (entry 2)" in message


def test_same_name_other_user_is_another_machine():
    machines, _ = parse([{"hostname": "a", "username": "x"}, {"hostname": "a", "username": "y"}])
    assert [m.target.label for m in machines] == ["x@a", "y@a"]


def test_key_twice_in_one_object():
    assert "key 'wd' given twice in one object" in error('[{"hostname": "a", "wd": "x", "wd": "y"}]')


@pytest.mark.parametrize("entries, why", [([], "no machine listed (the list is empty)"),
                                          ([{"hostname": "default", "username": "u"}],
                                           "no machine listed (only a 'default' entry)")])
def test_no_machine_at_all(entries, why):
    assert error(entries).endswith(why)


def test_pattern_over_max_hosts():
    with pytest.raises(MachinesError) as info:
        parse_machines(json.dumps([{"hostname": "n[1-100]"}]), "m.json", max_hosts=50)
    assert "entry 1 (n[1-100])" in str(info.value) and "over the limit of 50" in str(info.value)


def test_total_over_max_hosts():
    entries = [{"hostname": "a[1-30]"}, {"hostname": "b[1-30]"}]
    assert len(parse_machines(json.dumps(entries), "m", max_hosts=60)[0]) == 60
    with pytest.raises(MachinesError) as info:
        parse_machines(json.dumps(entries), "m", max_hosts=59)
    assert "entry 2 (b[1-30]): too many machines: over the limit of 59" in str(info.value)


def test_unreadable_file_names_file_and_reason(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(MachinesError) as info:
        read_machines(missing)
    assert str(info.value) == "machines file %s: cannot read it: No such file or directory" % missing
    with pytest.raises(MachinesError) as info:
        read_machines(str(tmp_path))
    assert "Is a directory" in str(info.value)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(b'[{"hostname": "caf\xe9"}]')
    with pytest.raises(MachinesError) as info:
        read_machines(str(path))
    assert str(info.value) == "machines file %s: not UTF-8 text (byte 0xe9 at offset 18)" % path


def test_file_name_with_a_line_break_stays_on_one_line():
    message = str(pytest.raises(MachinesError, parse_machines, "[]", "a\nb").value)
    assert "\n" not in message and "'a\\nb'" in message


def test_big_file_parses(tmp_path):
    entries = [{"hostname": "default", "slots": 2}] + [{"hostname": "n%d" % i} for i in range(100_000)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(entries))
    machines, _ = read_machines(str(path))
    assert len(machines) == 100_000 and machines[-1] == Machine(Target("n99999"), 2)


def test_deep_nesting_is_an_error_not_a_crash():
    text = '[{"hostname": "a", "poll_interval": ' + "[" * 100_000 + "]" * 100_000 + "}]"
    try:
        machines, notices = parse_machines(text, "m.json")
    except MachinesError as exc:
        assert "nested too deeply" in str(exc)
    else:  # a json built without the recursion limit parses it: a legacy value, ignored
        assert machines == [Machine(Target("a"))] and len(notices) == 1
