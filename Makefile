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

# A real OpenSSH server (and sudo, for the sudo tests; zsh, csh and fish, as the
# login shells the remote watchdog is tested under) for the tests and the demo;
# installed when missing and we are root.
TOOLS    := ssh sudo zsh csh fish parallel
PACKAGES := openssh-server openssh-client sudo zsh csh fish parallel
sshd:
	@missing=; for tool in $(TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ ! -x $(SSHD) ] || { [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; }; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PACKAGES) >/dev/null; \
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
