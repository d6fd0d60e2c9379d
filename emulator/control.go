package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"time"
)

// Faults are failures the emulator injects until they are replaced.
type Faults struct {
	RcptTemp      []string      `json:"rcpt_temp,omitempty"`       // RCPT TO these: 451 4.4.0
	RcptPerm      []string      `json:"rcpt_perm,omitempty"`       // RCPT TO these: 550 5.1.10 RecipientNotFound
	DropRate      float64       `json:"drop_rate,omitempty"`       // probability of dropping the connection at any SMTP command
	DropAfterData bool          `json:"drop_after_data,omitempty"` // accept and record the message, then close without the 250
	Latency       time.Duration `json:"-"`                         // a link's delay: each SMTP reply comes this long after the flight that carried its command (pipelined commands are answered together); each HTTP response this long after its request
	TokenDown     bool          `json:"token_down,omitempty"`      // the token endpoint answers 503
	GraphThrottle int           `json:"graph_throttle,omitempty"`  // the next N Graph requests get 429, Retry-After: 1
}

// faultsJSON carries Latency as a duration string ("250ms") on the wire.
type faultsJSON struct {
	faultsFields
	Latency string `json:"latency,omitempty"`
}

type faultsFields Faults

// MarshalJSON writes Latency as a Go duration string.
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{faultsFields: faultsFields(f)}
	if f.Latency > 0 {
		j.Latency = f.Latency.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Latency as a Go duration string and refuses unknown
// fields, so that a misspelt fault is an error rather than no fault.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	*f = Faults(j.faultsFields)
	if j.Latency != "" {
		d, err := time.ParseDuration(j.Latency)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		f.Latency = d
	}
	return nil
}

func (e *Emulator) newHTTPServer() *http.Server {
	return &http.Server{
		Handler:           http.HandlerFunc(e.route),
		TLSConfig:         e.ca.serverTLS(),
		ReadHeaderTimeout: 30 * time.Second,
		ReadTimeout:       5 * time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          quietLog,
	}
}

// route sends a request to the token endpoint (/{tenant}/oauth2/v2.0/token),
// Graph (/v1.0/...) or the control endpoints (/_emulator/...). ServeMux
// patterns cannot express both /{tenant}/... and /v1.0/.
func (e *Emulator) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v1.0/"):
		e.serveGraph(w, r)
	case p == "/_emulator/faults":
		e.serveFaults(w, r)
	case p == "/_emulator/stats":
		e.serveStats(w, r)
	case p == "/_emulator/messages":
		e.serveMessages(w, r)
	default:
		tenant, ok := strings.CutSuffix(strings.TrimPrefix(p, "/"), "/oauth2/v2.0/token")
		if !ok || tenant == "" || strings.Contains(tenant, "/") {
			http.NotFound(w, r)
			return
		}
		e.serveToken(w, r, tenant)
	}
}

// serveFaults shows (GET) or replaces (POST, JSON) the faults in effect, for
// a separately running emulator steered by scripts.
func (e *Emulator) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost, http.MethodPut:
		var f Faults
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&f); err != nil {
			http.Error(w, "faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		e.SetFaults(f)
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, e.currentFaults())
}

func (e *Emulator) serveStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, e.Stats())
}

// serveMessages lists the accepted messages (the raw bytes as base64).
func (e *Emulator) serveMessages(w http.ResponseWriter, _ *http.Request) {
	type message struct {
		Via      string   `json:"via"`
		ID       string   `json:"id"`
		Mailbox  string   `json:"mailbox"`
		MailFrom string   `json:"mail_from"`
		Rcpts    []string `json:"rcpts"`
		Data     []byte   `json:"data"`
	}
	out := []message{}
	for _, m := range e.Messages() {
		out = append(out, message(m))
	}
	writeJSON(w, out)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// quietLog swallows the HTTP server's own complaints (TLS handshakes from
// clients that do not trust the CA, garbage): tests provoke them on purpose.
var quietLog = log.New(io.Discard, "", 0)
