package domain

import (
	"errors"
	"fmt"
	"time"
)

// CodeProviderUnavailable is the failure code of a token request that was
// not sent because the provider could not be reached or discovered yet.
// Such failures are transient and do not count toward the retry bound:
// the connection waits for the provider (with backoff).
const CodeProviderUnavailable = "provider_unavailable"

// Failure is a classified token-endpoint failure. It never holds a token or
// the response body.
type Failure struct {
	// Terminal failures are never retried.
	Terminal bool
	// Code is the RFC 6749 error code (sanitised), or "network", "timeout",
	// "server_error_status", "rate_limited", "malformed_response",
	// "http_<status>".
	Code string
	// Status is the HTTP status (0 for network errors).
	Status int
	// RetryAfter is the server's Retry-After, if any.
	RetryAfter time.Duration
	// Detail is a short explanation written by tokenline (never the body).
	Detail string
}

func (f *Failure) Error() string {
	class := "transient"
	if f.Terminal {
		class = "terminal"
	}
	s := fmt.Sprintf("provider: %s failure: %s", class, f.Code)
	if f.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", f.Status)
	}
	if f.Detail != "" {
		s += ": " + f.Detail
	}
	return s
}

// FailureOf returns err's *Failure, or a transient "unclassified" failure
// for an error that carries none.
func FailureOf(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	return &Failure{Code: "unclassified", Detail: "token endpoint request failed"}
}

// SafeErrorCode keeps an OAuth error code from a provider or a caller to
// the RFC 6749 §5.2 character set (%x20-21 / %x23-5B / %x5D-7E) and at most
// 64 bytes, so that a hostile server cannot inject into logs, events or
// the UI. Anything else becomes "invalid_error_code"; "" stays "".
func SafeErrorCode(code string) string {
	if len(code) > 64 {
		code = code[:64]
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return "invalid_error_code"
		}
	}
	return code
}
