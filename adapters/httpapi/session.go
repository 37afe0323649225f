package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"slices"
	"sync"
	"time"
)

// Login codes and UI sessions.
//
// The web UI never sees the API token. An operator gets a one-time login
// link (`tokenline serve` prints one at start, `tokenline ui` asks the API
// for a fresh one with the API token: POST /v1/ui/login-links); opening it
// trades the code for a session cookie. Both secrets are 32 random bytes;
// the server keeps only their SHA-256 and compares in constant time against
// every live entry (there are at most a few dozen). Nothing here is
// persisted: a restart signs every browser out.

// Limits of the login codes and sessions.
const (
	// LoginCodeTTL is how long a login link works (once).
	LoginCodeTTL = 5 * time.Minute
	// MaxLoginCodes bounds the codes not yet used; issuing one more drops
	// the oldest.
	MaxLoginCodes = 16
	// SessionTTL is how long a UI session lasts (from the login; not
	// extended by use).
	SessionTTL = 12 * time.Hour
	// MaxSessions bounds the live sessions; one more login signs out the
	// oldest.
	MaxSessions = 32
)

// secretEntry is one live code or session: the SHA-256 of its secret and
// when it stops working.
type secretEntry struct {
	sum     [sha256.Size]byte
	expires time.Time
}

// secretSet is a bounded set of hashed secrets with an expiry each.
type secretSet struct {
	mu      sync.Mutex
	entries []secretEntry // oldest first
	max     int
	ttl     time.Duration
	now     func() time.Time
}

func newSecretSet(max int, ttl time.Duration, now func() time.Time) *secretSet {
	return &secretSet{max: max, ttl: ttl, now: now}
}

// issue returns a new secret (base64url, 43 characters) and its expiry.
func (s *secretSet) issue() (string, time.Time) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // never fails (crypto/rand)
	secret := base64.RawURLEncoding.EncodeToString(raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.prune(now)
	if len(s.entries) >= s.max {
		s.entries = slices.Delete(s.entries, 0, len(s.entries)-s.max+1)
	}
	e := secretEntry{sum: sha256.Sum256([]byte(secret)), expires: now.Add(s.ttl)}
	s.entries = append(s.entries, e)
	return secret, e.expires
}

// find reports whether secret is live; with remove it also ends it (a
// login code is used once). Every live entry is compared, in constant
// time, so the answer's timing says nothing about which one matched.
func (s *secretSet) find(secret string, remove bool) bool {
	if secret == "" || len(secret) > 256 {
		return false
	}
	sum := sha256.Sum256([]byte(secret))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(s.now())
	at := -1
	for i := range s.entries {
		if subtle.ConstantTimeCompare(sum[:], s.entries[i].sum[:]) == 1 {
			at = i
		}
	}
	if at >= 0 && remove {
		s.entries = slices.Delete(s.entries, at, at+1)
	}
	return at >= 0
}

// len is the number of live entries.
func (s *secretSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(s.now())
	return len(s.entries)
}

func (s *secretSet) prune(now time.Time) {
	s.entries = slices.DeleteFunc(s.entries, func(e secretEntry) bool { return !now.Before(e.expires) })
}
