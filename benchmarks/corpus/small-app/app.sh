#!/bin/sh
# A tiny service stand-in: reads its config and reports.
set -e
here=$(dirname "$0")
if [ "$1" = "--self-test" ]; then
  grep -q '^name=' "$here/config.ini" && echo "self-test ok"
  exit 0
fi
echo "serving $(grep '^name=' "$here/config.ini" | cut -d= -f2)"
