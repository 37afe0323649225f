package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Tokens is a secret token set as the vault stores it. It never goes into an
// event, a log line or an error: String, GoString, LogValue and MarshalJSON
// are redacted. Adapters that must serialise it (the vault) copy the fields
// into a record type of their own.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	TokenType    string
	Expiry       time.Time
	Scopes       []string
}

const redacted = "[REDACTED]"

func (Tokens) String() string               { return "domain.Tokens" + redacted }
func (Tokens) GoString() string             { return "domain.Tokens" + redacted }
func (Tokens) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Tokens) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (Tokens) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Format redacts t for every fmt verb: String and GoString alone cover only
// %v, %s, %q, %x, %X and %#v, and %d or %t would print the fields.
func (Tokens) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "domain.Tokens"+redacted) }

// Info describes t by fingerprints, expiry and scopes.
func (t Tokens) Info() TokenInfo {
	return TokenInfo{
		AccessTokenFP:        Fingerprint(t.AccessToken),
		RefreshTokenFP:       Fingerprint(t.RefreshToken),
		AccessTokenExpiresAt: t.Expiry.UTC(),
		Scopes:               t.Scopes,
	}
}

// Fingerprint identifies a secret without revealing it: "sha256:" and the
// first 12 hex digits (48 bits) of its SHA-256. Empty input gives "".
func Fingerprint(secret string) string {
	if secret == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(sum[:6])
}
