#!/usr/bin/env bash
# Test servers for backtest-persist: PostgreSQL, MariaDB, Redis and FerretDB (MongoDB wire protocol),
# all on 127.0.0.1 only. Installs what is missing, starts what is stopped; safe to run again and again.
#
#   scripts/services.sh [up]   install + start everything (default)
#   scripts/services.sh env    print `export PERSIST_TEST_...=...` lines: eval "$(scripts/services.sh env)"
#   scripts/services.sh status one line per server
#   scripts/services.sh stop   stop the four servers cleanly
#
# Test-only credentials; see docs/services.md. Runs as root (Debian 12), no stdin needed.
# Optional environment: PERSIST_SERVICES_DIR (state: pid files, logs; default /var/lib/backtest-persist),
# PERSIST_SERVICES_TIMEOUT (seconds to wait for each server, default 60),
# PERSIST_FERRETDB_HANDLER (postgresql, the default, or sqlite), PERSIST_FERRETDB_BIN (prebuilt binary).
set -euo pipefail

readonly HOST=127.0.0.1
readonly PG_PORT=5432 MYSQL_PORT=3306 REDIS_PORT=6379 MONGO_PORT=27017 FERRETDB_DEBUG_PORT=8088
readonly TEST_DB=persist_test
readonly MAIN_USER=persist MAIN_PW=persist-test-pw
readonly APP_USER=persist_app APP_PW=persist-app-pw
readonly FERRET_PG_USER=ferretdb FERRET_PG_PW=ferretdb-test-pw FERRET_PG_DB=ferretdb
readonly FERRETDB_MODULE=github.com/FerretDB/FerretDB FERRETDB_VERSION=v1.24.2

STATE_DIR=${PERSIST_SERVICES_DIR:-/var/lib/backtest-persist}
TIMEOUT=${PERSIST_SERVICES_TIMEOUT:-60}
FERRETDB_HANDLER=${PERSIST_FERRETDB_HANDLER:-postgresql}
FERRETDB_PIDFILE=$STATE_DIR/ferretdb.pid
FERRETDB_LOG=$STATE_DIR/ferretdb.log
REDIS_LOG=$STATE_DIR/redis.log
MARIADB_LOG=/var/log/mysql/error.log
MARIADB_OUT=$STATE_DIR/mariadb.out
APT_LOG=$STATE_DIR/apt.log

say() { printf 'services: %s\n' "$*"; }
die() {
	printf 'services: ERROR: %s\n' "$*" >&2
	exit 1
}
show_log() { # show_log FILE: the tail of a server's log, on failure
	if [[ -s $1 ]]; then
		printf -- '--- last lines of %s ---\n' "$1" >&2
		tail -n 40 "$1" >&2
		printf -- '---\n' >&2
	fi
}
need_root() { [[ $EUID -eq 0 ]] || die "must run as root (installs Debian packages, starts system servers)"; }

# wait_until CMD...: retry CMD until it succeeds or TIMEOUT seconds pass.
wait_until() {
	local deadline=$((SECONDS + TIMEOUT))
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.3
	done
}

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

# Cleanup actions run on exit (a policy-rc.d we created, a half-done build folder).
CLEANUP=()
cleanup() {
	local c
	for c in "${CLEANUP[@]}"; do eval "$c"; done
}
trap cleanup EXIT

# ---------------------------------------------------------------- packages

pkg_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

ensure_packages() {
	local p missing=()
	# libmariadb-dev, pkg-config and gcc: to build mysqlclient, the optional MariaDB driver the tests also cover.
	for p in postgresql mariadb-server mariadb-client redis-server redis-tools libmariadb-dev pkg-config gcc; do
		pkg_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		say "packages: postgresql, mariadb, redis, mysqlclient build deps already installed"
		return
	fi
	say "packages: installing ${missing[*]} (log: $APT_LOG)"
	# Debian's maintainer scripts would start the servers; this script starts them itself.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		CLEANUP+=("rm -f /usr/sbin/policy-rc.d")
	fi
	export DEBIAN_FRONTEND=noninteractive
	: >"$APT_LOG"
	if ! apt-get update >>"$APT_LOG" 2>&1; then
		show_log "$APT_LOG"
		die "apt-get update failed"
	fi
	if ! apt-get install -y --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" >>"$APT_LOG" 2>&1; then
		show_log "$APT_LOG"
		die "apt-get install ${missing[*]} failed"
	fi
	say "packages: installed ${missing[*]}"
}

# ---------------------------------------------------------------- PostgreSQL

pg_version() { # highest major version configured under /etc/postgresql, else installed, else 15
	local d n best=""
	for d in /etc/postgresql/*/ /usr/lib/postgresql/*/; do
		n=${d%/}
		n=${n##*/}
		[[ $n =~ ^[0-9]+$ ]] || continue
		if [[ -z $best ]] || ((n > best)); then best=$n; fi
		# a configured cluster wins over a merely installed version
		[[ $d == /etc/* ]] && [[ -d /etc/postgresql/$n/main ]] && break
	done
	printf '%s\n' "${best:-15}"
}

pg_psql() { # psql as the postgres superuser over the Unix socket
	(cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@")
}

pg_login() { # pg_login USER PASSWORD DB: a password login over TCP
	PGPASSWORD=$2 PGCONNECT_TIMEOUT=5 psql -X -q -At -h "$HOST" -p "$PG_PORT" -U "$1" -d "$3" \
		-c 'select 1' >/dev/null 2>&1
}

pg_provisioned() {
	local ok
	ok=$(pg_psql -At <<-SQL 2>/dev/null
		SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MAIN_USER'
		                 AND rolcanlogin AND rolcreatedb AND NOT rolsuper)
		   AND EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER'
		                 AND rolcanlogin AND NOT rolcreatedb AND NOT rolsuper AND NOT rolcreaterole)
		   AND EXISTS (SELECT FROM pg_roles WHERE rolname = '$FERRET_PG_USER' AND rolcanlogin AND NOT rolsuper)
		   AND EXISTS (SELECT FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
		                 WHERE d.datname = '$TEST_DB' AND r.rolname = '$MAIN_USER'
		                   AND pg_encoding_to_char(d.encoding) = 'UTF8')
		   AND EXISTS (SELECT FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
		                 WHERE d.datname = '$FERRET_PG_DB' AND r.rolname = '$FERRET_PG_USER'
		                   AND pg_encoding_to_char(d.encoding) = 'UTF8');
	SQL
	) || return 1
	[[ $ok == t ]] &&
		pg_login "$MAIN_USER" "$MAIN_PW" "$TEST_DB" &&
		pg_login "$APP_USER" "$APP_PW" "$TEST_DB" &&
		pg_login "$FERRET_PG_USER" "$FERRET_PG_PW" "$FERRET_PG_DB"
}

pg_provision() {
	pg_psql <<-SQL
		SELECT 'CREATE ROLE $MAIN_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$MAIN_USER') \gexec
		ALTER ROLE $MAIN_USER LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$MAIN_PW';
		SELECT 'CREATE ROLE $APP_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER') \gexec
		ALTER ROLE $APP_USER LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$APP_PW';
		SELECT 'CREATE ROLE $FERRET_PG_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$FERRET_PG_USER') \gexec
		ALTER ROLE $FERRET_PG_USER LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$FERRET_PG_PW';
		SELECT 'CREATE DATABASE $TEST_DB OWNER $MAIN_USER TEMPLATE template0 ENCODING ''UTF8'' LOCALE ''C.UTF-8'''
		 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$TEST_DB') \gexec
		ALTER DATABASE $TEST_DB OWNER TO $MAIN_USER;
		GRANT CONNECT, TEMPORARY ON DATABASE $TEST_DB TO $APP_USER;
		SELECT 'CREATE DATABASE $FERRET_PG_DB OWNER $FERRET_PG_USER TEMPLATE template0 ENCODING ''UTF8'' LOCALE ''C.UTF-8'''
		 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$FERRET_PG_DB') \gexec
		ALTER DATABASE $FERRET_PG_DB OWNER TO $FERRET_PG_USER;
	SQL
}

pg_running() { pg_ctlcluster "$1" main status >/dev/null 2>&1; }

up_postgres() {
	local v log conf_dir drop want restart=""
	v=$(pg_version)
	log=/var/log/postgresql/postgresql-$v-main.log
	if [[ ! -d /etc/postgresql/$v/main ]]; then
		say "postgresql: creating cluster $v/main"
		pg_createcluster --locale=C.UTF-8 --port="$PG_PORT" "$v" main >/dev/null
	fi
	# Loopback only, on the standard port (conf.d is read after postgresql.conf, so it wins).
	conf_dir=/etc/postgresql/$v/main/conf.d
	drop=$conf_dir/backtest-persist.conf
	want=$(printf '%s\n' "# Written by backtest-persist scripts/services.sh: a test server, loopback only." \
		"listen_addresses = '$HOST'" "port = $PG_PORT")
	if [[ ! -f $drop ]] || [[ $(<"$drop") != "$want" ]]; then
		mkdir -p "$conf_dir"
		printf '%s\n' "$want" >"$drop"
		chown postgres:postgres "$drop"
		restart=1
	fi
	if pg_running "$v"; then
		if [[ -n $restart ]]; then
			pg_ctlcluster "$v" main restart 9>&- || {
				show_log "$log"
				die "postgresql $v: restart failed"
			}
			say "postgresql $v: restarted (listen_addresses = $HOST)"
		else
			say "postgresql $v: already running"
		fi
	else
		if ! timeout "$TIMEOUT" pg_ctlcluster "$v" main start 9>&-; then
			show_log "$log"
			die "postgresql $v: pg_ctlcluster start failed"
		fi
		say "postgresql $v: started"
	fi
	if ! wait_until pg_isready -q -h "$HOST" -p "$PG_PORT"; then
		show_log "$log"
		die "postgresql $v: not accepting connections on $HOST:$PG_PORT after ${TIMEOUT}s"
	fi
	if pg_provisioned; then
		say "postgresql $v: roles $MAIN_USER, $APP_USER, $FERRET_PG_USER and databases already in place"
	else
		pg_provision >/dev/null || die "postgresql $v: creating roles/databases failed"
		pg_provisioned || die "postgresql $v: roles created but password login over TCP fails (pg_hba.conf?)"
		say "postgresql $v: created/updated roles $MAIN_USER, $APP_USER, $FERRET_PG_USER, databases $TEST_DB, $FERRET_PG_DB"
	fi
}

stop_postgres() {
	local v
	v=$(pg_version)
	if [[ -d /etc/postgresql/$v/main ]] && pg_running "$v"; then
		pg_ctlcluster "$v" main stop
		say "postgresql $v: stopped"
	else
		say "postgresql $v: not running"
	fi
}

# ---------------------------------------------------------------- MariaDB

mariadb_alive() { mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1; }
mariadb_root() { mariadb --batch --skip-column-names "$@"; } # root over the Unix socket (unix_socket auth)
mariadb_login() { # mariadb_login USER PASSWORD [DB]: a password login over TCP
	MYSQL_PWD=$2 mariadb --connect-timeout=5 --protocol=TCP -h "$HOST" -P "$MYSQL_PORT" -u "$1" \
		--batch --skip-column-names -e 'select 1' ${3:+"$3"} >/dev/null 2>&1
}

mariadb_provisioned() {
	local got
	got=$(mariadb_root -e "
		SELECT CONCAT_WS(' ',
		  (SELECT COUNT(*) FROM mysql.db WHERE User = '$MAIN_USER' AND Host IN ('127.0.0.1', 'localhost')
		     AND Db IN ('$TEST_DB', 'persist\\\\_%') AND Create_priv = 'Y' AND Drop_priv = 'Y' AND Grant_priv = 'Y'),
		  (SELECT COUNT(*) FROM mysql.global_priv WHERE User = '$APP_USER'),
		  (SELECT COUNT(*) FROM mysql.global_priv WHERE User = ''),
		  (SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '$TEST_DB'))" \
		2>/dev/null) || return 1
	[[ $got == "4 1 0 utf8mb4" ]] &&
		mariadb_login "$MAIN_USER" "$MAIN_PW" "$TEST_DB" &&
		mariadb_login "$APP_USER" "$APP_PW"
}

mariadb_provision() {
	local h sql
	sql="CREATE DATABASE IF NOT EXISTS \`$TEST_DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
		ALTER DATABASE \`$TEST_DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
	for h in 127.0.0.1 localhost; do
		sql+="
		CREATE USER IF NOT EXISTS '$MAIN_USER'@'$h' IDENTIFIED BY '$MAIN_PW';
		ALTER USER '$MAIN_USER'@'$h' IDENTIFIED BY '$MAIN_PW';
		GRANT ALL PRIVILEGES ON \`$TEST_DB\`.* TO '$MAIN_USER'@'$h' WITH GRANT OPTION;
		GRANT ALL PRIVILEGES ON \`persist\\_%\`.* TO '$MAIN_USER'@'$h' WITH GRANT OPTION;"
	done
	# One account for the least-privilege user, so that `GRANT ... TO persist_app` (host '%') is what applies.
	sql+="
		CREATE USER IF NOT EXISTS '$APP_USER'@'%' IDENTIFIED BY '$APP_PW';
		ALTER USER '$APP_USER'@'%' IDENTIFIED BY '$APP_PW';"
	# Anonymous accounts would shadow the '%' account for local connections.
	while IFS=$'\t' read -r h; do
		[[ -n $h ]] && sql+="
		DROP USER ''@'$h';"
	done < <(mariadb_root -e "SELECT Host FROM mysql.global_priv WHERE User = ''")
	mariadb_root -e "$sql"
}

up_mariadb() {
	local drop want
	# Loopback only; log to a file (there is no journal without systemd). Read after Debian's 50-server.cnf.
	drop=/etc/mysql/mariadb.conf.d/90-backtest-persist.cnf
	want=$(printf '%s\n' "# Written by backtest-persist scripts/services.sh: a test server, loopback only." \
		"[mysqld]" "user = mysql" "bind-address = $HOST" "port = $MYSQL_PORT" "skip-name-resolve" \
		"character-set-server = utf8mb4" "log-error = $MARIADB_LOG")
	if [[ ! -f $drop ]] || [[ $(<"$drop") != "$want" ]]; then
		printf '%s\n' "$want" >"$drop"
		if mariadb_alive; then
			say "mariadb: config changed, restarting"
			stop_mariadb >/dev/null
		fi
	fi
	if mariadb_alive; then
		say "mariadb: already running"
	else
		install -d -o mysql -g mysql -m 0755 /run/mysqld
		install -d -o mysql -g adm -m 2750 /var/log/mysql
		if [[ ! -d /var/lib/mysql/mysql ]]; then
			say "mariadb: initialising /var/lib/mysql"
			mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >>"$MARIADB_OUT" 2>&1 9>&- || {
				show_log "$MARIADB_OUT"
				die "mariadb: mariadb-install-db failed"
			}
		fi
		# --oknodo + --exec: never a second mariadbd if one is already running (e.g. still starting up).
		start-stop-daemon --start --oknodo --background --output "$MARIADB_OUT" --exec /usr/sbin/mariadbd 9>&-
		if ! wait_until mariadb_alive; then
			show_log "$MARIADB_LOG"
			show_log "$MARIADB_OUT"
			die "mariadb: no answer to mariadb-admin ping after ${TIMEOUT}s"
		fi
		say "mariadb: started"
	fi
	if ! wait_until tcp_open "$MYSQL_PORT"; then
		show_log "$MARIADB_LOG"
		die "mariadb: running but not listening on $HOST:$MYSQL_PORT (check /etc/mysql for bind-address/port)"
	fi
	if mariadb_provisioned; then
		say "mariadb: database $TEST_DB, users $MAIN_USER, $APP_USER already in place"
	else
		mariadb_provision || die "mariadb: creating database/users failed"
		mariadb_provisioned || die "mariadb: users created but password login over TCP fails"
		say "mariadb: created/updated database $TEST_DB, users $MAIN_USER, $APP_USER"
	fi
}

stop_mariadb() {
	if mariadb_alive; then
		mariadb-admin shutdown
		wait_until eval '! mariadb_alive' || die "mariadb: still answering ${TIMEOUT}s after shutdown"
		say "mariadb: stopped"
	else
		say "mariadb: not running"
	fi
}

# ---------------------------------------------------------------- Redis

redis_alive() { [[ $(timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

up_redis() {
	if redis_alive; then
		say "redis: already running"
		return
	fi
	mkdir -p "$STATE_DIR/redis"
	if ! redis-server --daemonize yes --bind "$HOST" --port "$REDIS_PORT" --save "" --appendonly no \
		--dir "$STATE_DIR/redis" --pidfile "$STATE_DIR/redis.pid" --logfile "$REDIS_LOG" 9>&- ||
		! wait_until redis_alive; then
		show_log "$REDIS_LOG"
		die "redis: no PONG on $HOST:$REDIS_PORT after ${TIMEOUT}s"
	fi
	say "redis: started"
}

stop_redis() {
	if redis_alive; then
		redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
		wait_until eval '! redis_alive' || die "redis: still answering ${TIMEOUT}s after shutdown"
		say "redis: stopped"
	else
		say "redis: not running"
	fi
}

# ---------------------------------------------------------------- FerretDB

find_go() {
	if command -v go >/dev/null 2>&1; then
		command -v go
	elif [[ -x /usr/local/go/bin/go ]]; then
		printf '%s\n' /usr/local/go/bin/go
	else
		return 1
	fi
}

ferretdb_bin() {
	local go dir
	if [[ -n ${PERSIST_FERRETDB_BIN:-} ]]; then
		printf '%s\n' "$PERSIST_FERRETDB_BIN"
	elif go=$(find_go); then
		dir=$("$go" env GOBIN)
		[[ -n $dir ]] || dir=$("$go" env GOPATH | cut -d: -f1)/bin
		printf '%s\n' "$dir/ferretdb"
	else
		printf '%s\n' "${HOME:-/root}/go/bin/ferretdb"
	fi
}

ferretdb_usable() { # (no `| grep -q`: with pipefail, an early grep exit would SIGPIPE ferretdb and fail)
	local out
	[[ -x $1 ]] && out=$("$1" --version 2>/dev/null) && [[ $'\n'$out$'\n' == *$'\n'"version: $FERRETDB_VERSION"$'\n'* ]]
}

go_proxy_only() { # the configured GOPROXY list without "direct"/"off": downloads come from the module proxy only
	local list=$1 item out=""
	local IFS=',|'
	for item in $list; do
		case $item in direct | off | "") ;; *) out+=${out:+,}$item ;; esac
	done
	printf '%s\n' "${out:-https://proxy.golang.org}"
}

build_ferretdb() { # build_ferretdb TARGET
	local target=$1 go proxy dir src log=$STATE_DIR/ferretdb-build.log
	go=$(find_go) || die "ferretdb: no binary at $target and no Go toolchain to build it (need Go >= 1.24)"
	proxy=$(go_proxy_only "$("$go" env GOPROXY)")
	say "ferretdb: building $FERRETDB_VERSION with $("$go" env GOVERSION) into $target (a few minutes; log: $log)"
	# Only the module proxy: no toolchain download, no direct VCS fetch, no private-module bypass.
	export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOPROXY=$proxy GONOPROXY='' GOPRIVATE='' GONOSUMDB='' \
		GOINSECURE='' GOWORK=off CGO_ENABLED=0
	: >"$log"
	# `go install module@version` gives a binary that panics at start: the module lacks the generated
	# build/version/version.txt. So build from a copy of the module with that file written.
	dir=$(cd "$STATE_DIR" && "$go" mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION" 2>>"$log" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || true
	if [[ -z $dir || ! -d $dir ]]; then
		show_log "$log"
		die "ferretdb: could not download $FERRETDB_MODULE@$FERRETDB_VERSION from $proxy"
	fi
	src=$(mktemp -d "$STATE_DIR/ferretdb-src.XXXXXX")
	CLEANUP+=("rm -rf '$src'")
	cp -R "$dir/." "$src/"
	chmod -R u+w "$src"
	printf '%s\n' "$FERRETDB_VERSION" >"$src/build/version/version.txt"
	mkdir -p "$(dirname "$target")"
	if ! (cd "$src" && "$go" build -trimpath -o "$target.tmp" ./cmd/ferretdb) >>"$log" 2>&1; then
		show_log "$log"
		die "ferretdb: go build failed"
	fi
	mv -f "$target.tmp" "$target"
	rm -rf "$src"
	ferretdb_usable "$target" || die "ferretdb: built $target but \`$target --version\` does not say $FERRETDB_VERSION"
	say "ferretdb: built $target"
}

ferretdb_pid() { # the PID from our pid file, if that process is still a ferretdb
	local pid exe
	[[ -r $FERRETDB_PIDFILE ]] || return 1
	pid=$(<"$FERRETDB_PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ ${exe##*/} == ferretdb* ]] || return 1
	printf '%s\n' "$pid"
}

mongo_ping() { # a real ping when pymongo is importable, else a TCP connect
	tcp_open "$MONGO_PORT" || return 1
	local rc=0
	timeout 10 python3 - "$HOST" "$MONGO_PORT" >/dev/null 2>&1 <<-'PY' || rc=$?
		import sys
		try:
		    import pymongo
		except ImportError:
		    sys.exit(3)
		c = pymongo.MongoClient(sys.argv[1], int(sys.argv[2]), serverSelectionTimeoutMS=3000)
		c.admin.command("ping")
	PY
	((rc == 0 || rc == 3 || rc == 127))
}

up_ferretdb() {
	local bin pid args
	bin=$(ferretdb_bin)
	ferretdb_usable "$bin" || build_ferretdb "$bin"
	if mongo_ping; then
		if pid=$(ferretdb_pid); then
			say "ferretdb: already running (pid $pid)"
		else
			say "ferretdb: something already answers on $HOST:$MONGO_PORT (not started by this script); left alone"
		fi
		return
	fi
	if pid=$(ferretdb_pid); then
		say "ferretdb: pid $pid is running but not answering yet; waiting"
	else
		case $FERRETDB_HANDLER in
		postgresql)
			args=(--handler=postgresql
				"--postgresql-url=postgres://$FERRET_PG_USER:$FERRET_PG_PW@$HOST:$PG_PORT/$FERRET_PG_DB") ;;
		sqlite)
			mkdir -p /var/lib/ferretdb
			args=(--handler=sqlite --sqlite-url=file:/var/lib/ferretdb/) ;;
		*) die "PERSIST_FERRETDB_HANDLER must be postgresql or sqlite, not '$FERRETDB_HANDLER'" ;;
		esac
		# --telemetry=disable is mandatory: FerretDB must never call its makers' server.
		args+=("--listen-addr=$HOST:$MONGO_PORT" "--debug-addr=$HOST:$FERRETDB_DEBUG_PORT"
			--telemetry=disable --log-level=warn "--state-dir=$STATE_DIR/ferretdb-state")
		mkdir -p "$STATE_DIR/ferretdb-state"
		# At warn level FerretDB logs every error reply it sends (megabytes per test run): keep one old log only.
		if [[ -f $FERRETDB_LOG ]]; then mv -f "$FERRETDB_LOG" "$FERRETDB_LOG.1"; fi
		# No job control here, so the child is no process-group leader and setsid execs in place: $! is ferretdb.
		(cd "$STATE_DIR" && FERRETDB_TELEMETRY=disable DO_NOT_TRACK=1 \
			exec setsid "$bin" "${args[@]}" >>"$FERRETDB_LOG" 2>&1 </dev/null 9>&-) &
		pid=$!
		printf '%s\n' "$pid" >"$FERRETDB_PIDFILE"
	fi
	if ! wait_until mongo_ping; then
		show_log "$FERRETDB_LOG"
		kill "$pid" 2>/dev/null || true
		rm -f "$FERRETDB_PIDFILE"
		die "ferretdb: no answer on $HOST:$MONGO_PORT after ${TIMEOUT}s (handler $FERRETDB_HANDLER)"
	fi
	say "ferretdb: started (pid $pid, handler $FERRETDB_HANDLER, log $FERRETDB_LOG)"
}

stop_ferretdb() {
	local pid
	if pid=$(ferretdb_pid); then
		kill -TERM "$pid"
		if ! wait_until eval "! kill -0 $pid 2>/dev/null"; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$FERRETDB_PIDFILE"
		say "ferretdb: stopped (pid $pid)"
	else
		rm -f "$FERRETDB_PIDFILE"
		if tcp_open "$MONGO_PORT"; then
			say "ferretdb: something answers on $HOST:$MONGO_PORT but was not started by this script; left alone"
		else
			say "ferretdb: not running"
		fi
	fi
}

# ---------------------------------------------------------------- commands

print_env() {
	local v
	v=$(pg_version)
	cat <<-EOF
		export PERSIST_TEST_POSTGRES_URL='postgresql+psycopg://$MAIN_USER:$MAIN_PW@$HOST:$PG_PORT/$TEST_DB'
		export PERSIST_TEST_POSTGRES_APP_URL='postgresql+psycopg://$APP_USER:$APP_PW@$HOST:$PG_PORT/$TEST_DB'
		export PERSIST_TEST_MYSQL_URL='mysql+pymysql://$MAIN_USER:$MAIN_PW@$HOST:$MYSQL_PORT/$TEST_DB'
		export PERSIST_TEST_MYSQL_APP_URL='mysql+pymysql://$APP_USER:$APP_PW@$HOST:$MYSQL_PORT/$TEST_DB'
		export PERSIST_TEST_MONGO_URL='mongodb://$HOST:$MONGO_PORT/$TEST_DB'
		export PERSIST_TEST_REDIS_URL='redis://$HOST:$REDIS_PORT/0'
		export PERSIST_TEST_PG_BINDIR='/usr/lib/postgresql/$v/bin'
		export PERSIST_TEST_FERRETDB_BIN='$(ferretdb_bin)'
		export PERSIST_TEST_REDIS_SERVER_BIN='$(command -v redis-server || echo /usr/bin/redis-server)'
	EOF
}

print_status() {
	local v pid
	v=$(pg_version)
	if command -v pg_isready >/dev/null && pg_isready -q -h "$HOST" -p "$PG_PORT"; then
		say "postgresql $v: up on $HOST:$PG_PORT"
	else say "postgresql $v: down"; fi
	if command -v mariadb-admin >/dev/null && mariadb_alive; then
		say "mariadb: up on $HOST:$MYSQL_PORT"
	else say "mariadb: down"; fi
	if command -v redis-cli >/dev/null && redis_alive; then
		say "redis: up on $HOST:$REDIS_PORT"
	else say "redis: down"; fi
	if mongo_ping; then
		if pid=$(ferretdb_pid); then
			say "ferretdb: up on $HOST:$MONGO_PORT (pid $pid)"
		else say "ferretdb: something answers on $HOST:$MONGO_PORT (not started by this script)"; fi
	else say "ferretdb: down"; fi
}

lock_state() {
	need_root
	mkdir -p "$STATE_DIR"
	# Every server started below gets `9>&-`: a daemon that inherited fd 9 would hold this lock for its lifetime.
	exec 9>"$STATE_DIR/services.lock"
	if ! flock -n 9; then
		say "waiting for another services.sh (lock $STATE_DIR/services.lock)"
		flock -w 300 9 || die "another services.sh still holds $STATE_DIR/services.lock after 300s"
	fi
}

main() {
	local cmd=${1:-up}
	case $cmd in
	up)
		lock_state
		ensure_packages
		up_postgres
		up_mariadb
		up_redis
		up_ferretdb
		say "all four servers up on $HOST (${SECONDS}s); eval \"\$(scripts/services.sh env)\" for the URLs"
		;;
	stop)
		lock_state
		stop_ferretdb
		command -v redis-cli >/dev/null && stop_redis
		command -v mariadb-admin >/dev/null && stop_mariadb
		command -v pg_ctlcluster >/dev/null && stop_postgres
		;;
	env) print_env ;;
	status) print_status ;;
	-h | --help | help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
	*) die "unknown command '$cmd' (use up, env, status or stop)" ;;
	esac
}

main "$@"
