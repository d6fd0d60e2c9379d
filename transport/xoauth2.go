package transport

import "github.com/emersion/go-sasl"

// xoauth2 is the SASL XOAUTH2 client (Google's and Microsoft's bearer-token
// mechanism, which go-sasl does not carry). Exchange wants the mechanism name
// in upper case and the response as the initial response.
type xoauth2 struct {
	user, token string
	challenge   string // the JSON error the server sent in a 334, if any
}

var _ sasl.Client = (*xoauth2)(nil)

func (x *xoauth2) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + x.user + "\x01auth=Bearer " + x.token + "\x01\x01"), nil
}

// Next answers the server's error challenge (a JSON object saying why the
// token was refused) with an empty response, after which the server sends
// its final 535; the JSON is kept for the error report.
func (x *xoauth2) Next(challenge []byte) ([]byte, error) {
	x.challenge = string(challenge)
	return []byte{}, nil
}
