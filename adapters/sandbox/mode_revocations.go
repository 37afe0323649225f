package sandbox

import (
	"crypto/sha256"
	"net/http"
	"sync"
)

// revocationRequests counts RFC 7009 revocation requests by the token they
// present, so that a test can check that a client revokes each token once
// (Stats.Revocations counts grants, once each, whoever revoked them). Only
// the SHA-256 of a token is kept.
type revocationRequests struct {
	mu      sync.Mutex
	total   int
	byToken map[[32]byte]int
}

// note records a revocation request (called before the request is
// handled; the form it parses is the one fosite reads).
func (c *revocationRequests) note(r *http.Request) {
	tok := r.PostFormValue("token")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total++
	if tok == "" {
		return
	}
	if c.byToken == nil {
		c.byToken = map[[32]byte]int{}
	}
	c.byToken[sha256.Sum256([]byte(tok))]++
}

// RevocationRequests reports how many RFC 7009 revocation requests reached
// the sandbox, how many distinct tokens they presented, and the most
// requests any one token got.
func (s *Server) RevocationRequests() (requests, tokens, maxPerToken int) {
	c := &s.revocations
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.byToken {
		maxPerToken = max(maxPerToken, n)
	}
	return c.total, len(c.byToken), maxPerToken
}
