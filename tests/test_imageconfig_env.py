"""The default PATH a stage gets when its base has none: appended after the base's variables.

BuildKit (moby/buildkit@73ed6825 frontend/dockerfile/dockerfile2llb/convert.go, "make sure that
PATH is always set") appends ``PATH=`` + the default path to the base config's Env when it has no
PATH, so the variables the base declared keep their positions and PATH comes last.
"""

from pybuildless.builder import imageconfig
from pybuildless.image.descriptor import Platform

BUILDKIT_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _base(env):
    return {"architecture": "amd64", "os": "linux", "config": {"Env": env}, "rootfs": {"type": "layers", "diff_ids": []}}


def test_missing_path_is_appended_after_the_base_variables():
    cfg = imageconfig.stage_config(_base(["FOO=1", "BAR=2"]), Platform())
    assert cfg["config"]["Env"] == ["FOO=1", "BAR=2", f"PATH={BUILDKIT_DEFAULT_PATH}"]


def test_a_base_path_is_kept_where_it_is():
    cfg = imageconfig.stage_config(_base(["FOO=1", "PATH=/opt/bin", "BAR=2"]), Platform())
    assert cfg["config"]["Env"] == ["FOO=1", "PATH=/opt/bin", "BAR=2"]


def test_a_base_without_env_gets_only_path():
    cfg = imageconfig.stage_config(_base(None), Platform())
    assert cfg["config"]["Env"] == [f"PATH={BUILDKIT_DEFAULT_PATH}"]
