// Package failure classifies what went wrong during delivery where it is known
// (the token endpoint, the SMTP reply, the Graph status), so that the flusher
// only has to look at the class to decide: retry, bounce, hold or slow down.
package failure

import (
	"errors"
	"fmt"
	"time"
)

// Class says what the flusher must do about an error.
type Class int

const (
	// Temporary: retry the same message later (4xx, network, 5xx from the token endpoint).
	Temporary Class = iota
	// Permanent: the message (or the recipient) can never be delivered; bounce it.
	Permanent
	// Config: the account is misconfigured (credentials, permissions, SMTP AUTH
	// disabled). Never bounce for it: hold the account's mail and tell the admin.
	Config
	// Throttled: Exchange asks us to slow down (432 4.3.2, 550 5.2.25x,
	// SubmissionQuotaExceeded, Graph 429). Pause the account, then retry.
	Throttled
)

func (c Class) String() string {
	switch c {
	case Temporary:
		return "temporary"
	case Permanent:
		return "permanent"
	case Config:
		return "configuration"
	case Throttled:
		return "throttled"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Error is a classified delivery error. Reply holds what the peer said,
// verbatim (an SMTP reply with its enhanced code, an HTTP status with the
// error code, an AADSTS description); Remedy says what the administrator
// should do, for Config errors above all.
type Error struct {
	Class      Class
	Reply      string        // the peer's full reply, e.g. "535 5.7.3 Authentication unsuccessful"
	Remedy     string        // the administrator's fix, when known
	RetryAfter time.Duration // a delay the peer asked for (Retry-After), 0 if none
	Err        error         // the underlying error, if any
}

func (e *Error) Error() string {
	msg := e.Reply
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Remedy != "" {
		msg += " (" + e.Remedy + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err. Errors nobody classified count as
// temporary: retrying an unknown failure is safe, bouncing it is not.
func ClassOf(err error) Class {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Class
	}
	return Temporary
}

// New returns a classified error with the peer's reply.
func New(class Class, reply string) *Error {
	return &Error{Class: class, Reply: reply}
}

// Wrap classifies err, keeping it as the cause.
func Wrap(class Class, err error) *Error {
	return &Error{Class: class, Err: err}
}
