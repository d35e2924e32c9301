"""The layer cache: warm rebuilds come from the registry without extracting the base, and a change
invalidates exactly the steps that depend on it."""

from __future__ import annotations

import os
import re

import pytest

from tests.buildkit import executor, unpack, write_context

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (chroot)")]

DOCKERFILE = """\
FROM {base}
RUN echo first > /first
ARG FLAVOUR=plain
ARG UNUSED_BY_RUN=x
RUN echo "$FLAVOUR" > /flavour
COPY app.txt /app.txt
RUN cat /app.txt > /copy-of-app
"""


def steps(stderr: bytes) -> dict[str, str]:
    """STEP text -> 'cached' or 'built', from the executor's step lines."""
    out, current = {}, None
    for line in stderr.decode().splitlines():
        m = re.search(r"STEP \d+/\d+: (.*)$", line)
        if m:
            current = m.group(1)
            continue
        if current and ("from cache" in line or "done in" in line):
            out[current] = "cached" if "from cache" in line else "built"
    return out


# How a stage reports laying its root (builder/stage.py's progress line): extracted from the
# layer tars, or laid from the local layer store (the default outside in-place mode).
_LAID = re.compile(rb"(extracted|laid from the layer store) \d+ layer\(s\) of ")


def _laid_a_root(stderr: bytes) -> bool:
    return bool(_LAID.search(stderr))


def build(tmp_path, ctx, ref, *args, env=None):
    return executor("-c", str(ctx), "-d", ref, "--cache", *args, cwd=tmp_path, env=env)


def test_warm_rebuild_and_exact_invalidation(tmp_path, registry, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE.format(base=busybox_image), "app.txt": "v1"})
    ref = registry.ref("cache/app:1")
    cold = build(tmp_path, ctx, ref)
    assert set(steps(cold.stderr).values()) == {"built"}
    cold_image = unpack(f"docker://{ref}", tmp_path / "cold")

    warm = build(tmp_path, ctx, ref)
    assert set(steps(warm.stderr).values()) == {"cached"}, steps(warm.stderr)
    assert not _laid_a_root(warm.stderr), "a fully cached stage must not lay its base"
    warm_image = unpack(f"docker://{ref}", tmp_path / "warm")
    assert warm_image.manifest["layers"] == cold_image.manifest["layers"]
    assert (warm_image.rootfs / "copy-of-app").read_text() == "v1"

    # a fresh checkout (new mtimes, same content) still hits
    os.utime(ctx / "app.txt", (1, 1))
    assert set(steps(build(tmp_path, ctx, ref).stderr).values()) == {"cached"}

    # an unused build-arg changes nothing
    assert set(steps(build(tmp_path, ctx, ref, "--build-arg", "NOBODY=1").stderr).values()) == {"cached"}

    # a context file: COPY and what follows are rebuilt, the steps before are not
    (ctx / "app.txt").write_text("v2")
    got = steps(build(tmp_path, ctx, ref).stderr)
    assert got["RUN echo first > /first"] == "cached"
    assert got['RUN echo "$FLAVOUR" > /flavour'] == "cached"
    assert got["COPY app.txt /app.txt"] == "built" and got["RUN cat /app.txt > /copy-of-app"] == "built"
    assert (unpack(f"docker://{ref}", tmp_path / "v2").rootfs / "copy-of-app").read_text() == "v2"

    # a build arg used by a RUN: that RUN and what follows
    got = steps(build(tmp_path, ctx, ref, "--build-arg", "FLAVOUR=spicy").stderr)
    assert got["RUN echo first > /first"] == "cached"
    assert got['RUN echo "$FLAVOUR" > /flavour'] == "built"
    assert got["RUN cat /app.txt > /copy-of-app"] == "built"
    image = unpack(f"docker://{ref}", tmp_path / "spicy")
    assert (image.rootfs / "flavour").read_text() == "spicy\n"


def test_new_base_digest_invalidates_everything(tmp_path, registry, busybox_image):
    base_ctx = write_context(tmp_path / "base", {"Dockerfile": f"FROM {busybox_image}\nRUN echo 1 > /base-version\n"})
    base = registry.ref("cache/base:latest")
    executor("-c", str(base_ctx), "-d", base, cwd=tmp_path)
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE.format(base=base), "app.txt": "v1"})
    ref = registry.ref("cache/onbase:1")
    build(tmp_path, ctx, ref)
    assert set(steps(build(tmp_path, ctx, ref).stderr).values()) == {"cached"}
    (base_ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo 2 > /base-version\n")
    executor("-c", str(base_ctx), "-d", base, cwd=tmp_path)
    assert set(steps(build(tmp_path, ctx, ref).stderr).values()) == {"built"}


def test_local_layout_cache_and_no_push_cache(tmp_path, registry, busybox_image):
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE.format(base=busybox_image), "app.txt": "v1"})
    ref = registry.ref("cache/layout:1")
    cache = tmp_path / "cache-layout"
    build(tmp_path, ctx, ref, "--cache-repo", f"oci:{cache}", "--no-push-cache")
    assert not cache.exists(), "--no-push-cache must not write the cache"
    build(tmp_path, ctx, ref, "--cache-repo", f"oci:{cache}")
    assert (cache / "index.json").exists()
    warm = build(tmp_path, ctx, ref, "--cache-repo", f"oci:{cache}")
    assert set(steps(warm.stderr).values()) == {"cached"}


def test_multistage_copy_from_cached_stage(tmp_path, registry, busybox_image):
    dockerfile = (f"FROM {busybox_image} AS a\nRUN echo made-in-a > /a.txt\n"
                  f"FROM {busybox_image}\nCOPY --from=a /a.txt /b.txt\nRUN cat /b.txt > /c.txt\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    ref = registry.ref("cache/multi:1")
    build(tmp_path, ctx, ref)
    warm = build(tmp_path, ctx, ref)
    assert set(steps(warm.stderr).values()) == {"cached"}
    assert not _laid_a_root(warm.stderr)
    assert (unpack(f"docker://{ref}", tmp_path / "u").rootfs / "c.txt").read_text() == "made-in-a\n"


def test_warmer_fills_the_base_cache_used_without_pulling(tmp_path, registry, busybox_image):
    cache_dir = tmp_path / "basecache"
    df = tmp_path / "Dockerfile.warm"
    df.write_text(f"FROM {busybox_image}\nRUN true\n")
    proc = __import__("subprocess").run(
        ["python", "-m", "pybuildless", "warm", "--dockerfile", str(df), "--cache-dir", str(cache_dir)],
        capture_output=True, cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(__import__("tests.buildkit").buildkit.ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert busybox_image.encode() in proc.stdout
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_image}\nRUN echo hi > /hi\n"})
    out = build(tmp_path, ctx, registry.ref("cache/warmed:1"), "--cache-dir", str(cache_dir), "-v", "debug")
    assert b"from the cache in" in out.stderr
    assert b"pulled layer" not in out.stderr


def test_cached_workdir_keeps_the_config_and_later_keys(tmp_path, registry, busybox_image):
    dockerfile = f"FROM {busybox_image}\nWORKDIR /app\nCOPY app.txt .\nRUN cat app.txt > copy\n"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "app.txt": "v1"})
    ref = registry.ref("cache/workdir:1")
    build(tmp_path, ctx, ref)
    cold = unpack(f"docker://{ref}", tmp_path / "cold")
    warm_proc = build(tmp_path, ctx, ref)
    assert set(steps(warm_proc.stderr).values()) == {"cached"}, steps(warm_proc.stderr)
    assert not _laid_a_root(warm_proc.stderr)
    warm = unpack(f"docker://{ref}", tmp_path / "warm")
    assert warm.container["WorkingDir"] == "/app"
    assert warm.manifest["layers"] == cold.manifest["layers"]


MOUNTS_DOCKERFILE = """\
FROM {base} AS tools
RUN echo tool-v1 > /tool
FROM {base}
RUN --mount=type=bind,source=data.txt,target=/in/data.txt cat /in/data.txt > /from-bind
RUN --mount=type=cache,target=/var/cache/app echo cached-run >> /var/cache/app/log && echo done > /from-cache
RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-length
RUN --mount=type=bind,from=tools,source=/tool,target=/t cat /t > /from-stage
RUN --mount=type=tmpfs,target=/scratch echo tmp > /scratch/x && cat /scratch/x > /from-tmpfs
"""


def test_run_with_mounts_is_cached_by_what_the_mounts_bring(tmp_path, registry, busybox_image):
    """BuildKit's rule: a bind mount's content (or its stage) is part of the key; a cache
    mount's content and a secret's value are not."""
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": MOUNTS_DOCKERFILE.format(base=busybox_image),
                                           "data.txt": "one"})
    secret = tmp_path / "token"
    secret.write_text("s3cret-value")
    ref = registry.ref("cache/mounts:1")
    args = ("--secret", f"id=token,src={secret}", "--cache-dir", str(tmp_path / "cache-dir"))
    bind_step = "RUN --mount=type=bind,source=data.txt,target=/in/data.txt cat /in/data.txt > /from-bind"
    assert set(steps(build(tmp_path, ctx, ref, *args).stderr).values()) == {"built"}

    secret.write_text("another-secret-value-of-a-new-length")  # the value is not part of the key
    warm = build(tmp_path, ctx, ref, *args)
    assert set(steps(warm.stderr).values()) == {"cached"}, steps(warm.stderr)
    assert not _laid_a_root(warm.stderr)

    (ctx / "data.txt").write_text("two")  # the bound file: that RUN and every later one
    got = steps(build(tmp_path, ctx, ref, *args).stderr)
    assert got["RUN echo tool-v1 > /tool"] == "cached"
    assert got[bind_step] == "built"
    assert all(state == "built" for step, state in got.items() if step.startswith("RUN --mount") and step != bind_step)
    image = unpack(f"docker://{ref}", tmp_path / "two")
    assert (image.rootfs / "from-bind").read_text() == "two"
    assert (image.rootfs / "secret-length").read_text().strip() == str(len("another-secret-value-of-a-new-length"))
    assert (image.rootfs / "from-stage").read_text() == "tool-v1\n"
    assert not (image.rootfs / "var/cache/app/log").exists() and not (image.rootfs / "in").exists()

    # the stage a bind comes from: a new key there rebuilds the RUN that mounts it
    (ctx / "Dockerfile").write_text(MOUNTS_DOCKERFILE.format(base=busybox_image).replace("tool-v1", "tool-v2"))
    got = steps(build(tmp_path, ctx, ref, *args).stderr)
    assert got[bind_step] == "cached" and got["RUN echo tool-v2 > /tool"] == "built"
    assert got["RUN --mount=type=bind,from=tools,source=/tool,target=/t cat /t > /from-stage"] == "built"
    assert (unpack(f"docker://{ref}", tmp_path / "v2").rootfs / "from-stage").read_text() == "tool-v2\n"
