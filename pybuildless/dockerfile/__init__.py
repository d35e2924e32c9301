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

from pybuildless.lazyexports import lazy_exports

# Loaded on first use: the command line reads a Go duration (mounts) without loading the parser,
# and a build loads the modules it reaches, not every module named here.
_NAMES = {
    "args": "DEFAULT_PATH GlobalArgs StageEnv platform_args unused_build_args",
    "dockerignore": "IgnoreFileError PatternMatcher load_dockerignore read_ignore_patterns walk_context",
    "instructions": "DEFAULT_SHELL Add Arg Cmd CommandLine Copy Entrypoint Env Expose From Healthcheck HeredocSource "
                    "Instruction Label Maintainer Onbuild ResolvedRun Run Shell StopSignal User Volume Workdir",
    "lex": "WordError process_word process_words",
    "mounts": "Mount parse_mount",
    "parser": "Dockerfile Stage load_dockerfile parse_dockerfile parse_onbuild_triggers",
    "pathmatch": "glob_paths has_wildcards",
    "stages": "BuildPlan StageBase plan_build resolve_target",
    "syntax": "Directives Heredoc",
}
_EXPORTS = {name: module for module, names in _NAMES.items() for name in names.split()}
_EXPORTS["path_match"] = "pathmatch:match"
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
