# Sourced by scripts/demo.sh and scripts/test.sh: the virtual environment the README's commands run in.
#
# Debian 12 and Ubuntu 23.04+ mark their system Python "externally managed" (PEP 668): `pip install` into it
# fails. So the commands install into a virtual environment: the active one ($VIRTUAL_ENV) if there is one,
# else ./.venv, created with `python3 -m venv` (without --system-site-packages: what runs is what
# pyproject.toml declares, nothing the system happens to have). pip's download cache (~/.cache/pip) makes
# a fresh .venv quick to fill again.
#
# Optional environment: PERSIST_PYTHON (the interpreter that creates .venv, default python3),
# PERSIST_VENV (its folder, default .venv).

venv_die() {
	printf 'venv: ERROR: %s\n' "$*" >&2
	exit 1
}

# persist_venv: sets PY to the python of the virtual environment, creating .venv if needed.
persist_venv() {
	if [[ -n ${VIRTUAL_ENV:-} && -x $VIRTUAL_ENV/bin/python ]]; then
		PY=$VIRTUAL_ENV/bin/python
		return
	fi
	local venv=${PERSIST_VENV:-.venv} base=${PERSIST_PYTHON:-python3}
	PY=$venv/bin/python
	# A folder left by an interrupted creation, or by a Python since removed, has no working pip.
	if "$PY" -m pip --version >/dev/null 2>&1; then
		return
	fi
	command -v "$base" >/dev/null || venv_die "$base not found: install Python 3.11+ (Debian/Ubuntu: apt-get install python3 python3-venv)"
	"$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		venv_die "backtest-persist needs Python 3.11+, $base is $("$base" -c 'import sys; print(sys.version.split()[0])')"
	# Debian and Ubuntu ship the venv module's pip bootstrap (ensurepip) in the python3-venv package.
	if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
		if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
			printf 'venv: installing python3-venv (apt-get)\n'
			DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null ||
				venv_die "apt-get install python3-venv failed"
		else
			venv_die "the venv module of $base is missing: sudo apt-get install python3-venv (Debian/Ubuntu), then run again"
		fi
	fi
	printf 'venv: creating %s with %s\n' "$venv" "$("$base" -c 'import sys; print(sys.executable)')"
	rm -rf "$venv"
	"$base" -m venv "$venv" || venv_die "$base -m venv $venv failed"
}
