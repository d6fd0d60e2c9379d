#!/bin/sh
# Runs lintian on dist/*.deb and rpmlint on dist/*.rpm with the project's
# overrides; exits non-zero when either reports an error (or a warning:
# both are kept clean, every exception has its reason in
# packaging/lintian-overrides or packaging/rpmlint.toml).
#
#   packaging/lint.sh [DIST]
set -eu
cd "$(dirname "$0")/.."
dist=${1:-dist}
status=0

for deb in "$dist"/exo-sendmail_*.deb; do
	[ -e "$deb" ] || continue
	echo "lintian $deb"
	# root is what CI runs as; lintian only warns about it.
	lintian --fail-on error,warning --pedantic "$deb" 2>&1 |
		grep -v '^running with root privileges is not recommended' || :
	lintian --fail-on error,warning "$deb" >/dev/null 2>&1 || status=1
done

for rpm in "$dist"/exo-sendmail-*.rpm; do
	[ -e "$rpm" ] || continue
	echo "rpmlint $rpm"
	# rpmlint 2.4 unpacks with 'rpm2cpio | cpio -id' in a temporary
	# directory, but nfpm's payload names are absolute (/usr/...), so cpio
	# would write them into the real / . A cpio that refuses absolute
	# names keeps the unpacking where it belongs.
	shim=$(mktemp -d)
	cat >"$shim/cpio" <<'SHIM'
#!/bin/sh
exec /usr/bin/cpio --no-absolute-filenames "$@"
SHIM
	chmod 0755 "$shim/cpio"
	PATH="$shim:$PATH" rpmlint -c packaging/rpmlint.toml "$rpm" || status=1
	rm -rf "$shim"
done

exit $status
