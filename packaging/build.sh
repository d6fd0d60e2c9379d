#!/bin/sh
# Builds the exo-sendmail packages into dist/.
#
#   packaging/build.sh            both: dist/exo-sendmail_<v>_<arch>.deb and .rpm
#   packaging/build.sh deb        only the .deb (or: rpm)
#
# Environment: VERSION (default: packaging/version.sh, from git describe),
# SOURCE_DATE_EPOCH (default: the last commit's time; makes the packages
# reproducible), GOARCH (default: the host's), BINARY (package this prebuilt
# binary instead of building ./cmd/sendmail), DIST (default: dist, where
# the packages go; earlier exo-sendmail packages there are replaced).
set -eu
cd "$(dirname "$0")/.."
PATH=$PATH:/usr/local/go/bin
export PATH

VERSION=$(packaging/version.sh)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
GOARCH=${GOARCH:-$(go env GOARCH)}
export VERSION SOURCE_DATE_EPOCH GOARCH
packagers=${*:-deb rpm}

stage=dist/.build
rm -rf "$stage"
mkdir -p "$stage/man" "$stage/doc"

# The binary: static, no build paths, the version stamped in.
if [ -n "${BINARY:-}" ]; then
	cp "$BINARY" "$stage/sendmail"
else
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
		-o "$stage/sendmail" ./cmd/sendmail
fi

# Man pages, compressed without a timestamp (gzip -n) so the bytes repeat.
for page in packaging/man/*.[1-8]; do
	gzip -9n <"$page" >"$stage/man/$(basename "$page").gz"
done

# Documentation: README, docs/, the full commented configuration.
for f in README.md docs/*.md; do
	if [ -f "$f" ]; then cp "$f" "$stage/doc/"; fi
done
if [ -f sendmail.toml.example ]; then
	cp sendmail.toml.example "$stage/doc/sendmail.toml.example"
else
	echo "build.sh: warning: sendmail.toml.example is missing; shipping the packaged default in its place" >&2
	cp packaging/sendmail.toml "$stage/doc/sendmail.toml.example"
fi
cp packaging/copyright "$stage/doc/copyright"
if [ -f LICENSE ]; then
	printf '\n' >>"$stage/doc/copyright"
	cat LICENSE >>"$stage/doc/copyright"
fi

# A changelog entry for this build (nfpm writes the Debian and rpm forms;
# -1 is the package revision, nfpm.yaml's release).
commit=$(git rev-parse --short HEAD)
cat >"$stage/changelog.yaml" <<END
- semver: "$VERSION-1"
  deb:
    urgency: medium
    distributions: [unstable]
  date: "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
  packager: "exo-sendmail developers <exo-sendmail@users.noreply.github.com>"
  changes:
    - note: "Built from commit $commit."
END

# Everything inside the packages gets the same mode and mtime.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
chmod 0755 "$stage/sendmail"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# The configuration, with one entry per documentation file.
cp packaging/nfpm.yaml "$stage/nfpm.yaml"
for f in "$stage"/doc/*; do
	name=$(basename "$f")
	# rpm: %license files live in /usr/share/licenses.
	rpm="dst: /usr/share/doc/exo-sendmail/$name, type: doc"
	[ "$name" = copyright ] && rpm="dst: /usr/share/licenses/exo-sendmail/$name, type: license"
	cat >>"$stage/nfpm.yaml" <<END
  - {src: $f, dst: /usr/share/doc/exo-sendmail/$name, packager: deb, file_info: {mode: 0644}}
  - {src: $f, $rpm, packager: rpm, file_info: {mode: 0644}}
END
done

DIST=${DIST:-dist}
mkdir -p "$DIST"
for p in $packagers; do
	case $p in
	deb) rm -f "$DIST"/exo-sendmail_*.deb ;;
	rpm) rm -f "$DIST"/exo-sendmail-*.rpm ;;
	esac
	go tool -modfile=tools/go.mod nfpm pkg --packager "$p" \
		--config "$stage/nfpm.yaml" --target "$DIST/"
done
