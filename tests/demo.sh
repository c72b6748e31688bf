#!/usr/bin/env bash
# make demo: a tour of classh against a throwaway loopback fleet.
# Run by `python3 tests/fleet.py --hosts 50 -- bash tests/demo.sh`, which starts
# one real sshd standing in for node1..node50 (plus "refused", a closed port,
# and "silent", a host that never answers), sets CLASSH_SSH, and stops it all.
set -u
cd "$(dirname "$0")/.."
CLASSH=${CLASSH:-.venv/bin/classh}
[ -x "$CLASSH" ] || CLASSH=./classh
work=$(mktemp -d /tmp/classh-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

show() {
    printf '\n\033[1m$'; printf " %q" "$@"; printf '\033[0m\n'

    "$@"
    printf '\033[2m[exit status %s]\033[0m\n' "$?"
}

echo "A fleet of 50 hosts ($FLEET_HOSTS) on one loopback sshd, plus 'refused' and 'silent'."

# Ranges, {host} and the classic display.
show $CLASSH 'echo "hello from {host}"; uname -s' 'node[1-3]'

# Progress characters on 50 hosts plus the two broken ones: . ok, ~ ssh error.
show $CLASSH --progress --connect-timeout 3 true 'node[1-50],refused,silent'

# Gathered output: identical results folded into ranges.
show $CLASSH --format gather 'case {host} in node1[0-9]) echo teens;; *) echo other;; esac' 'node[1-30]'

# A per-host timeout: the slow hosts are killed and recorded (exit 3).
show $CLASSH -t 2 --format lines 'case {host} in node[12]) sleep 30;; esac; echo quick' 'node[1-4]'

# Remote failures are exit 5; results land in a directory for grep/awk.
show $CLASSH -q -o "$work/results" 'test $(echo {host} | tr -dc 0-9) -le 45' 'node[1-50]'
show sh -c "grep -L '^0\$' $work/results/*.ret | xargs -n1 basename | sed 's/\\.ret\$//' | tr '\\n' ' '; echo"

# Chained stages: failed hosts feed a second classh as they finish.
show $CLASSH -q -E "$CLASSH --format lines 'echo remediating' /dev/stdin" 'test {host} != node7' 'node[1-10]'

# Job mode: 12 jobs over 3 nodes x 2 slots (one ssh connection per node), a
# dead node dropped, output whole and in job order, GNU parallel's joblog.
seq 1 12 | sed 's/.*/echo "job & on $(hostname -s 2>\/dev\/null || echo node)"; sleep 0.2/' > "$work/jobs"
show $CLASSH -k --node 'node[1-3]*2' --node refused --connect-timeout 3 --job-file "$work/jobs" --joblog "$work/joblog"
show cut -f1,2,7 "$work/joblog"

# --on-each-node: once per distinct node, whatever its slots.
show $CLASSH --format lines --node 'node[1-2]*4' --on-each-node 'echo "slot count does not matter"'
