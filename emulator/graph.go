package emulator

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxGraphBody is the request size Graph accepts for sendMail: 4 MB of
// base64, about 3 MB of MIME.
const maxGraphBody = 4 << 20

// graphError is a Graph error reply: {"error":{"code":...,"message":...}}.
type graphError struct {
	status  int
	code    string
	message string
}

// serveGraph answers POST /v1.0/users/{id}/sendMail with a base64 MIME body,
// checking what Graph checks, in its order.
func (e *Emulator) serveGraph(w http.ResponseWriter, r *http.Request) {
	e.count(func(s *Stats) *int { return &s.GraphRequests })
	f := e.currentFaults()
	e.pause(f.Latency)
	if e.takeGraphThrottle() {
		w.Header().Set("Retry-After", "1")
		e.writeGraphError(w, r, &graphError{http.StatusTooManyRequests, "ApplicationThrottled",
			"Application is over its MailboxConcurrency limit."})
		return
	}
	user, ok := sendMailUser(r.URL)
	if !ok {
		seg := strings.TrimPrefix(r.URL.Path, "/v1.0/")
		e.writeGraphError(w, r, &graphError{http.StatusBadRequest, "BadRequest",
			fmt.Sprintf("Resource not found for the segment '%s'.", strings.Split(seg, "/")[0])})
		return
	}
	if r.Method != http.MethodPost {
		e.writeGraphError(w, r, &graphError{http.StatusMethodNotAllowed, "Request_BadRequest",
			"Specified HTTP method is not allowed for the request target."})
		return
	}

	// Authentication and authorization.
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found || strings.TrimSpace(token) == "" {
		e.count(func(s *Stats) *int { return &s.AuthFailures })
		e.writeGraphError(w, r, &graphError{http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty."})
		return
	}
	g, err := e.verify(strings.TrimSpace(token), resourceGraph)
	if err != nil {
		e.count(func(s *Stats) *int { return &s.AuthFailures })
		w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`)
		e.writeGraphError(w, r, &graphError{http.StatusUnauthorized, "InvalidAuthenticationToken", err.Error()})
		return
	}
	if !containsFold(g.roles, roleGraph) {
		e.count(func(s *Stats) *int { return &s.AuthFailures })
		e.writeGraphError(w, r, &graphError{http.StatusForbidden, "ErrorAccessDenied", "Access is denied. Check credentials and try again."})
		return
	}
	mb, ok := e.mailbox(user)
	if !ok {
		e.writeGraphError(w, r, &graphError{http.StatusNotFound, "ErrorInvalidUser",
			fmt.Sprintf("The requested user '%s' is invalid.", user)})
		return
	}
	if !g.app.mayUse(mb.Address) {
		e.count(func(s *Stats) *int { return &s.AuthFailures })
		e.writeGraphError(w, r, &graphError{http.StatusForbidden, "ErrorAccessDenied",
			"Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings."})
		return
	}
	release, ok := e.graphEnter(mb.Address)
	if !ok {
		w.Header().Set("Retry-After", "1")
		e.writeGraphError(w, r, &graphError{http.StatusTooManyRequests, "ApplicationThrottled",
			"Application is over its MailboxConcurrency limit."})
		return
	}
	defer release()

	// The MIME body.
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "text/plain" {
		e.writeGraphError(w, r, &graphError{http.StatusBadRequest, "BadRequest",
			"Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format."})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxGraphBody+1))
	if err != nil {
		e.writeGraphError(w, r, &graphError{http.StatusBadRequest, "BadRequest", "Unable to read the request body."})
		return
	}
	if len(body) > maxGraphBody {
		w.Header().Set("Connection", "close")
		e.writeGraphError(w, r, &graphError{http.StatusRequestEntityTooLarge, "ErrorMessageSizeExceeded",
			"The message exceeds the maximum supported size., Cannot save changes made to an item to store."})
		return
	}
	data, err := decodeMIME(body)
	if err != nil {
		e.writeGraphError(w, r, &graphError{http.StatusBadRequest, "ErrorMimeContentInvalidBase64String",
			"Invalid base64 string for MIME content."})
		return
	}
	ge, m := e.graphMessage(mb, data)
	if ge != nil {
		if ge.status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(int(m.retry/time.Second)+1))
		}
		e.writeGraphError(w, r, ge)
		return
	}
	if err := e.deliver(m.Message); err != nil {
		e.writeGraphError(w, r, &graphError{http.StatusServiceUnavailable, "ErrorInternalServerTransientError",
			"An internal server error occurred. Try again later."})
		return
	}
	e.graphHeaders(w, r)
	w.WriteHeader(http.StatusAccepted)
}

// graphSubmission is a message Graph accepted, or the wait a refusal asks for.
type graphSubmission struct {
	Message
	retry time.Duration
}

// graphMessage reads the sender and the recipients from the MIME header, as
// Graph does (there is no envelope), and removes Bcc from the stored copy.
func (e *Emulator) graphMessage(mb *Mailbox, data []byte) (*graphError, graphSubmission) {
	fields, body := splitHeader(data)
	from, err := addresses(fields, "From")
	if err != nil || len(from) > 1 {
		return &graphError{http.StatusBadRequest, "ErrorMimeContentConversionFailed",
			"The MIME content could not be converted: the From header is not valid."}, graphSubmission{}
	}
	for _, a := range from {
		if !mb.maySendAs(a) {
			return &graphError{http.StatusForbidden, "ErrorSendAsDenied",
				"The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message."}, graphSubmission{}
		}
	}
	var rcpts []string
	for _, name := range []string{"To", "Cc", "Bcc"} {
		list, err := addresses(fields, name)
		if err != nil {
			return &graphError{http.StatusBadRequest, "ErrorInvalidRecipients",
				fmt.Sprintf("At least one recipient is not valid., Recipient '%s' is not resolved. All recipients must be resolved before a message can be submitted.", strings.Join(values(fields, name), ", "))}, graphSubmission{}
		}
		rcpts = append(rcpts, list...)
	}
	if len(rcpts) == 0 {
		return &graphError{http.StatusBadRequest, "ErrorInvalidRecipients",
			"At least one recipient is not valid., A message can't be sent because it contains no recipients."}, graphSubmission{}
	}
	if over, wait := e.quotaExceeded(mb.Address, len(rcpts)); over {
		return &graphError{http.StatusTooManyRequests, "ErrorSubmissionQuotaExceeded",
			"Cannot submit message. The sender has exceeded the submission quota."}, graphSubmission{retry: wait}
	}
	var stored bytes.Buffer
	for _, f := range fields {
		if !strings.EqualFold(f.name, "Bcc") {
			stored.Write(f.raw)
		}
	}
	stored.Write(body)
	sender := mb.Address
	if len(from) == 1 {
		sender = from[0]
	}
	return nil, graphSubmission{Message: Message{
		Via: "graph", ID: messageID(fields), Mailbox: mb.Address, MailFrom: sender, Rcpts: rcpts, Data: stored.Bytes(),
	}}
}

// sendMailUser returns {id} of /v1.0/users/{id}/sendMail; Graph matches the
// segments case-insensitively.
func sendMailUser(u *url.URL) (string, bool) {
	parts := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
	if len(parts) != 4 || parts[0] != "v1.0" || !strings.EqualFold(parts[1], "users") || !strings.EqualFold(parts[3], "sendMail") {
		return "", false
	}
	user, err := url.PathUnescape(parts[2])
	if err != nil || user == "" {
		return "", false
	}
	return strings.Trim(user, "'"), true
}

// decodeMIME decodes the base64 body; Graph tolerates line breaks in it.
func decodeMIME(body []byte) ([]byte, error) {
	clean := bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, body)
	if len(clean) == 0 {
		return nil, fmt.Errorf("empty body")
	}
	return base64.StdEncoding.DecodeString(string(clean))
}

func (e *Emulator) takeGraphThrottle() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.faults.GraphThrottle <= 0 {
		return false
	}
	e.faults.GraphThrottle--
	e.stats.ThrottleReplies++
	return true
}

func (e *Emulator) graphHeaders(w http.ResponseWriter, r *http.Request) string {
	id := newGUID()
	w.Header().Set("request-id", id)
	if c := r.Header.Get("client-request-id"); c != "" {
		w.Header().Set("client-request-id", c)
	} else {
		w.Header().Set("client-request-id", id)
	}
	return id
}

func (e *Emulator) writeGraphError(w http.ResponseWriter, r *http.Request, ge *graphError) {
	id := e.graphHeaders(w, r)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ge.status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code":    ge.code,
		"message": ge.message,
		"innerError": map[string]string{
			"date":              time.Now().UTC().Format("2006-01-02T15:04:05"),
			"request-id":        id,
			"client-request-id": w.Header().Get("client-request-id"),
		},
	}})
}
