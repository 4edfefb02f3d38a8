#!/usr/bin/env bash
# The build steps of the container image, in one place: the Dockerfile runs them, and CI runs
# them outside Docker (scripts/deploy-check.sh), so a change that breaks the image's build
# breaks CI even where no Docker daemon runs.
#
#   infra/deploy/build.sh web ROOT            npm ci + vite build; the dashboard into ROOT/usr/share/shoal/web
#   infra/deploy/build.sh binary PROFILE ROOT cargo build --locked --profile PROFILE --bin shoal;
#                                             the binary into ROOT/usr/local/bin/shoal
#
# ROOT is the file tree the runtime image is made of. The image uses PROFILE=release; CI builds
# the same command with PROFILE=dev (a release build of the workspace takes longer than CI's
# budget on a small machine; the profiles differ only in optimisation, see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/../.."

part=${1:-}
case "$part" in
web)
  root=${2:?usage: build.sh web ROOT}
  npm --prefix web ci --no-audit --no-fund
  npm --prefix web run build
  mkdir -p "$root/usr/share/shoal"
  rm -rf "$root/usr/share/shoal/web"
  cp -r web/dist "$root/usr/share/shoal/web"
  ;;
binary)
  profile=${2:?usage: build.sh binary PROFILE ROOT}
  root=${3:?usage: build.sh binary PROFILE ROOT}
  cargo build --locked --profile "$profile" --bin shoal
  dir=$profile
  [ "$profile" = dev ] && dir=debug
  target=${CARGO_TARGET_DIR:-target}
  install -D -m 0755 "$target/$dir/shoal" "$root/usr/local/bin/shoal"
  # The image's smoke test: the binary starts and knows its commands.
  "$root/usr/local/bin/shoal" --version
  "$root/usr/local/bin/shoal" schema >/dev/null
  ;;
*)
  echo "usage: $0 web ROOT | binary PROFILE ROOT" >&2
  exit 2
  ;;
esac
