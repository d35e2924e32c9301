"""The Dockerfile front end: BuildKit-compatible parsing, word expansion and scoping.

Modules (each documents its rules):

- ``syntax``: directives, BOM, continuations, comments, heredoc bodies, flags, JSON form;
- ``lex``: ``process_word`` / ``process_words`` (variable expansion, quotes, escapes); ``words``:
  its error, result and word splitting;
- ``instructions``: one frozen dataclass per instruction, with ``expand(env)`` where BuildKit
  expands; ``Run.resolve(shell)`` turns heredoc RUNs into an argv (+ script file);
- ``parser``: ``parse_dockerfile``, ``load_dockerfile``, ``parse_onbuild_triggers``;
  ``instruction_parser``: one raw instruction to its typed instruction (flags, forms, counts);
- ``args``: ``GlobalArgs``, ``StageEnv``, ``platform_args``, ``unused_build_args``;
- ``stages``: ``plan_build`` / ``resolve_target`` (dependency graph, levels, pruning);
- ``mounts``: ``--mount`` specs; ``pathmatch``: Go ``filepath.Match``; ``dockerignore``:
  moby patternmatcher, ``load_dockerignore``, ``walk_context``.
"""

from pybuildless.dockerfile.args import (
    DEFAULT_PATH,
    GlobalArgs,
    StageEnv,
    platform_args,
    unused_build_args,
)
from pybuildless.dockerfile.dockerignore import (
    IgnoreFileError,
    PatternMatcher,
    load_dockerignore,
    read_ignore_patterns,
    walk_context,
)
from pybuildless.dockerfile.instructions import (
    DEFAULT_SHELL,
    Add,
    Arg,
    Cmd,
    CommandLine,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    HeredocSource,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    ResolvedRun,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from pybuildless.dockerfile.lex import WordError, process_word, process_words
from pybuildless.dockerfile.mounts import Mount, parse_mount
from pybuildless.dockerfile.parser import (
    Dockerfile,
    Stage,
    load_dockerfile,
    parse_dockerfile,
    parse_onbuild_triggers,
)
from pybuildless.dockerfile.pathmatch import glob_paths, has_wildcards, match as path_match
from pybuildless.dockerfile.stages import BuildPlan, StageBase, plan_build, resolve_target
from pybuildless.dockerfile.syntax import Directives, Heredoc

__all__ = [name for name in dir() if not name.startswith("_")]
