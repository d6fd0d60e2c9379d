package queue

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// FuzzEnvelopeEncoding: appendEnvelope writes what json.Marshal writes,
// byte for byte, for any field values (escapes, invalid UTF-8, empty
// and omitted fields, times in any zone), and json.Unmarshal reads it
// back as the envelope it was.
func FuzzEnvelopeEncoding(f *testing.F) {
	f.Add("root@web1.contoso.com", "ops@contoso.com", "", "", "", "", "", "root", int64(1795285215), int64(622360445), 0, 0, 0, false)
	f.Add("", "a\"b\\c<d>&e@x", "SUCCESS,FAILURE", "rfc822;a@x", "HDRS", "env\x00id", "contoso", "\xff\u2028\u2029\t\n\r\b\f\x7f", int64(-62135596801), int64(999999999), -1, 1, 3600*5+1800, true)
	f.Add("ü@bücher.example", "\U0001F600@x", "NEVER", "utf-8;x", "FULL", "", "", "", int64(253402300800), int64(0), 65534, 3, -3600*11, true)
	f.Fuzz(func(t *testing.T, sender, addr, notify, orcpt, ret, envid, account, user string, secs, nanos int64, uid, nrcpt, zone int, flags bool) {
		env := Envelope{Sender: sender, Ret: ret, EnvID: envid, Account: account, User: user, UID: uid,
			Body8Bit: flags, SMTPUTF8: !flags, IsDSN: flags && nrcpt%2 == 0,
			Submitted: time.Unix(secs, nanos).In(time.FixedZone("", zone%(18*3600)))}
		if nrcpt >= 0 {
			env.Recipients = []Recipient{}
			for i := range nrcpt % 4 {
				env.Recipients = append(env.Recipients, Recipient{Addr: addr + string(rune('a'+i)), Notify: notify, ORcpt: orcpt})
			}
		}
		want, wantErr := json.Marshal(&env)
		got, err := appendEnvelope(nil, &env)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("appendEnvelope error %v, json.Marshal error %v", err, wantErr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendEnvelope wrote\n%s\njson.Marshal writes\n%s", got, want)
		}
		var back, viaJSON Envelope
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("json.Unmarshal of %s: %v", got, err)
		}
		json.Unmarshal(want, &viaJSON)
		if !reflect.DeepEqual(back, viaJSON) {
			t.Fatalf("read back %+v, want %+v", back, viaJSON)
		}
	})
}
