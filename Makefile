# classh: make demo | make test | make bench
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SSHD   := /usr/sbin/sshd

.PHONY: all venv sshd test demo bench clean

all: venv

$(PY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(PY)

venv: $(PY)

# A real OpenSSH server (and sudo, for the sudo tests) for the tests and the demo;
# installed when missing and we are root.
sshd:
	@if [ ! -x $(SSHD) ] || ! command -v ssh >/dev/null || \
	    { [ "$$(id -u)" = 0 ] && ! command -v sudo >/dev/null; }; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client sudo >/dev/null; \
	  else echo "make: $(SSHD) is missing: install openssh-server" >&2; exit 1; fi; \
	fi

test: venv sshd
	$(PY) -m pytest -q tests

demo: venv sshd
	$(PY) tests/fleet.py --hosts 50 -- bash tests/demo.sh

bench: venv sshd
	$(PY) bench/bench.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info lib/*.egg-info .pytest_cache
