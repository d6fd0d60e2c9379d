package emulator

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type graphReply struct {
	status     int
	retryAfter string
	body       []byte
	Error      struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func sendMail(t *testing.T, e *Emulator, user, token, contentType string, body []byte) graphReply {
	t.Helper()
	req, err := http.NewRequest("POST", e.GraphURL+"/users/"+user+"/sendMail", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := graphReply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	r.body, _ = io.ReadAll(resp.Body)
	if len(r.body) > 0 {
		if err := json.Unmarshal(r.body, &r); err != nil {
			t.Fatalf("Graph answered %d with a body that is not JSON: %q", r.status, r.body)
		}
	}
	return r
}

func b64(s string) []byte { return []byte(base64.StdEncoding.EncodeToString([]byte(s))) }

const graphMIME = "From: noreply@contoso.com\r\nTo: ops@fabrikam.com, Dev <dev@fabrikam.com>\r\nCc: cc@fabrikam.com\r\nBcc: hidden@fabrikam.com,\r\n  hidden2@fabrikam.com\r\nSubject: disk\r\n\r\nbody\r\n"

func TestGraphSendMail(t *testing.T) {
	e := start(t, testConfig(t))
	tok := token(t, e, clientID, graphScope)
	r := sendMail(t, e, mailbox, tok, "text/plain", b64(graphMIME))
	if r.status != http.StatusAccepted || len(r.body) != 0 {
		t.Fatalf("got %d %q, want 202 with an empty body", r.status, r.body)
	}
	msgs := e.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages recorded", len(msgs))
	}
	m := msgs[0]
	wantRcpts := "ops@fabrikam.com dev@fabrikam.com cc@fabrikam.com hidden@fabrikam.com hidden2@fabrikam.com"
	if m.Via != "graph" || m.Mailbox != mailbox || m.MailFrom != sendAs || strings.Join(m.Rcpts, " ") != wantRcpts {
		t.Errorf("recorded %+v", m)
	}
	wantData := strings.Replace(graphMIME, "Bcc: hidden@fabrikam.com,\r\n  hidden2@fabrikam.com\r\n", "", 1)
	if string(m.Data) != wantData {
		t.Errorf("stored\n%q\nwant (Bcc removed, the rest as sent)\n%q", m.Data, wantData)
	}
	files, _ := filepath.Glob(filepath.Join(e.Maildir("hidden2@fabrikam.com"), "new", "*"))
	if len(files) != 1 {
		t.Fatalf("Bcc recipient got %d copies", len(files))
	}
	if got, _ := os.ReadFile(files[0]); !bytes.HasSuffix(got, []byte(wantData)) || bytes.Contains(got, []byte("Bcc:")) {
		t.Errorf("Bcc recipient's copy: %q", got)
	}
	// Line-wrapped base64 and a URL-escaped address are accepted too.
	wrapped := bytes.Join([][]byte{b64(graphMIME)[:40], b64(graphMIME)[40:]}, []byte("\r\n"))
	if r := sendMail(t, e, "alerts%40contoso.com", tok, "text/plain", wrapped); r.status != 202 {
		t.Errorf("wrapped base64: %d %s", r.status, r.body)
	}
	if s := e.Stats(); s.GraphRequests != 2 {
		t.Errorf("GraphRequests = %d, want 2", s.GraphRequests)
	}
}

func TestGraphErrors(t *testing.T) {
	e := start(t, testConfig(t))
	tok := token(t, e, clientID, graphScope)
	tests := []struct {
		name, user, token, ct string
		body                  []byte
		status                int
		code                  string
	}{
		{"no token", mailbox, "", "text/plain", b64(graphMIME), 401, "InvalidAuthenticationToken"},
		{"SMTP token", mailbox, token(t, e, clientID, smtpScope), "text/plain", b64(graphMIME), 401, "InvalidAuthenticationToken"},
		{"no Mail.Send", mailbox, token(t, e, noRoleID, graphScope), "text/plain", b64(graphMIME), 403, "ErrorAccessDenied"},
		{"no mailbox access", mailbox, token(t, e, noAccessID, graphScope), "text/plain", b64(graphMIME), 403, "ErrorAccessDenied"},
		{"unknown user", "nobody@contoso.com", tok, "text/plain", b64(graphMIME), 404, "ErrorInvalidUser"},
		{"send as denied", mailbox, tok, "text/plain", b64(strings.Replace(graphMIME, "noreply@", "root@", 1)), 403, "ErrorSendAsDenied"},
		{"bad base64", mailbox, tok, "text/plain", []byte("not base64!"), 400, "ErrorMimeContentInvalidBase64String"},
		{"no recipients", mailbox, tok, "text/plain", b64("From: alerts@contoso.com\r\nSubject: x\r\n\r\nx\r\n"), 400, "ErrorInvalidRecipients"},
		{"JSON", mailbox, tok, "application/json", b64(graphMIME), 400, "BadRequest"},
		{"too large", mailbox, tok, "text/plain", bytes.Repeat([]byte("QUFB"), maxGraphBody/4+1), 413, "ErrorMessageSizeExceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := sendMail(t, e, tc.user, tc.token, tc.ct, tc.body)
			if r.status != tc.status || r.Error.Code != tc.code || r.Error.Message == "" {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	if n := len(e.Messages()); n != 0 {
		t.Errorf("%d messages recorded", n)
	}
	// Exactly 4 MB of base64 is still accepted (and refused only for what it holds).
	r := sendMail(t, e, mailbox, tok, "text/plain", bytes.Repeat([]byte("QUFB"), maxGraphBody/4))
	if r.status == 413 {
		t.Errorf("a 4 MB body got 413")
	}
}

func TestGraphThrottle(t *testing.T) {
	e := start(t, testConfig(t))
	tok := token(t, e, clientID, graphScope)
	e.SetFaults(Faults{GraphThrottle: 2})
	for i := range 2 {
		r := sendMail(t, e, mailbox, tok, "text/plain", b64(graphMIME))
		if r.status != 429 || r.retryAfter != "1" || r.Error.Code == "" {
			t.Fatalf("request %d: %d Retry-After %q %s, want 429 Retry-After 1", i, r.status, r.retryAfter, r.body)
		}
	}
	if r := sendMail(t, e, mailbox, tok, "text/plain", b64(graphMIME)); r.status != 202 {
		t.Fatalf("after the throttling: %d %s", r.status, r.body)
	}
	if s := e.Stats(); s.ThrottleReplies != 2 || s.GraphRequests != 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestControlEndpoints(t *testing.T) {
	e := start(t, testConfig(t))
	c := e.HTTPClient()
	resp, err := c.Post(e.BaseURL+"/_emulator/faults", "application/json",
		strings.NewReader(`{"token_down":true,"latency":"1ms","rcpt_perm":["gone@fabrikam.com"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if f := e.currentFaults(); resp.StatusCode != 200 || !f.TokenDown || f.Latency.String() != "1ms" || len(f.RcptPerm) != 1 {
		t.Fatalf("POST faults: %s, faults now %+v", resp.Status, f)
	}
	r := postToken(t, e, e.TokenURL, secretForm(clientID, goodSecret, smtpScope))
	if r.status != 503 {
		t.Errorf("token endpoint with TokenDown: %d", r.status)
	}
	resp, err = c.Post(e.BaseURL+"/_emulator/faults", "application/json", strings.NewReader(`{"tokendown":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("unknown fault field: %s, want 400", resp.Status)
	}

	resp, err = c.Get(e.BaseURL + "/_emulator/stats")
	if err != nil {
		t.Fatal(err)
	}
	var s Stats
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s.TokenRequests != 1 {
		t.Errorf("stats over HTTPS: %+v", s)
	}
}
