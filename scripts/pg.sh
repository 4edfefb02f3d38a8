#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests and benchmarks.
#
#   scripts/pg.sh start DIR   initdb (if needed) and start a cluster with its data in DIR, on a
#                             free loopback port; prints the server URL (postgres://...)
#   scripts/pg.sh start DIR --ssl
#                             the same, with TLS on: a CA and a server certificate (for
#                             localhost and 127.0.0.1) are made with the openssl CLI under
#                             DIR/tls (ca.pem; other-ca.pem is a CA that signed nothing here);
#                             connect with ?sslmode=require or
#                             ?sslmode=verify-full&sslrootcert=DIR/tls/ca.pem
#   scripts/pg.sh stop DIR    stop it (fast shutdown)
#
# Postgres refuses to run as root, so when run as root the cluster is owned by the unprivileged
# user `shoal-pg` (created if missing). fsync stays on: numbers measured here are durable ones.
# pg_stat_statements is preloaded (the benchmarks count statements per task with it).
# Missing Postgres binaries are installed from Debian's packages when possible.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
ssl=${3:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start DIR [--ssl] | stop DIR" >&2; exit 2; }
[ -z "$ssl" ] || [ "$ssl" = --ssl ] || { echo "usage: $0 start DIR [--ssl] | stop DIR" >&2; exit 2; }

find_pgbin() {
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

PGBIN=$(find_pgbin || true)
if [ -z "$PGBIN" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Postgres 15 is missing: installing it from Debian's packages" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15) >&2
    PGBIN=$(find_pgbin)
  else
    echo "Postgres 15 is missing: install it with 'apt-get install postgresql-15' (as root)" >&2
    exit 1
  fi
fi

OS_USER=$(id -un)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$OS_USER" -- "$@"; else "$@"; fi; }

if [ "$(id -u)" = 0 ]; then
  OS_USER=shoal-pg
  id "$OS_USER" >/dev/null 2>&1 || useradd --system -M -s /usr/sbin/nologin "$OS_USER"
fi

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  data="$dir/data"
  # The unprivileged user must be able to reach the data directory; a clone inside a private
  # home directory may not let it, so fall back to a private directory under /tmp.
  if [ "$(id -u)" = 0 ] && ! runuser -u "$OS_USER" -- test -x "$dir"; then
    alt=$(mktemp -d /tmp/shoal-pg.XXXXXX)
    chmod 755 "$alt"
    ln -sfn "$alt" "$dir/external"
    data="$alt/data"
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown "$OS_USER" "$data"
    chmod 700 "$data"
    as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  tls_opts=""
  if [ -n "$ssl" ]; then
    command -v openssl >/dev/null || { echo "openssl is missing: apt-get install openssl" >&2; exit 1; }
    tls="$dir/tls"
    mkdir -p "$tls"
    if [ ! -s "$tls/server.pem" ]; then
      # A test CA, a server certificate it signs, and a second CA that signed nothing here.
      for ca in ca other-ca; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
          -keyout "$tls/$ca.key" -out "$tls/$ca.pem" -subj "/CN=Shoal test $ca" \
          -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
          2>/dev/null
      done
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tls/server.key" -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
      printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > "$tls/server.ext"
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 2 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
    fi
    # Postgres wants its key private to the user it runs as.
    cp "$tls/server.pem" "$tls/server.key" "$data/"
    [ "$(id -u)" = 0 ] && chown "$OS_USER" "$data/server.pem" "$data/server.key"
    chmod 600 "$data/server.key"
    tls_opts="-c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  sockdir="$data"
  as_pg "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-p $port -k $sockdir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300 -c shared_buffers=256MB -c shared_preload_libraries=pg_stat_statements $tls_opts" \
    start >/dev/null
  echo "$data" > "$dir/datadir"
  echo "postgres://postgres@127.0.0.1:$port/postgres" | tee "$dir/url"
  ;;
stop)
  [ -f "$dir/datadir" ] || exit 0
  data=$(cat "$dir/datadir")
  if as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
  ;;
*) echo "usage: $0 start DIR [--ssl] | stop DIR" >&2; exit 2 ;;
esac
