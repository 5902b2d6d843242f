#!/usr/bin/env bash
# vulndb.sh VERSION DIR: builds govulncheck's offline vulnerability database
# from the golang.org/x/vulndb module at VERSION into DIR, unless DIR already
# holds it. Run by `make vuln`; use it as `govulncheck -db file://DIR`.
#
# The database is the module's data/osv directory indexed by vulndb's own
# cmd/indexdb (the recipe in the field notes). It is built into a temporary
# sibling directory and renamed into place, so DIR is either absent or
# complete, and an interrupted build is simply redone. Delete DIR to rebuild.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 VULNDB_VERSION DIR" >&2
	exit 2
fi
version=$1 dir=$2
go=${GO:-go}

if [ -s "$dir/index/db.json" ] && [ -s "$dir/index/modules.json" ]; then
	echo ">> vulndb $version: cached in $dir"
	exit 0
fi

start=$(date +%s)
echo ">> vulndb $version: building the offline database into $dir (a few minutes, once)"
moddir=$("$go" mod download -json "golang.org/x/vulndb@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$moddir" ] || [ ! -d "$moddir/data/osv" ]; then
	echo "vulndb.sh: golang.org/x/vulndb@$version has no data/osv directory (download failed?)" >&2
	exit 1
fi

mkdir -p "$(dirname "$dir")"
tmp=$(mktemp -d "$dir.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# indexdb creates -out; give it a fresh path.
"$go" run "golang.org/x/vulndb/cmd/indexdb@$version" -vulns "$moddir/data/osv" -out "$tmp/db"
if [ ! -s "$tmp/db/index/db.json" ]; then
	echo "vulndb.sh: indexdb wrote no index/db.json" >&2
	exit 1
fi
rm -rf "$dir"
mv "$tmp/db" "$dir"
echo ">> vulndb $version: $(find "$dir" -name 'GO-*.json' | wc -l) entries, built in $(($(date +%s) - start)) s"
