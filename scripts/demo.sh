#!/usr/bin/env bash
# The main job on the built-in default: a message from "PHP" through
# sendmail into the queue, through the flusher to the Exchange Online
# emulator, and out of the emulator's mailbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
dir=$PWD/demo
rm -rf "$dir"; mkdir -p "$dir"

"$bin/exo-sendmail" emulator --dir "$dir" >"$dir/emulator.log" 2>&1 &
emu=$!
trap 'kill $emu 2>/dev/null; wait $emu 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$dir/ready" ] && break; sleep 0.1; done
[ -f "$dir/ready" ] || { cat "$dir/emulator.log"; echo "demo: the emulator did not start"; exit 1; }
export EXO_SENDMAIL_CONFIG=$dir/sendmail.toml
sed -i 's/^\[flusher\]//; $a [flusher]\nauto_start = false' "$EXO_SENDMAIL_CONFIG"

echo "== 1. PHP mail() pipes a message into sendmail -t -i (as www-data would)"
printf 'To: ops@contoso.com\r\nSubject: Hello from PHP\r\nFrom: www-data@web1.contoso.com\r\n\r\nThe web application says hello.\n' \
  | "$bin/sendmail" -t -i
echo "   exit status $?"
echo
echo "== 2. mailq: the message is queued durably"
"$bin/mailq"
echo "== 3. sendmail -q: the flusher delivers through the emulator (OAuth token, STARTTLS, XOAUTH2)"
"$bin/sendmail" -q -v 2>&1 | sed 's/^/   /'
echo
echo "== 4. mailq again"
"$bin/mailq"
echo
echo "== 5. What the mailbox ops@contoso.com received:"
f=$(ls "$dir"/maildir/ops@contoso.com/new/* | head -1)
sed 's/^/   | /' "$f"
