#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) and the psql and
# pgbench clients when this machine lacks them. With --pgbouncer it also installs PgBouncer and
# HAProxy (used by the benchmarks only); with --promtool, promtool from the prometheus package (the
# alert-rule tests in deploy/ run it); with --chromium, Chromium (the status page's tests drive it
# headless); with --jdbc, Java and the PostgreSQL JDBC driver (the secrets tests log in through it).
# Debian/Ubuntu only; other systems print what to install.
set -euo pipefail

want_pgbouncer=0
want_promtool=0
want_chromium=0
want_jdbc=0
for arg in "$@"; do
  case "$arg" in
    --pgbouncer) want_pgbouncer=1 ;;
    --promtool) want_promtool=1 ;;
    --chromium) want_chromium=1 ;;
    --jdbc) want_jdbc=1 ;;
    *) echo "usage: $0 [--pgbouncer] [--promtool] [--chromium] [--jdbc]" >&2; exit 2 ;;
  esac
done

have_server() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

pkgs=()
have_server || pkgs+=(postgresql)
command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
if [ "$want_pgbouncer" = 1 ] && ! command -v pgbouncer >/dev/null 2>&1; then pkgs+=(pgbouncer); fi
if [ "$want_pgbouncer" = 1 ] && ! command -v haproxy >/dev/null 2>&1; then pkgs+=(haproxy); fi
if [ "$want_promtool" = 1 ] && ! command -v promtool >/dev/null 2>&1; then pkgs+=(prometheus); fi
if [ "$want_chromium" = 1 ] && ! command -v chromium >/dev/null 2>&1; then pkgs+=(chromium); fi
if [ "$want_jdbc" = 1 ] && ! command -v java >/dev/null 2>&1; then pkgs+=(default-jdk-headless); fi
if [ "$want_jdbc" = 1 ] && [ ! -e /usr/share/java/postgresql.jar ]; then pkgs+=(libpostgresql-jdbc-java); fi
[ ${#pkgs[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "please install: ${pkgs[*]} (PostgreSQL server binaries are needed for the local cluster)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${pkgs[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
