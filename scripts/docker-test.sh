#!/usr/bin/env bash
# docker-test.sh IMAGE VERSION REVISION: checks the image `make docker` built.
#
# Run by `make docker-test`. It needs root (buildah with vfs storage and
# chroot isolation, and chown of the test secret) and works offline. It
# asserts:
#   1. the image config: USER 65534:65534, EXPOSE 9648, the entrypoint and
#      the default command of the Dockerfile;
#   2. the filesystem: exactly the binary and the CA bundle (identical to the
#      build host's), and no configuration baked in;
#   3. `poolwatch --version` inside the image prints VERSION and REVISION;
#   4. `poolwatch check-config` inside the image accepts examples/docker/
#      mounted at /etc/poolwatch with its secret under /run/secrets, running
#      as 65534 (a secret readable only by root is refused);
#   5. a broken configuration is rejected with exit status 1 and a
#      file:line:key message.
# Every buildah container it creates is removed on exit.
set -euo pipefail

if [ $# -ne 3 ]; then
	echo "usage: $0 IMAGE VERSION REVISION" >&2
	exit 2
fi
image=$1 version=$2 revision=$3
cd "$(dirname "$0")/.."
root=$PWD

buildah() { command buildah --storage-driver=vfs "$@"; }
run() { buildah run --isolation=chroot "$@"; }

fail() {
	echo "docker-test: FAIL: $*" >&2
	exit 1
}
pass() { echo "docker-test: ok: $*"; }

tmp=$(mktemp -d)
ctr=""
cleanup() {
	if [ -n "$ctr" ]; then
		buildah umount "$ctr" >/dev/null 2>&1 || true
		buildah rm "$ctr" >/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# 1. Image configuration.
cfg=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}|{{range $p, $_ := .OCIv1.Config.ExposedPorts}}{{$p}} {{end}}|{{.OCIv1.Config.Entrypoint}}|{{.OCIv1.Config.Cmd}}' "$image")
want='65534:65534|9648/tcp |[/bin/poolwatch]|[--config.file=/etc/poolwatch/poolwatch.yml]'
[ "$cfg" = "$want" ] || fail "image config: got '$cfg', want '$want'"
pass "image config: $cfg"

ctr=$(buildah from --pull=never "$image")

# 2. Filesystem: the binary, the CA bundle, nothing else.
mnt=$(buildah mount "$ctr")
files=$(cd "$mnt" && find . -type f | sort | tr '\n' ' ')
[ "$files" = "./bin/poolwatch ./etc/ssl/certs/ca-certificates.crt " ] ||
	fail "image files: got '$files', want the binary and the CA bundle only"
cmp -s "$mnt/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt ||
	fail "the image's CA bundle differs from /etc/ssl/certs/ca-certificates.crt"
[ ! -e "$mnt/etc/poolwatch" ] || fail "/etc/poolwatch is baked into the image; it must be mounted"
buildah umount "$ctr" >/dev/null
pass "filesystem: $files"

# 3. --version.
out=$(run "$ctr" -- /bin/poolwatch --version 2>&1) || fail "--version exited with $?: $out"
case "$out" in
"poolwatch, version $version (branch: "*", revision: $revision)"*) ;;
*) fail "--version: got '$out', want version $version and revision $revision" ;;
esac
grep -q 'go version: *go1\.' <<<"$out" || fail "--version names no Go version: $out"
pass "--version: $(head -1 <<<"$out")"

# 4. check-config with the example mounted read-only, as uid 65534.
mkdir -p "$tmp/secrets"
printf 'not-a-real-password\n' >"$tmp/secrets/poolwatch-db-password"
chown 65534:65534 "$tmp/secrets/poolwatch-db-password"
chmod 0400 "$tmp/secrets/poolwatch-db-password"
mounts=(--volume "$root/examples/docker:/etc/poolwatch:ro" --volume "$tmp/secrets:/run/secrets:ro")
out=$(run "${mounts[@]}" "$ctr" -- /bin/poolwatch check-config --config.file=/etc/poolwatch/poolwatch.yml 2>&1) ||
	fail "check-config of examples/docker/poolwatch.yml exited with $?: $out"
[ "$out" = "/etc/poolwatch/poolwatch.yml: OK, 2 targets" ] || fail "check-config: got '$out'"
pass "check-config: $out"

# The same secret owned by root and 0400: uid 65534 cannot read it, so the
# load fails. This shows the image's USER is in force.
chown 0:0 "$tmp/secrets/poolwatch-db-password"
if out=$(run "${mounts[@]}" "$ctr" -- /bin/poolwatch check-config --config.file=/etc/poolwatch/poolwatch.yml 2>&1); then
	fail "check-config read a root-only secret: the image does not run as 65534: $out"
fi
grep -q 'permission denied' <<<"$out" || fail "check-config with a root-only secret: want 'permission denied', got '$out'"
grep -q 'not-a-real-password' <<<"$out" && fail "check-config printed the secret: $out"
pass "a root-only secret is refused: the image runs as 65534"

# 5. A broken configuration is rejected with status 1 and a file:line:key error.
mkdir -p "$tmp/bad"
printf 'targets:\n  - name: db\n    kind: postgres\n    dsn: postgres://u@db/postgres\n    sslmod: disable\n' >"$tmp/bad/poolwatch.yml"
chmod 0644 "$tmp/bad/poolwatch.yml"
set +e
out=$(run --volume "$tmp/bad:/etc/poolwatch:ro" "$ctr" -- /bin/poolwatch check-config --config.file=/etc/poolwatch/poolwatch.yml 2>&1)
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "check-config of a broken file: exit status $rc, want 1: $out"
grep -q '^/etc/poolwatch/poolwatch.yml:5:' <<<"$out" || fail "check-config of a broken file: want a poolwatch.yml:5: error, got '$out'"
pass "broken config rejected: $(head -1 <<<"$out")"

echo "docker-test: PASS ($image)"
