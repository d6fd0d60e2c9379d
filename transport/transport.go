// Package transport delivers a prepared message to Exchange Online, over SMTP
// AUTH XOAUTH2 (submission with STARTTLS) or over Microsoft Graph sendMail, and
// classifies every outcome (package failure) where it is known: per recipient
// at RCPT, for the whole message after DATA or from the HTTP status.
//
// The message bytes are already prepared by the caller (headers rewritten,
// lines of at most 998 octets, LF or CRLF line ends); this package only speaks
// the protocols.
package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/exo-sendmail/exo-sendmail/failure"
)

// TokenSource hands out access tokens for one account.
type TokenSource interface {
	// Token returns a valid access token.
	Token(ctx context.Context) (string, error)
	// Renew returns a new token after the server rejected stale.
	Renew(ctx context.Context, stale string) (string, error)
}

// Recipient is one envelope recipient with its DSN parameters.
type Recipient struct {
	Addr   string
	Notify string // "" or a DSN NOTIFY value: "NEVER" or a list of SUCCESS, FAILURE, DELAY
	ORcpt  string // original recipient address (DSN ORCPT), "" for none
}

// Message is one prepared message and its envelope.
type Message struct {
	MailFrom   string // envelope sender; "" is the null sender <>
	Recipients []Recipient
	Ret, EnvID string // DSN RET (FULL or HDRS) and ENVID, may be empty
	Body8Bit   bool   // request BODY=8BITMIME (when the server offers it)
	SMTPUTF8   bool   // request SMTPUTF8 (only when an address needs it)
	Size       int64  // size of the prepared message in bytes
	// Open returns the prepared message. It may be called more than once
	// (a retry, a size pass before the upload); each reader is closed.
	Open func() (io.ReadCloser, error)
}

// Result is the outcome of an accepted transaction.
type Result struct {
	// Rejected holds the recipients the server refused at RCPT, keyed by
	// address; every other recipient was accepted.
	Rejected map[string]*failure.Error
	// Reply is the server's final reply (it carries the queue id).
	Reply string
}

// Sender delivers messages for one account.
type Sender interface {
	// Send delivers msg. A non-nil error (always a *failure.Error) means the
	// whole transaction failed and no recipient was accepted. When the
	// transaction failed because every recipient was refused at RCPT,
	// Result.Rejected still lists each recipient with its own class.
	Send(ctx context.Context, msg *Message) (Result, error)
	// Close releases the connection(s).
	Close() error
}

// ErrTooLargeForGraph is wrapped in the *failure.Error returned when a message
// cannot go through Graph sendMail because of its size; SMTP may still take it.
var ErrTooLargeForGraph = errors.New("message too large for Graph sendMail")

// RootCAs returns the system certificate pool (which honours SSL_CERT_FILE and
// SSL_CERT_DIR) with the certificates of caFile added; caFile may be empty.
// Its errors are configuration errors.
func RootCAs(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, &failure.Error{Class: failure.Config, Err: fmt.Errorf("read ca_file: %w", err),
			Remedy: "set ca_file to a readable PEM file of CA certificates"}
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, &failure.Error{Class: failure.Config, Err: fmt.Errorf("ca_file %s holds no PEM certificate", caFile),
			Remedy: "set ca_file to a PEM file of CA certificates"}
	}
	return pool, nil
}

// asFailure returns err as a classified error: a *failure.Error found in its
// chain is returned as it is, anything else counts as temporary.
func asFailure(err error) *failure.Error {
	var fe *failure.Error
	if errors.As(err, &fe) {
		return fe
	}
	return failure.Wrap(failure.Temporary, err)
}
