#!/usr/bin/env bash
# Sourced by scripts/dev.sh and scripts/test.sh: jemalloc, the binary's allocator
# (docs/adr/0025-jemalloc.md), is compiled from C with make. Installs make and a C compiler as
# root with apt-get, or says what is missing.
if ! command -v make >/dev/null || ! command -v cc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "make or a C compiler is missing: installing them (apt-get install make gcc)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make gcc libc6-dev) >&2
  else
    echo "make or a C compiler is missing: apt-get install make gcc (as root)" >&2; exit 1
  fi
fi
