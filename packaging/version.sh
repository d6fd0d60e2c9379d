#!/bin/sh
# Prints the package version derived from git, valid for both deb and rpm:
#   tag v1.2.3 on HEAD          -> 1.2.3
#   4 commits after v1.2.3      -> 1.2.3+git4.gabc1234
#   no tag yet                  -> 0.0.0~git20251121162530.abc1234
# ("~" sorts before the first release, "+" after the tag), ".dirty" when the
# work tree has uncommitted changes. $VERSION, when set, wins.
set -eu
if [ -n "${VERSION:-}" ]; then
	printf '%s\n' "$VERSION"
	exit 0
fi
cd "$(dirname "$0")/.."
desc=$(git describe --tags --always --dirty --match 'v[0-9]*')
dirty=
case $desc in
*-dirty) dirty=.dirty desc=${desc%-dirty} ;;
esac
case $desc in
v[0-9]*-[0-9]*-g[0-9a-f]*)
	# v1.2.3-4-gabc1234
	hash=${desc##*-}
	rest=${desc%-*}
	count=${rest##*-}
	tag=${rest%-*}
	printf '%s+git%s.%s%s\n' "${tag#v}" "$count" "$hash" "$dirty"
	;;
v[0-9]*)
	printf '%s%s\n' "${desc#v}" "$dirty"
	;;
*)
	when=$(TZ=UTC0 git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd)
	printf '0.0.0~git%s.%s%s\n' "$when" "$desc" "$dirty"
	;;
esac
