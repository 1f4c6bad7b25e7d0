#!/usr/bin/env bash
# Installs the local AWS servers used by kinactor's tests, the demo and
# `kinactor local` (see DESIGN.md section 8). Run by `make deps`.
#
#   * npm packages pinned in package-lock.json (kinesis-local, kinesalite,
#     dynalite) into tools/localaws/node_modules, with `npm ci`;
#   * DynamoDB Local, taken from the npm package amplify-dynamodb-simulator
#     (fetched with `npm pack`, never npm-installed: its dependencies are heavy),
#     verified against a pinned sha512 and extracted so that the jar is at
#     tools/localaws/.cache/dynamodb-local/DynamoDBLocal.jar.
#
# Idempotent: each step leaves a stamp and is skipped when its stamp is current,
# so a second run is a quick no-op. Nothing here is committed (node_modules/ and
# .cache/ are gitignored).
set -euo pipefail

SIM_PKG="amplify-dynamodb-simulator"
SIM_VERSION="2.9.30"
SIM_INTEGRITY="sha512-xTeeRLvzEfqyd5lh3bH4c0kHvSHHmmhD5ZDsHFKAQ5g2Zl6JqlFdutaQhCLHzxEp6Ry1o7TB6niIoXuQAnSewQ=="

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HERE/.cache"
DDB_DIR="$CACHE/dynamodb-local"
TGZ="$CACHE/$SIM_PKG-$SIM_VERSION.tgz"
NPM_STAMP="$HERE/node_modules/.kinactor-installed"
DDB_STAMP="$DDB_DIR/.kinactor-installed"

say() { echo "localaws: $*"; }
die() {
	echo "localaws: ERROR: $*" >&2
	echo "localaws: local AWS servers are NOT installed; fix the problem above and rerun 'make deps' (tools/localaws/install.sh)." >&2
	exit 1
}

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"; }

# --- 1. npm packages --------------------------------------------------------

npm_current() {
	[[ -f "$NPM_STAMP" ]] || return 1
	[[ "$NPM_STAMP" -nt "$HERE/package-lock.json" ]] || return 1
	[[ "$NPM_STAMP" -nt "$HERE/package.json" ]] || return 1
	[[ -f "$HERE/node_modules/kinesis-local/main.js" ]] || return 1
	[[ -f "$HERE/node_modules/kinesalite/cli.js" ]] || return 1
	[[ -f "$HERE/node_modules/dynalite/cli.js" ]] || return 1
}

if npm_current; then
	say "npm packages up to date (node_modules)"
else
	need node "install Node.js 20 or later"
	need npm "install npm (comes with Node.js)"
	say "installing npm packages (npm ci) in $HERE"
	(cd "$HERE" && npm ci --no-audit --no-fund) ||
		die "'npm ci --no-audit --no-fund' failed in $HERE (is the npm registry reachable?)"
	for f in kinesis-local/main.js kinesalite/cli.js dynalite/cli.js; do
		[[ -f "$HERE/node_modules/$f" ]] || die "npm ci succeeded but node_modules/$f is missing"
	done
	touch "$NPM_STAMP"
fi

# --- 2. DynamoDB Local ------------------------------------------------------

integrity_of() { # prints "sha512-<base64>" of the file $1
	printf 'sha512-%s' "$(openssl dgst -sha512 -binary "$1" | base64 | tr -d '\n')"
}

ddb_current() {
	[[ -f "$DDB_STAMP" ]] || return 1
	[[ "$(cat "$DDB_STAMP")" == "$SIM_INTEGRITY" ]] || return 1
	[[ -f "$DDB_DIR/DynamoDBLocal.jar" && -d "$DDB_DIR/DynamoDBLocal_lib" ]] || return 1
}

if ddb_current; then
	say "DynamoDB Local up to date ($DDB_DIR)"
else
	need openssl "needed to verify the DynamoDB Local download"
	need base64 "needed to verify the DynamoDB Local download"
	need tar "needed to extract DynamoDB Local"
	mkdir -p "$CACHE"
	if [[ -f "$TGZ" && "$(integrity_of "$TGZ")" == "$SIM_INTEGRITY" ]]; then
		say "reusing verified $TGZ"
	else
		need npm "install npm (comes with Node.js)"
		rm -f "$TGZ"
		say "fetching $SIM_PKG@$SIM_VERSION (npm pack) into $CACHE"
		(cd "$CACHE" && npm pack --silent "$SIM_PKG@$SIM_VERSION" >/dev/null) ||
			die "'npm pack $SIM_PKG@$SIM_VERSION' failed (is the npm registry reachable?)"
		[[ -f "$TGZ" ]] || die "npm pack did not produce $TGZ"
		got="$(integrity_of "$TGZ")"
		if [[ "$got" != "$SIM_INTEGRITY" ]]; then
			rm -f "$TGZ"
			die "integrity mismatch for $SIM_PKG@$SIM_VERSION: want $SIM_INTEGRITY, got $got (tarball deleted)"
		fi
		say "verified $SIM_INTEGRITY"
	fi
	tmp="$(mktemp -d "$CACHE/extract.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	tar -xzf "$TGZ" -C "$tmp" package/emulator || die "could not extract package/emulator from $TGZ"
	[[ -f "$tmp/package/emulator/DynamoDBLocal.jar" ]] || die "$TGZ has no package/emulator/DynamoDBLocal.jar"
	rm -rf "$DDB_DIR"
	mv "$tmp/package/emulator" "$DDB_DIR"
	printf '%s' "$SIM_INTEGRITY" >"$DDB_STAMP"
	say "DynamoDB Local installed at $DDB_DIR/DynamoDBLocal.jar"
	if ! command -v java >/dev/null 2>&1; then
		say "WARNING: 'java' not found on PATH; DynamoDB Local needs Java 17 (dynalite works without it)"
	fi
fi
