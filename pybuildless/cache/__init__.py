"""Layer cache: one small image per cached build step, looked up by a content-derived key.

Key rule (see ``keys.chain``): a stage starts from its base image's manifest
digest (or, for ``FROM <stage>``, that stage's final key); each instruction
folds in what decides its result, after expansion:
- RUN: the argv, the environment it runs with (ENV plus declared ARGs, so an
  unused --build-arg changes nothing), USER, WORKDIR, SHELL and --network;
- COPY/ADD: the instruction after expansion, --chown/--chmod, the destination,
  and a content hash of exactly the files it copies after .dockerignore and
  --exclude (paths, types, modes, link targets and contents — never mtimes,
  owners or inode numbers, so a fresh git checkout hits);
  ``--from=<stage>`` uses that stage's final key instead of hashing its files;
- WORKDIR: the path and the user that would own created directories;
- metadata instructions: their text (cheap, and safe).
Each key also covers the previous key, so a change invalidates the step that
depends on it and every step after it, and nothing before.
"""
