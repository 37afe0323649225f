package memory

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// failures is a countdown of injected failures (the Fail* methods of
// EventStore, Vault and Attempts). It is safe for concurrent use.
type failures struct {
	mu  sync.Mutex
	n   int
	err error
}

// set makes the next n takes return err (a generic error when nil).
func (f *failures) set(n int, err error) {
	if err == nil {
		err = errors.New("injected failure")
	}
	f.mu.Lock()
	f.n, f.err = n, err
	f.mu.Unlock()
}

// take returns the injected error if one is due, and counts it down.
func (f *failures) take() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n <= 0 {
		return nil
	}
	f.n--
	return f.err
}

// The failures below are *domain.Failure values exactly as
// adapters/provider.Classify produces them for the same response, for
// scripting a TokenEndpoint (FailNext) and for use-case tests.

// HTTPFailure returns the failure Classify makes of a token-endpoint error
// response with this status, OAuth error code and Retry-After: 429 is
// "rate_limited" and 5xx "server_error_status" (transient, keeping
// retryAfter); any other status with an error code is terminal with the
// (sanitised) code, and without a code terminal "http_<status>".
func HTTPFailure(status int, code string, retryAfter time.Duration) *domain.Failure {
	switch {
	case status == http.StatusTooManyRequests:
		return &domain.Failure{Code: "rate_limited", Status: status, RetryAfter: retryAfter}
	case status >= 500:
		return &domain.Failure{Code: "server_error_status", Status: status, RetryAfter: retryAfter}
	case code != "":
		return &domain.Failure{Terminal: true, Code: domain.SafeErrorCode(code), Status: status}
	default:
		return &domain.Failure{Terminal: true, Code: "http_" + strconv.Itoa(status), Status: status}
	}
}

// InvalidGrant is the terminal invalid_grant answer (HTTP 400): the grant
// or code is unknown, used, expired or revoked.
func InvalidGrant() *domain.Failure { return HTTPFailure(http.StatusBadRequest, "invalid_grant", 0) }

// InvalidClient is the terminal invalid_client answer (HTTP 401): the
// client secret is wrong.
func InvalidClient() *domain.Failure {
	return HTTPFailure(http.StatusUnauthorized, "invalid_client", 0)
}

// Unavailable is a transient 503 (temporarily_unavailable) with an
// optional Retry-After.
func Unavailable(retryAfter time.Duration) *domain.Failure {
	return HTTPFailure(http.StatusServiceUnavailable, "temporarily_unavailable", retryAfter)
}

// RateLimited is a transient 429 with an optional Retry-After.
func RateLimited(retryAfter time.Duration) *domain.Failure {
	return HTTPFailure(http.StatusTooManyRequests, "temporarily_unavailable", retryAfter)
}

// NetworkFailure is the transient failure of an unreachable token endpoint
// (connection refused, reset, or the request's context canceled).
func NetworkFailure() *domain.Failure {
	return &domain.Failure{Code: "network", Detail: "token endpoint unreachable"}
}

// TimeoutFailure is the transient failure of a request that timed out
// (its context's deadline passed).
func TimeoutFailure() *domain.Failure {
	return &domain.Failure{Code: "timeout", Detail: "token request timed out"}
}

// MalformedResponse is the transient failure of a 2xx answer that is not a
// usable token response.
func MalformedResponse() *domain.Failure {
	return &domain.Failure{Code: "malformed_response", Detail: "token endpoint returned an unusable response"}
}

// noStoredRefreshToken is adapters/provider's answer to Refresh(""),
// made without any request.
func noStoredRefreshToken() *domain.Failure {
	return &domain.Failure{Terminal: true, Code: "invalid_grant", Detail: "no refresh token stored"}
}
