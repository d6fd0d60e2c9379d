#!/usr/bin/env bash
# The packaging proof. Builds the .deb and .rpm, lints them, and then, only
# with --install or when CI=true (it changes this machine: run it as root on
# a throw-away system), installs the .deb here and checks what an
# administrator and an attacker on the host would see:
#
#   modes, owners, users; an unprivileged user submits through
#   /usr/sbin/sendmail but cannot read the secret, list drop/, read another
#   user's queued mail, flush with the secrets (exit 77) or gain anything
#   with -C; the service user delivers to the Exchange Online emulator; PHP
#   mail(), bsd-mailx and a cron-style call go through to delivery; an
#   upgrade keeps the configuration and the queue; purge removes it all.
#
# Prints one line per check and ends with "package-test: N passed, M failed".
#
#   .ci/package-test.sh [--install]
# Environment: BINARY (package a prebuilt binary instead of building one).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
export LC_ALL=C.UTF-8

# The version and time of this tree, fixed for every build below.
VERSION=$(packaging/version.sh)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export VERSION SOURCE_DATE_EPOCH

install=false
[ "${CI:-}" = true ] && install=true
[ "${1:-}" = --install ] && install=true

passed=0
failed=0
skipped=0
failures=()
log=$(mktemp)

# check NAME COMMAND...: runs the command, counts it, shows its output on failure.
check() {
	local name=$1
	shift
	if "$@" >"$log" 2>&1; then
		passed=$((passed + 1))
		echo "ok   $name"
	else
		failed=$((failed + 1))
		failures+=("$name")
		echo "FAIL $name"
		sed 's/^/     | /' "$log" | head -40
	fi
}

finish() {
	for f in "${failures[@]}"; do echo "failed: $f"; done
	if [ "$skipped" = 0 ]; then
		echo "package-test: $passed passed, $failed failed"
	else
		echo "package-test: $passed passed, $failed failed, $skipped skipped"
	fi
	rm -f "$log"
	[ "$failed" = 0 ]
	exit
}

# ---------------------------------------------------------------- build, lint

# What the build reads: a tree that others change while this runs cannot
# be compared with itself.
tree() { { git rev-parse HEAD; git diff HEAD; } | sha256sum; }
tree_before=$(tree)
build() { packaging/build.sh; }
check "build the .deb and the .rpm (packaging/build.sh)" build
deb=$(ls dist/exo-sendmail_*.deb 2>/dev/null | head -1)
rpm=$(ls dist/exo-sendmail-*.rpm 2>/dev/null | head -1)
if [ -z "$deb" ] || [ -z "$rpm" ]; then
	finish
fi

reproducible() {
	local a b
	a=$(sha256sum "$deb" "$rpm" | cut -d' ' -f1)
	DIST=dist/repro packaging/build.sh >/dev/null || return 1
	b=$(sha256sum dist/repro/exo-sendmail_*.deb dist/repro/exo-sendmail-*.rpm | cut -d' ' -f1)
	rm -rf dist/repro
	echo "first:  $a"
	echo "second: $b"
	[ "$a" = "$b" ]
}
name="a second build is byte-identical (SOURCE_DATE_EPOCH)"
if reproducible >"$log" 2>&1; then
	passed=$((passed + 1))
	echo "ok   $name"
elif [ "$(tree)" != "$tree_before" ]; then
	skipped=$((skipped + 1))
	echo "skip $name: the work tree changed between the two builds"
else
	failed=$((failed + 1))
	failures+=("$name")
	echo "FAIL $name"
	sed 's/^/     | /' "$log"
fi

lint_deb() {
	command -v lintian >/dev/null || { echo "lintian is not installed (apt-get install lintian)"; return 1; }
	lintian --fail-on error,warning "$deb"
}
lint_rpm() {
	command -v rpmlint >/dev/null || { echo "rpmlint is not installed (apt-get install rpmlint rpm)"; return 1; }
	# packaging/lint.sh runs rpmlint with the project's configuration and
	# keeps its unpacking out of / ; it fails on lintian or rpmlint errors.
	packaging/lint.sh dist
}
check "lintian: no error or warning (overrides carry reasons)" lint_deb
check "rpmlint: no error (filters carry reasons)" lint_rpm

man_pages() {
	local page out rc=0
	for page in packaging/man/*.[1-8]; do
		out=$(groff -man -ww -z "$page" 2>&1)
		[ -z "$out" ] || { echo "$page: $out"; rc=1; }
	done
	return $rc
}
check "man pages render without groff warnings" man_pages

deb_contents() {
	local listing
	listing=$(dpkg-deb -c "$deb")
	for p in ./usr/sbin/sendmail ./usr/bin/mailq ./usr/bin/newaliases ./usr/lib/sendmail \
		./usr/bin/exo-sendmail ./etc/exo-sendmail/sendmail.toml ./lib/systemd/system/exo-sendmail.service \
		./usr/share/man/man8/sendmail.8.gz ./usr/share/man/man8/exo-sendmail.8.gz \
		./usr/share/man/man5/sendmail.toml.5.gz ./usr/share/doc/exo-sendmail/sendmail.toml.example \
		./var/spool/exo-sendmail/drop/; do
		grep -q " $p\( \|$\)" <<<"$listing" || { echo "missing: $p"; return 1; }
	done
	dpkg-deb -I "$deb" control | grep -qx 'Provides: mail-transport-agent' &&
		dpkg-deb -I "$deb" control | grep -qx 'Conflicts: mail-transport-agent' &&
		dpkg-deb -I "$deb" control | grep -qx 'Replaces: mail-transport-agent' &&
		dpkg-deb -I "$deb" control | grep -qx 'Section: mail' &&
		dpkg-deb -I "$deb" conffiles | grep -qx '/etc/exo-sendmail/sendmail.toml'
}
check ".deb: contents, MTA relations, conffile" deb_contents

rpm_contents() {
	command -v rpm >/dev/null || { echo "rpm is not installed"; return 1; }
	rpm -qp --queryformat '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm" |
		tee /dev/stderr | grep -qx -- '-rwxr-sr-x root exo-sendmail-drop /usr/sbin/sendmail.exo-sendmail' &&
		rpm -qp --provides "$rpm" | grep -qx MTA &&
		rpm -qp --provides "$rpm" | grep -qx smtpdaemon &&
		rpm -qp --configfiles "$rpm" | grep -qx /etc/exo-sendmail/sendmail.toml &&
		rpm -qp --scripts "$rpm" | grep -q 'alternatives --install /usr/sbin/sendmail mta' &&
		rpm -qp --scripts "$rpm" | grep -q 'alternatives --remove mta'
}
check ".rpm: setgid binary, Provides MTA smtpdaemon, %config, alternatives" rpm_contents

if ! $install; then
	echo "package-test: install checks skipped (they change this machine: run with --install, or CI=true)"
	finish
fi

# ------------------------------------------------------------------- install

if [ "$(id -u)" != 0 ]; then
	echo "package-test: --install needs root"
	failed=$((failed + 1))
	finish
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg run instead of failing on its lock.
aptget() { apt-get -o DPkg::Lock::Timeout=600 -y -q "$@"; }
apt_install() { aptget install --no-install-recommends "$@"; }

# A clean slate: an earlier run may have left the package installed.
dpkg -s exo-sendmail >/dev/null 2>&1 && aptget purge exo-sendmail >/dev/null 2>&1

check "apt-get install ./$deb" apt_install "./$deb"
if ! dpkg -s exo-sendmail >/dev/null 2>&1; then
	echo "package-test: the package is not installed; the checks that need it are not run"
	finish
fi

mode_is() { # PATH "MODE OWNER GROUP"
	local got
	got=$(stat -c '%a %U %G' "$1") || return 1
	echo "$1: $got (want $2)"
	[ "$got" = "$2" ]
}
modes() {
	mode_is /usr/sbin/sendmail "2755 root exo-sendmail-drop" &&
		mode_is /etc/exo-sendmail "755 root root" &&
		mode_is /etc/exo-sendmail/sendmail.toml "644 root root" &&
		mode_is /etc/exo-sendmail/secrets "750 root exo-sendmail" &&
		mode_is /var/spool/exo-sendmail "710 exo-sendmail exo-sendmail-drop" &&
		mode_is /var/spool/exo-sendmail/drop "1770 exo-sendmail exo-sendmail-drop" &&
		mode_is /var/spool/exo-sendmail/queue "700 exo-sendmail exo-sendmail" &&
		mode_is /var/spool/exo-sendmail/quarantine "700 exo-sendmail exo-sendmail" &&
		mode_is /var/lib/exo-sendmail "700 exo-sendmail exo-sendmail"
}
check "installed modes and owners" modes

links() {
	[ "$(readlink -f /usr/bin/mailq)" = /usr/sbin/sendmail ] &&
		[ "$(readlink -f /usr/bin/newaliases)" = /usr/sbin/sendmail ] &&
		[ "$(readlink -f /usr/lib/sendmail)" = /usr/sbin/sendmail ] &&
		[ "$(readlink -f /usr/bin/exo-sendmail)" = /usr/sbin/sendmail ]
}
check "mailq, newaliases, /usr/lib/sendmail, exo-sendmail point at /usr/sbin/sendmail" links

users() {
	getent passwd exo-sendmail | tee /dev/stderr | grep -q ':/var/lib/exo-sendmail:/usr/sbin/nologin$' &&
		[ "$(id -gn exo-sendmail)" = exo-sendmail ] &&
		id -nG exo-sendmail | tr ' ' '\n' | grep -qx exo-sendmail-drop &&
		[ "$(getent group exo-sendmail-drop | cut -d: -f4)" = exo-sendmail ]
}
check "service user exo-sendmail (nologin, home /var/lib/exo-sendmail) in group exo-sendmail-drop only besides its own" users

unit() {
	[ -f /lib/systemd/system/exo-sendmail.service ] &&
		[ -L /etc/systemd/system/multi-user.target.wants/exo-sendmail.service ]
}
check "exo-sendmail.service installed and enabled" unit

# The unit as systemd reads it, without a running systemd: it parses, and
# its ExecStart and User exist (the hardening score is checked below).
unit_verify() { systemd-analyze verify --man=no /lib/systemd/system/exo-sendmail.service; }
check "exo-sendmail.service passes systemd-analyze verify" unit_verify

manpages_installed() {
	local page out
	for page in man8/sendmail.8.gz man8/exo-sendmail.8.gz man5/sendmail.toml.5.gz; do
		out=$(zcat "/usr/share/man/$page" | groff -man -ww -z 2>&1) || return 1
		[ -z "$out" ] || { echo "$page: $out"; return 1; }
	done
	! command -v man >/dev/null || man -w sendmail | grep -q /man8/sendmail.8
}
check "man pages sendmail(8), exo-sendmail(8), sendmail.toml(5) installed" manpages_installed

if command -v systemd-analyze >/dev/null; then
	score=$(systemd-analyze security --offline=true /lib/systemd/system/exo-sendmail.service 2>/dev/null |
		sed -n 's/.*Overall exposure level for exo-sendmail.service: \([0-9.]*\).*/\1/p')
	echo "     systemd-analyze security: exposure ${score:-unknown}"
	exposure() { [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; }
	check "unit hardening: systemd-analyze security exposure <= 2.0" exposure
fi

# ------------------------------------------------- the emulator as Exchange

work=$(mktemp -d /tmp/exo-package-test.XXXXXX)
chmod 0755 "$work"
emu=$work/emulator
emu_pid=
cleanup() {
	[ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null
	rm -rf "$work"
	userdel -r exo-test-user >/dev/null 2>&1
	userdel -r exo-test-other >/dev/null 2>&1
}
trap cleanup EXIT

start_emulator() {
	exo-sendmail emulator --dir "$emu" >"$work/emulator.log" 2>&1 &
	emu_pid=$!
	for _ in $(seq 100); do
		[ -f "$emu/ready" ] && return 0
		kill -0 "$emu_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/emulator.log"
	return 1
}
check "exo-sendmail emulator starts" start_emulator

# The installed configuration, pointed at the emulator: the emulator's
# account with the packaged spool and state, the secret where it belongs.
configure() {
	[ -f "$emu/sendmail.toml" ] || return 1
	install -m 0640 -o root -g exo-sendmail "$emu/secret" /etc/exo-sendmail/secrets/contoso &&
		install -m 0644 "$emu/ca.pem" /etc/exo-sendmail/emulator-ca.pem &&
		sed -e 's|^\( *\)spool_dir = .*|\1spool_dir = "/var/spool/exo-sendmail"|' \
			-e 's|^\( *\)state_dir = .*|\1state_dir = "/var/lib/exo-sendmail"|' \
			-e 's|^\( *\)client_secret_file = .*|\1client_secret_file = "/etc/exo-sendmail/secrets/contoso"|' \
			-e 's|^\( *\)ca_file = .*|\1ca_file = "/etc/exo-sendmail/emulator-ca.pem"|' \
			"$emu/sendmail.toml" >/etc/exo-sendmail/sendmail.toml &&
		cat /etc/exo-sendmail/sendmail.toml
}
check "configure /etc/exo-sendmail/sendmail.toml for the emulator" configure
secret=$(cat "$emu/secret" 2>/dev/null)

check "exo-sendmail check passes against the emulator" timeout 120 exo-sendmail check

for u in exo-test-user exo-test-other; do
	id "$u" >/dev/null 2>&1 || useradd -m -s /bin/sh "$u"
done
as_user() { runuser -u exo-test-user -- "$@"; }

entries() { # the queue entries in a spool directory, as root
	find "/var/spool/exo-sendmail/$1" -maxdepth 1 -type f -regextype posix-extended \
		-regex '.*/[0-9A-F]{19}' | sort
}

# ----------------------------------------------------- the unprivileged user

# Each "cannot" first proves the thing is there (root reads it).
denied() { # PATH COMMAND...: root can, exo-test-user cannot
	local path=$1
	shift
	"$@" "$path" >/dev/null || { echo "root cannot $* $path either"; return 1; }
	! as_user "$@" "$path"
}
check "a user cannot read the secret" denied /etc/exo-sendmail/secrets/contoso cat
check "a user cannot list the secrets directory" denied /etc/exo-sendmail/secrets ls
check "a user cannot list drop/" denied /var/spool/exo-sendmail/drop ls
check "a user cannot list queue/" denied /var/spool/exo-sendmail/queue ls
check "a user cannot read the token cache and state" denied /var/lib/exo-sendmail ls

before=$(entries drop)
submit() {
	printf 'Subject: package-test submit\n\nfrom an unprivileged user\n' |
		timeout 60 runuser -u exo-test-user -- /usr/sbin/sendmail -i ops@contoso.com
}
check "a user submits through /usr/sbin/sendmail (exit 0)" submit
dropped=$(comm -13 <(echo "$before") <(entries drop) | head -1)
landed() {
	[ -n "$dropped" ] || { echo "no new entry in drop/"; ls -la /var/spool/exo-sendmail/drop; return 1; }
	stat -c '%n %a %U %G' "$dropped"
	[ "$(stat -c '%U %G' "$dropped")" = "exo-test-user exo-sendmail-drop" ] &&
		[ $((0$(stat -c '%a' "$dropped") & 07)) = 0 ]
}
check "the message lands in drop/, owned by the user, group exo-sendmail-drop, no access for others" landed

other_cannot_read() {
	[ -n "$dropped" ] && grep -q 'package-test submit' "$dropped" || return 1
	! runuser -u exo-test-other -- cat "$dropped"
}
check "another user cannot read the queued message" other_cannot_read
other_queue_show() {
	local out rc
	out=$(timeout 60 runuser -u exo-test-other -- exo-sendmail queue show "$(basename "${dropped:-none}")" 2>&1)
	rc=$?
	echo "exit status $rc: $out"
	[ $rc != 0 ] && ! grep -q 'package-test submit' <<<"$out"
}
check "another user cannot read it through exo-sendmail queue show" other_queue_show

flush_denied() {
	local rc
	timeout 60 runuser -u exo-test-user -- /usr/sbin/sendmail -q </dev/null
	rc=$?
	echo "exit status $rc"
	[ $rc = 77 ]
}
check "a user cannot flush the queue with the secrets: sendmail -q exits 77" flush_denied

evil_c() {
	local before_c after_c rc out
	cat >"$work/evil.toml" <<-EOF
		spool_dir = "/var/spool/exo-sendmail"
		aliases_file = "/etc/exo-sendmail/secrets/contoso"
	EOF
	chmod 0644 "$work/evil.toml"
	before_c=$(entries drop | wc -l)
	out=$(printf 'Subject: evil\n\nx\n' | timeout 60 runuser -u exo-test-user -- /usr/sbin/sendmail -C "$work/evil.toml" -i ops@contoso.com 2>&1)
	rc=$?
	after_c=$(entries drop | wc -l)
	echo "sendmail -C: exit $rc, drop/ entries $before_c -> $after_c: $out"
	[ $rc != 0 ] && [ "$before_c" = "$after_c" ] || return 1
	out=$(timeout 60 runuser -u exo-test-user -- /usr/sbin/sendmail -C "$work/evil.toml" -bi </dev/null 2>&1)
	echo "sendmail -C -bi: $out"
	! grep -qF "$secret" <<<"$out"
}
check "-C by a user drops the spool group: nothing lands in the system spool, no secret leaks" evil_c

# ----------------------------------------------------------------- delivery

delivered() { # TOKEN: a message carrying TOKEN reached an emulator mailbox
	grep -rlF -- "$1" "$emu"/maildir/*/new/ 2>/dev/null | grep -q .
}
flush() { timeout 300 runuser -u exo-sendmail -- /usr/sbin/sendmail -q </dev/null; }

check "the service user runs the queue: sendmail -q exits 0" flush
check "the service user delivers the user's message to the emulator" delivered "from an unprivileged user"
queue_empty() { [ -z "$(entries drop)$(entries queue)" ] && mailq | tee /dev/stderr | grep -q 'Mail queue is empty'; }
check "the queue is empty afterwards (mailq)" queue_empty

tag=$$.$(date +%s)
command -v php >/dev/null || apt_install php-cli >/dev/null 2>&1
command -v bsd-mailx >/dev/null || apt_install bsd-mailx >/dev/null 2>&1
php_mail() {
	timeout 60 runuser -u exo-test-user -- php -d "sendmail_path=/usr/sbin/sendmail -t -i" -r \
		"exit(mail('ops@contoso.com', 'php $tag', 'Hello from PHP.', 'From: www-data@web1.contoso.com') ? 0 : 1);"
}
mailx_mail() { echo "Hello from mailx." | timeout 60 runuser -u exo-test-user -- bsd-mailx -s "mailx $tag" ops@contoso.com; }
cron_mail() {
	printf 'Subject: cron %s\nTo: root\n\nOutput of a cron job.\n' "$tag" |
		timeout 60 runuser -u exo-test-user -- /usr/sbin/sendmail -FCronDaemon -i -B8BITMIME -oem root
}
check "PHP mail() as a user queues (sendmail_path = sendmail -t -i)" php_mail
check "bsd-mailx as a user queues" mailx_mail
check "a cron-style call as a user queues (-FCronDaemon -i -B8BITMIME -oem root)" cron_mail
check "the service user runs the queue again" flush
check "PHP's message is delivered" delivered "php $tag"
check "mailx's message is delivered" delivered "mailx $tag"
check "cron's message is delivered (root aliased to ops@contoso.com)" delivered "cron $tag"

# ------------------------------------------------------------------ upgrade

upgrade_setup() {
	printf 'Subject: survives the upgrade %s\n\nqueued before the upgrade\n' "$tag" |
		timeout 60 runuser -u exo-test-user -- /usr/sbin/sendmail -i ops@contoso.com
}
check "queue a message before the upgrade" upgrade_setup
conf_sum=$(sha256sum /etc/exo-sendmail/sendmail.toml | cut -d' ' -f1)
queued_before=$(entries drop; entries queue)
old_version=$(dpkg-query -W -f='${Version}' exo-sendmail)
upgrade() {
	local new
	new="$VERSION+upgrade1"
	VERSION=$new DIST=dist/upgrade packaging/build.sh deb >/dev/null || return 1
	apt_install ./dist/upgrade/exo-sendmail_*.deb || return 1
	echo "upgraded $old_version -> $(dpkg-query -W -f='${Version}' exo-sendmail)"
	[ "$(dpkg-query -W -f='${Version}' exo-sendmail)" = "$new-1" ]
}
check "upgrade to a higher version with apt-get install" upgrade
rm -rf dist/upgrade
check "the upgrade keeps the edited configuration" \
	bash -c "[ \"\$(sha256sum /etc/exo-sendmail/sendmail.toml | cut -d' ' -f1)\" = $conf_sum ]"
kept_queue() {
	local now
	now=$(entries drop; entries queue)
	echo "before: $queued_before"
	echo "after:  $now"
	[ -n "$queued_before" ] && [ "$queued_before" = "$now" ]
}
check "the upgrade keeps the queue" kept_queue
check "the upgrade keeps modes and owners" modes
check "the service user delivers the message queued before the upgrade" \
	bash -c "timeout 300 runuser -u exo-sendmail -- /usr/sbin/sendmail -q </dev/null && grep -rlF -- 'survives the upgrade $tag' '$emu'/maildir/*/new/ | grep -q ."

# -------------------------------------------------------------------- purge

check "apt-get purge exo-sendmail" aptget purge exo-sendmail
purged() {
	local rc=0 p
	for p in /usr/sbin/sendmail /etc/exo-sendmail /var/spool/exo-sendmail /var/lib/exo-sendmail \
		/lib/systemd/system/exo-sendmail.service /etc/systemd/system/multi-user.target.wants/exo-sendmail.service; do
		if [ -e "$p" ] || [ -L "$p" ]; then echo "left behind: $p"; rc=1; fi
	done
	getent passwd exo-sendmail && { echo "user exo-sendmail left"; rc=1; }
	getent group exo-sendmail && { echo "group exo-sendmail left"; rc=1; }
	getent group exo-sendmail-drop && { echo "group exo-sendmail-drop left"; rc=1; }
	dpkg-statoverride --list | grep exo-sendmail && { echo "statoverrides left"; rc=1; }
	return $rc
}
check "purge removes files, spool, state, configuration, overrides and users" purged

finish
