package check

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/exo-sendmail/exo-sendmail/failure"
	"github.com/exo-sendmail/exo-sendmail/token"
	"github.com/exo-sendmail/exo-sendmail/transport"
)

// sendGraph sends the test message through the account's Graph transport.
func (c *checker) sendGraph(ctx context.Context, src *token.Source) {
	g := transport.NewGraph(transport.GraphConfig{
		URL: c.ep.GraphURL, Mailbox: c.a.Mailbox, Tokens: src, RootCAs: c.roots, Timeout: sendTimeout,
	})
	defer g.Close()
	c.send(ctx, g, nil, "; Graph accepted it for delivery: a failure later comes back as a non-delivery report in "+c.a.Mailbox+"'s Inbox")
}

// send submits the test message and reports the server's answer; after is
// added to the line of an accepted message.
func (c *checker) send(ctx context.Context, s transport.Sender, cl *token.Claims, after string) {
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	data, id := c.testMessage(time.Now())
	msg := &transport.Message{
		MailFrom:   c.a.Mailbox,
		Recipients: []transport.Recipient{{Addr: c.sendTo}},
		Size:       int64(len(data)),
		Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
	}
	res, err := s.Send(ctx, msg)
	if fe := res.Rejected[c.sendTo]; fe != nil {
		c.sendFailed(fe, cl, "the recipient "+c.sendTo+" was refused", "check the --send-to address (the mailbox may also be barred from external recipients)")
		return
	}
	if err != nil {
		c.sendFailed(err, cl, "", "")
		return
	}
	c.r.ok("send", "test message %s from %s to %s accepted: %s%s", id, c.a.Mailbox, c.sendTo, res.Reply, after)
}

// sendFailed reports why the test message was not accepted; meaning and fix
// are used when the reply itself says nothing more.
func (c *checker) sendFailed(err error, cl *token.Claims, meaning, fix string) {
	var fe *failure.Error
	if !errors.As(err, &fe) {
		c.r.failure("send", err)
		return
	}
	said := fe.Reply
	if said == "" && fe.Err != nil {
		said = fe.Err.Error()
	}
	class := fe.Class
	if r, ok := transport.ParseReply(said); ok {
		if cls, m, f := c.explainReply(r, cl); m != "" {
			class, meaning, fix = cls, m, f
		}
	} else if strings.Contains(said, "ErrorSendAsDenied") {
		class, meaning, fix = c.explainReply(transport.Reply{Code: 554, Lines: []string{"SendAsDenied"}}, cl)
	}
	if fix == "" {
		fix = fe.Remedy
	}
	what := "the test message was not accepted: " + said
	if meaning != "" {
		what += "\n" + meaning
	}
	c.r.fail(class, "send", what, fix)
}

// testMessage returns the test message and its Message-ID.
func (c *checker) testMessage(now time.Time) ([]byte, string) {
	var rnd [12]byte
	rand.Read(rnd[:])
	host := c.cfg.Hostname
	id := "<check." + hex.EncodeToString(rnd[:]) + "@" + host + ">"
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", c.a.Mailbox)
	fmt.Fprintf(&b, "To: %s\r\n", c.sendTo)
	fmt.Fprintf(&b, "Subject: exo-sendmail check from %s\r\n", host)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: %s\r\n", id)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
	fmt.Fprintf(&b, "This test message was sent by `exo-sendmail check` on %s\r\n", host)
	fmt.Fprintf(&b, "through account %+q (mailbox %s, transport %s) at %s.\r\n", c.a.Name, c.a.Mailbox, c.a.Transport, now.UTC().Format("2006-01-02 15:04:05 UTC"))
	b.WriteString("Its arrival shows that delivery through Exchange Online works.\r\n")
	return b.Bytes(), id
}
