#!/usr/bin/env bash
# Runs pgx's own test suite (the github.com/jackc/pgx/v5 version in go.mod, from the Go module
# cache) against pgtide, as issue 8 asks: a throwaway PostgreSQL primary from `pgtide local`,
# prepared the way pgx's CI prepares it (database pgx_test, testsetup/postgresql_setup.sql), pgtide
# in front of it in the given pool mode, and PGX_TEST_DATABASE pointing at pgtide.
#
#   scripts/pgx-suite.sh transaction|session [go test flags...]
#
# Runs every package of the pgx module (`go test ./...`, one package at a time: -p 1), prints
# passed/failed/skipped top-level tests per package and the failing test names, and writes the
# `go test -json` stream to $PGX_SUITE_OUT (default ./pgx-suite-<mode>.json). Exits 1 when a test
# failed. Optional environment:
#   PGX_SUITE_PKGS       packages to test, relative to the pgx module (default ./...)
#   PGX_SUITE_POOL_SIZE  pgtide's pool_size per (node, database, user) (default 20, pgtide's own)
#   PGX_SUITE_KEEP=1     keep the temporary directory (pgx copy, pgtide log) for inspection
# Only PGX_TEST_DATABASE and PGX_TEST_TCP_CONN_STRING are set (both to pgtide, as pgx's CI sets
# both to one server): pgx's TLS, unix-socket and per-auth-method tests skip themselves, since
# `pgtide local` trusts every client and speaks no TLS.
# Everything started here (pgtide, PostgreSQL, temporary directories) is stopped and removed on
# every exit path. Listens on loopback only.
set -euo pipefail

mode="${1:-}"
case "$mode" in
transaction | session) shift ;;
*)
  echo "usage: $0 transaction|session [go test flags...]" >&2
  exit 2
  ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${PGX_SUITE_OUT:-$PWD/pgx-suite-$mode.json}"
pkgs="${PGX_SUITE_PKGS:-./...}"
pool_size="${PGX_SUITE_POOL_SIZE:-20}"

work="$(mktemp -d "${TMPDIR:-/tmp}/pgx-suite-XXXXXX")"
pgtide_pid=""
test_pid=""
cluster_dir=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$test_pid" ]; then
    kill -TERM -- "-$test_pid" 2>/dev/null || true
    wait "$test_pid" 2>/dev/null || true
  fi
  if [ -n "$pgtide_pid" ] && kill -0 "$pgtide_pid" 2>/dev/null; then
    # SIGTERM: pgtide shuts down, then `pgtide local` stops PostgreSQL and removes its directory.
    kill -TERM "$pgtide_pid" 2>/dev/null || true
    for _ in $(seq 1 900); do kill -0 "$pgtide_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pgtide_pid" 2>/dev/null; then
      echo "pgx-suite: pgtide did not stop in 90s; killing it" >&2
      kill -KILL "$pgtide_pid" 2>/dev/null || true
    fi
    wait "$pgtide_pid" 2>/dev/null || true
  fi
  # Only if `pgtide local` could not clean up after itself (killed, crashed).
  if [ -n "$cluster_dir" ] && [ -d "$cluster_dir" ]; then
    local pg_ctl
    pg_ctl="$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)"
    for d in "$cluster_dir"/node*; do
      [ -f "$d/postmaster.pid" ] || continue
      if [ "$(id -u)" -eq 0 ]; then
        su postgres -s /bin/sh -c "'$pg_ctl' -D '$d' stop -m immediate" >/dev/null 2>&1 || true
      else
        "$pg_ctl" -D "$d" stop -m immediate >/dev/null 2>&1 || true
      fi
    done
    rm -rf "$cluster_dir"
  fi
  if [ "${PGX_SUITE_KEEP:-}" = 1 ]; then
    echo "pgx-suite: kept $work" >&2
  else
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$repo/scripts/ensure-postgres.sh"

pgx_version="$(cd "$repo" && go list -m -f '{{.Version}}' github.com/jackc/pgx/v5)"
pgx_src="$(cd "$repo" && go mod download -json github.com/jackc/pgx/v5 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$pgx_src" ] || { echo "pgx-suite: no module source for pgx $pgx_version" >&2; exit 1; }
echo "pgx-suite: pgx $pgx_version, pool mode $mode, packages $pkgs"

# The module cache is read-only; pgx's tests run from a writable copy.
cp -R "$pgx_src" "$work/pgx"
chmod -R u+w "$work/pgx"

(cd "$repo" && go build -o "$work/pgtide" ./cmd/pgtide)
"$work/pgtide" local --replicas 0 --pool-mode "$mode" --pool-size "$pool_size" \
  --listen 127.0.0.1:0 --writer-listen "" --reader-listen "" >"$work/local.out" 2>"$work/pgtide.log" &
pgtide_pid=$!

primary="" proxy_port=""
for _ in $(seq 1 600); do
  if [ -z "$cluster_dir" ]; then
    cluster_dir="$(sed -n 's/^ *primary .*(data \(.*\)\/node0)$/\1/p' "$work/local.out")"
  fi
  proxy_port="$(sed -n 's/^ *psql -h 127\.0\.0\.1 -p \([0-9]*\) .*# auto endpoint$/\1/p' "$work/local.out")"
  [ -n "$proxy_port" ] && break
  kill -0 "$pgtide_pid" 2>/dev/null || break
  sleep 0.1
done
primary="$(sed -n 's/^ *primary *127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/local.out")"
if [ -z "$proxy_port" ] || [ -z "$primary" ]; then
  echo "pgx-suite: pgtide local did not start:" >&2
  cat "$work/local.out" "$work/pgtide.log" >&2
  exit 1
fi

# pgx's CI: createdb pgx_test, then testsetup/postgresql_setup.sql in it (extensions hstore and
# ltree, the uint64 domain, the pgx_* roles). Done on the primary directly, not through pgtide.
psql_primary=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$primary" -U postgres)
"${psql_primary[@]}" -d postgres -c 'create database pgx_test' >/dev/null
"${psql_primary[@]}" -d pgx_test -f "$work/pgx/testsetup/postgresql_setup.sql" >/dev/null

echo "pgx-suite: PostgreSQL on 127.0.0.1:$primary, pgtide ($mode mode) on 127.0.0.1:$proxy_port"
# pgx's CI connects as pgx_md5 over TCP; pgtide local trusts every client, so the password is unused.
conn="host=127.0.0.1 port=$proxy_port user=pgx_md5 password=secret dbname=pgx_test sslmode=disable"
start=$(date +%s)
# In the background and in its own process group (set -m), so a signal to this script runs the
# trap at once (bash defers traps while a foreground command runs) and cleanup can end go test and
# the test binaries it started together.
set -m
(
  cd "$work/pgx"
  exec env -u PGX_TEST_UNIX_SOCKET_CONN_STRING \
    -u PGX_TEST_MD5_PASSWORD_CONN_STRING -u PGX_TEST_PLAIN_PASSWORD_CONN_STRING \
    -u PGX_TEST_SCRAM_PASSWORD_CONN_STRING -u PGX_TEST_SCRAM_PLUS_CONN_STRING \
    -u PGX_TEST_TLS_CONN_STRING -u PGX_TEST_TLS_CLIENT_CONN_STRING \
    -u PGX_TEST_PGBOUNCER_CONN_STRING -u PGX_SSL_PASSWORD \
    GOWORK=off GOFLAGS=-mod=mod GOTOOLCHAIN=local \
    PGX_TEST_DATABASE="$conn" PGX_TEST_TCP_CONN_STRING="$conn" \
    go test -count=1 -p 1 -timeout 30m -json "$@" $pkgs
) >"$out" &
test_pid=$!
set +m
test_rc=0
wait "$test_pid" || test_rc=$?
test_pid=""
echo "pgx-suite: go test took $(($(date +%s) - start))s (exit $test_rc); JSON in $out"

# Top-level tests only (subtests are counted inside their parent), per package.
awk '
  function field(name,   m) {
    if (match($0, "\"" name "\":\"[^\"]*\"")) {
      m = substr($0, RSTART, RLENGTH); sub("^\"" name "\":\"", "", m); sub("\"$", "", m); return m
    }
    return ""
  }
  {
    a = field("Action"); p = field("Package"); t = field("Test")
    sub("^github.com/jackc/pgx/v5/?", "", p); if (p == "") p = "pgx"
    if (a != "pass" && a != "fail" && a != "skip") next
    if (t == "") { if (a == "fail") pkgfail[p] = 1; seen[p] = 1; next }
    if (index(t, "/")) next
    seen[p] = 1; n[p, a]++; tot[a]++
    if (a == "fail") failed[++nf] = p "  " t
  }
  END {
    printf "%-28s %6s %6s %6s\n", "package", "pass", "fail", "skip"
    for (p in seen) list[++np] = p
    for (i = 1; i <= np; i++) for (j = i + 1; j <= np; j++) if (list[j] < list[i]) { x = list[i]; list[i] = list[j]; list[j] = x }
    for (i = 1; i <= np; i++) {
      p = list[i]
      if (n[p, "pass"] + n[p, "fail"] + n[p, "skip"] == 0 && !pkgfail[p]) continue
      printf "%-28s %6d %6d %6d%s\n", p, n[p, "pass"], n[p, "fail"], n[p, "skip"], pkgfail[p] ? "  FAIL" : ""
    }
    printf "%-28s %6d %6d %6d\n", "total", tot["pass"], tot["fail"], tot["skip"]
    if (nf) { print "\nfailed:"; for (i = 1; i <= nf; i++) print "  " failed[i] }
  }
' "$out"
exit "$test_rc"
