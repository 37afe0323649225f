// Package webhook delivers tokenline's connection events to HTTP receivers
// (issue 12): subscriptions recorded as events on a sibling stream, secrets
// sealed in an encrypted key-value bucket, one durable JetStream consumer per
// subscription shared by every instance, Standard Webhooks signatures, and
// the safety rules of an outbound HTTP client (https only, no redirects, no
// private targets, bounded answers).
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret (Standard Webhooks).
const SecretPrefix = "whsec_"

// secretBytes is the size of a new secret's key (the spec asks for 24 to 64).
const secretBytes = 32

// NewSecret returns a new signing secret: "whsec_" and the base64 of 32
// random bytes.
func NewSecret() string {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// SecretKey decodes a "whsec_" secret to its HMAC key.
func SecretKey(secret string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || len(k) == 0 {
		return nil, errors.New("webhook: secret is not whsec_ followed by base64")
	}
	return k, nil
}

// Fingerprint identifies a secret without revealing it ("sha256:" and 12
// hex digits, as token fingerprints).
func Fingerprint(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 19)
	out = append(out, "sha256:"...)
	for _, c := range sum[:6] {
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

// Sign returns one "v1,<base64 HMAC-SHA256>" signature of
// "<id>.<timestamp>.<body>" with key (Standard Webhooks, symmetric).
func Sign(key []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verification errors.
var (
	ErrNoSignature = errors.New("webhook: no matching signature")
	ErrTimestamp   = errors.New("webhook: timestamp outside the tolerance")
)

// Verify checks the webhook-signature header (space-separated "v1,<sig>"
// entries; any one matching is enough) of a message against secret, and
// that its timestamp is within tolerance of now. This is what a receiver
// does; the example receiver and the tests use it.
func Verify(secret, id, timestamp, signatures string, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := SecretKey(secret)
	if err != nil {
		return err
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return ErrTimestamp
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrTimestamp
	}
	want := Sign(key, id, ts, body)
	for _, s := range strings.Fields(signatures) {
		if subtle.ConstantTimeCompare([]byte(s), []byte(want)) == 1 {
			return nil
		}
	}
	return ErrNoSignature
}
