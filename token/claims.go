package token

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Claims are what `exo-sendmail check` shows of an access token: whom it is
// for (Audience must be the SMTP or Graph resource), which app and tenant,
// and which application permissions (Roles: SMTP.SendAsApp, Mail.Send).
type Claims struct {
	Audience string
	TenantID string
	AppID    string // appid (v1 tokens) or azp (v2)
	ObjectID string // the service principal's object id (oid)
	Roles    []string
	Expiry   time.Time
	IssuedAt time.Time
	Raw      map[string]any
}

// DecodeClaims reads the claims of a JWT access token without verifying its
// signature: only the resource verifies it. Errors never quote the token.
func DecodeClaims(accessToken string) (*Claims, error) {
	parts := strings.Split(accessToken, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("access token is not a JWT: %d dot-separated parts, want 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, errors.New("access token payload is not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, errors.New("access token payload is not a JSON object")
	}
	c := &Claims{
		Audience: audience(raw["aud"]),
		TenantID: str(raw["tid"]),
		AppID:    str(raw["appid"]),
		ObjectID: str(raw["oid"]),
		Expiry:   unix(raw["exp"]),
		IssuedAt: unix(raw["iat"]),
		Raw:      raw,
	}
	if c.AppID == "" {
		c.AppID = str(raw["azp"])
	}
	if roles, ok := raw["roles"].([]any); ok {
		for _, r := range roles {
			if s, ok := r.(string); ok {
				c.Roles = append(c.Roles, s)
			}
		}
	}
	return c, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// audience reads aud, a string or an array of strings (joined with spaces).
func audience(v any) string {
	if list, ok := v.([]any); ok {
		var auds []string
		for _, a := range list {
			if s, ok := a.(string); ok {
				auds = append(auds, s)
			}
		}
		return strings.Join(auds, " ")
	}
	return str(v)
}

func unix(v any) time.Time {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}
	}
	if i, err := n.Int64(); err == nil {
		return time.Unix(i, 0)
	}
	if f, err := n.Float64(); err == nil {
		return time.Unix(int64(f), 0)
	}
	return time.Time{}
}
