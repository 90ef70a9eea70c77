# Sourced by scripts/bench-engine and scripts/bench-controllers: a PostgreSQL server of the
# benchmark's own (Debian's binaries, initdb into a temporary directory, 127.0.0.1 and a free
# port, trust authentication, fsync on as installed) and the controller measurements.
# The caller sets $work (its own temporary directory, root's alone).

pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgwork=$(mktemp -d) # the server's own directory (its user must reach it; $work is root's alone)

# Starts the server; sets $port and $journal (the URL flotilla is given).
pg_start() {
  chown postgres: "$pgwork"
  "${pg[@]}" "$pgbin/initdb" -D "$pgwork/data" -U flotilla --auth=trust >/dev/null
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${pg[@]}" "$pgbin/pg_ctl" -D "$pgwork/data" -l "$pgwork/log" -w -o "-k $pgwork -p $port -c listen_addresses=127.0.0.1 -c max_connections=${1:-50}" start >/dev/null
  journal="postgresql://flotilla@127.0.0.1:$port/postgres"
}

# For the EXIT trap: stops the server by the pid in its postmaster.pid (fast shutdown) and
# waits up to 30 s for it to go, so its directory is not removed under it; then removes it.
pg_stop() {
  local pid
  if [ -f "$pgwork/data/postmaster.pid" ]; then
    pid=$(head -1 "$pgwork/data/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$pgwork"
}

# The journal database's committed transactions so far.
commits() { psql -h 127.0.0.1 -p "$port" -U flotilla -d postgres -tAc "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }

# Runs a command under /usr/bin/time into DIR (time, out, err); returns its exit status and
# says so with the end of its stderr when it fails.
measure_into() {
  local dir=$1 status=0
  shift
  /usr/bin/time -f '%e %M %U %S' -o "$dir/time" "$@" >"$dir/out" 2>"$dir/err" || status=$?
  [ "$status" = 0 ] || { echo "failed (exit $status):"; tail -5 "$dir/err"; }
  return "$status"
}

# What measure_into recorded in DIR: wall time, peak memory, CPU (user + system). (A failed
# command's time file starts with "Command exited with non-zero status N": the figures are
# its last line.)
measured() { tail -1 "$1/time" | awk '{ printf "%6.2f s  %6.1f MiB  cpu %5.2f s", $1, $2 / 1024, $3 + $4 }'; }

# One command measured into $work, its figures on one line.
measure() { measure_into "$work" "$@" || true; measured "$work"; }
