package transport

// Against the project's Exchange Online emulator, with tokens from the
// project's token source: the two other implementations of the protocols in
// this tree.

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exo-sendmail/exo-sendmail/emulator"
	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
)

const (
	emuSecret   = "Emu8Q~valid.secret_value"
	emuNoRoleID = "22222222-2222-4333-8444-555555555555"
	emuDisabled = "legacy@contoso.com"
)

func startEmulator(t *testing.T) *emulator.Emulator {
	t.Helper()
	emu, err := emulator.Start(emulator.Config{
		Dir:    t.TempDir(),
		Tenant: emulator.DefaultTenant,
		Apps: []emulator.App{
			{ClientID: emulator.DefaultClientID, Secrets: []emulator.Secret{{Value: emuSecret}},
				SMTPRole: true, GraphRole: true, Mailboxes: []string{emulator.DefaultMailbox, emuDisabled}},
			{ClientID: emuNoRoleID, Secrets: []emulator.Secret{{Value: emuSecret}}, Mailboxes: []string{emulator.DefaultMailbox}},
		},
		Mailboxes: []emulator.Mailbox{{Address: emulator.DefaultMailbox}, {Address: emuDisabled, SMTPAuthDisabled: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}

func emuTokens(t *testing.T, emu *emulator.Emulator, clientID, scope string) *token.Source {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(emuSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := token.New(token.Config{TokenURL: emu.TokenURL, ClientID: clientID, Scope: scope, SecretFile: secret,
		HTTPClient: emu.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func emuSMTP(t *testing.T, emu *emulator.Emulator, clientID, mbox string) *SMTP {
	t.Helper()
	c := NewSMTP(SMTPConfig{Server: emu.SMTPAddr, Mailbox: mbox, HeloName: "host.example.test", RootCAs: emu.RootCAs(),
		Tokens: emuTokens(t, emu, clientID, "https://outlook.office365.com/.default")})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEmulatorSMTP(t *testing.T) {
	emu := startEmulator(t)
	c := emuSMTP(t, emu, emulator.DefaultClientID, emulator.DefaultMailbox)
	body := "From: alerts@contoso.com\nTo: bob@fabrikam.example\nSubject: disk\nMessage-ID: <m1@host.example.test>\n\n.dot\nok\n"
	ctx := context.Background()
	res, err := c.Send(ctx, textMessage(emulator.DefaultMailbox, body, "bob@fabrikam.example"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Reply, "250 2.") {
		t.Errorf("reply %q", res.Reply)
	}
	before := emu.Stats()
	if _, err := c.Send(ctx, textMessage(emulator.DefaultMailbox, body, "bob@fabrikam.example")); err != nil {
		t.Fatal(err)
	}
	after := emu.Stats()
	// A reused connection: MAIL, RCPT, DATA (then the message and its reply).
	if n := after.SMTPCommands - before.SMTPCommands; n != 3 {
		t.Errorf("second message took %d commands, want 3", n)
	}
	if after.SMTPConnections != 1 || after.TokensIssued != 1 {
		t.Errorf("stats %+v: want 1 connection, 1 token", after)
	}
	msgs := emu.Messages()
	if len(msgs) != 2 || msgs[0].Via != "smtp" || !strings.Contains(string(msgs[0].Data), "\r\n.dot\r\nok\r\n") {
		t.Errorf("stored %+v", msgs)
	}
}

func TestEmulatorSMTPRecipients(t *testing.T) {
	emu := startEmulator(t)
	emu.SetFaults(emulator.Faults{RcptTemp: []string{"later@fabrikam.example"}, RcptPerm: []string{"gone@fabrikam.example"}})
	c := emuSMTP(t, emu, emulator.DefaultClientID, emulator.DefaultMailbox)
	res, err := c.Send(context.Background(), textMessage(emulator.DefaultMailbox, "Subject: x\r\n\r\nx\r\n",
		"bob@fabrikam.example", "later@fabrikam.example", "gone@fabrikam.example"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Rejected["later@fabrikam.example"].Class != failure.Temporary || res.Rejected["gone@fabrikam.example"].Class != failure.Permanent || len(res.Rejected) != 2 {
		t.Errorf("rejected %v", res.Rejected)
	}
	if msgs := emu.Messages(); len(msgs) != 1 || !slices.Equal(msgs[0].Rcpts, []string{"bob@fabrikam.example"}) {
		t.Errorf("stored %+v", msgs)
	}
}

func TestEmulatorSMTPConfigErrors(t *testing.T) {
	emu := startEmulator(t)
	msg := textMessage(emulator.DefaultMailbox, "Subject: x\r\n\r\nx\r\n", "bob@fabrikam.example")

	// SMTP AUTH disabled for the mailbox.
	_, err := emuSMTP(t, emu, emulator.DefaultClientID, emuDisabled).Send(context.Background(), msg)
	fe := wantClass(t, err, failure.Config)
	if !strings.Contains(fe.Reply, "5.7.139") || !strings.Contains(fe.Remedy, "Set-CASMailbox -Identity "+emuDisabled) {
		t.Errorf("error %v", fe)
	}

	// An app without SMTP.SendAsApp: refused, renewed, refused again.
	_, err = emuSMTP(t, emu, emuNoRoleID, emulator.DefaultMailbox).Send(context.Background(), msg)
	fe = wantClass(t, err, failure.Config)
	if !strings.HasPrefix(fe.Reply, "535 5.7.3") || !strings.Contains(fe.Remedy, "SMTP.SendAsApp") {
		t.Errorf("error %v", fe)
	}
}

// The emulator stores the message and closes the connection without its
// 250: the caller learns that the message may have been accepted.
func TestEmulatorSMTPDropAfterData(t *testing.T) {
	emu := startEmulator(t)
	emu.SetFaults(emulator.Faults{DropAfterData: true})
	c := emuSMTP(t, emu, emulator.DefaultClientID, emulator.DefaultMailbox)
	_, err := c.Send(context.Background(), textMessage(emulator.DefaultMailbox, "Subject: x\r\n\r\nx\r\n", "bob@fabrikam.example"))
	wantClass(t, err, failure.Temporary)
	if !strings.Contains(err.Error(), "may have been accepted") {
		t.Errorf("error %v", err)
	}
	emu.SetFaults(emulator.Faults{})
	if _, err := c.Send(context.Background(), textMessage(emulator.DefaultMailbox, "Subject: y\r\n\r\ny\r\n", "bob@fabrikam.example")); err != nil {
		t.Fatalf("after a dropped connection: %v", err)
	}
}

func TestEmulatorGraph(t *testing.T) {
	emu := startEmulator(t)
	g := NewGraph(GraphConfig{URL: emu.GraphURL, Mailbox: emulator.DefaultMailbox, RootCAs: emu.RootCAs(),
		Tokens: emuTokens(t, emu, emulator.DefaultClientID, "https://graph.microsoft.com/.default")})
	t.Cleanup(func() { g.Close() })
	body := "From: alerts@contoso.com\nTo: bob@fabrikam.example\nSubject: disk\n\nbody\n"
	res, err := g.Send(context.Background(), textMessage(emulator.DefaultMailbox, body, "bob@fabrikam.example", "hidden@fabrikam.example"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Reply, "HTTP 202") {
		t.Errorf("reply %q", res.Reply)
	}
	msgs := emu.Messages()
	if len(msgs) != 1 || msgs[0].Via != "graph" || !slices.Contains(msgs[0].Rcpts, "hidden@fabrikam.example") || !slices.Contains(msgs[0].Rcpts, "bob@fabrikam.example") {
		t.Errorf("stored %+v", msgs)
	}

	emu.SetFaults(emulator.Faults{GraphThrottle: 1})
	_, err = g.Send(context.Background(), textMessage(emulator.DefaultMailbox, body, "bob@fabrikam.example"))
	fe := wantClass(t, err, failure.Throttled)
	if fe.RetryAfter != time.Second {
		t.Errorf("RetryAfter %v, want 1s", fe.RetryAfter)
	}
}
