package projections

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// ConnectionStatus is what the API and the UI show about one connection. It
// never holds a token (fingerprints only).
type ConnectionStatus struct {
	ID       string        `json:"id"`
	Provider string        `json:"provider"`
	State    domain.State  `json:"state"`
	Reason   domain.Reason `json:"reason,omitempty"`
	// ReasonText explains Reason in plain words for the person who must
	// reconnect (domain.Reasons).
	ReasonText string            `json:"reason_text,omitempty"`
	Since      time.Time         `json:"since"`
	Scopes     []string          `json:"scopes"`
	Config     map[string]string `json:"config,omitempty"`

	// The stored tokens, described (while they are held).
	AccessTokenFP        string    `json:"access_token_fp,omitempty"`
	AccessTokenExpiresAt time.Time `json:"access_token_expires_at,omitzero"`
	GrantedScopes        []string  `json:"granted_scopes,omitempty"`

	// The last refresh: when, and "ok" or "error" with the error code.
	LastRefreshAt      time.Time `json:"last_refresh_at,omitzero"`
	LastRefreshOutcome string    `json:"last_refresh_outcome,omitempty"`
	LastErrorCode      string    `json:"last_error_code,omitempty"`
	// ConsecutiveTransientFailures counts transient refresh failures since
	// the last success; RetryAt is the earliest next attempt.
	ConsecutiveTransientFailures int       `json:"consecutive_transient_failures"`
	RetryAt                      time.Time `json:"retry_at,omitzero"`
	// LeaseUntil is the refresh lease deadline (refreshing);
	// AuthorisationExpiresAt the deadline of the open attempt (reauthorising).
	LeaseUntil             time.Time `json:"lease_until,omitzero"`
	AuthorisationExpiresAt time.Time `json:"authorisation_expires_at,omitzero"`

	NeedsReauthorisation bool `json:"needs_reauthorisation"`
	Deleted              bool `json:"deleted"`
	// Version is the stream sequence of the connection's last event (the
	// expected sequence of its next append); Events counts applied events.
	Version uint64    `json:"version"`
	Events  int       `json:"events"`
	Created time.Time `json:"created"`
}

// Outcomes of the last refresh.
const (
	RefreshOK    = "ok"
	RefreshError = "error"
)

// StatusOf describes a connection aggregate.
func StatusOf(c *domain.Connection) ConnectionStatus {
	s := ConnectionStatus{
		ID: c.ID, Provider: c.Provider, State: c.State, Reason: c.Reason, Since: c.Since,
		Scopes: slices.Clone(c.Scopes), Config: maps.Clone(c.Config),
		LastRefreshAt: c.LastRefreshAt, LastErrorCode: c.LastErrorCode,
		ConsecutiveTransientFailures: c.TransientFailures, RetryAt: c.RetryAt,
		LeaseUntil: c.LeaseUntil, AuthorisationExpiresAt: c.AttemptExpiresAt,
		NeedsReauthorisation: c.NeedsReauthorisation(), Deleted: c.Deleted,
		Version: c.Version, Events: c.Events, Created: c.Created,
	}
	if s.Scopes == nil {
		s.Scopes = []string{}
	}
	if info, ok := c.Reason.Info(); ok {
		s.ReasonText = info.UserText
	}
	if c.TokensHeld {
		s.AccessTokenFP = c.Tokens.AccessTokenFP
		s.AccessTokenExpiresAt = c.Tokens.AccessTokenExpiresAt
		s.GrantedScopes = slices.Clone(c.Tokens.Scopes)
	}
	if !c.LastRefreshAt.IsZero() {
		s.LastRefreshOutcome = RefreshError
		if c.LastRefreshOK {
			s.LastRefreshOutcome = RefreshOK
		}
	}
	return s
}

// Status is the durable read model of every connection: the aggregate of
// each, folded from the stream with domain.Connection.Apply (so it agrees
// with the event store's Load by construction) and described by
// ConnectionStatus.
//
// Status must be fed in stream order (the Runner does): it is idempotent by
// sequence (an event at or below a connection's version changes nothing) but
// unlike the Gate it cannot fill in an event that arrives after a later one.
// Events the aggregate refuses, and undecodable messages on a connection's
// subject (Skip), still advance the connection's version, as jsstore's Load
// does, so Version is always the expected sequence for the next append.
//
// Entries are copy-on-write with respect to snapshots: capture marks the
// current entries as shared and the next change to one replaces it, so a
// snapshot is encoded without holding the lock.
type Status struct {
	mu    sync.RWMutex
	conns map[string]*statusEntry
	gen   uint64
}

type statusEntry struct {
	c   domain.Connection
	gen uint64 // entries with an older gen belong to a snapshot: copy first
}

// NewStatus returns an empty status projection.
func NewStatus() *Status { return &Status{conns: map[string]*statusEntry{}} }

// Apply folds a stored event (Seq > 0) into the status. It reports whether
// the event changed anything: false with a nil error for an event already
// applied, false with an error for an event the aggregate refuses (for
// example a transition the table does not allow, or an event before
// connection.created).
func (s *Status) Apply(e domain.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(e)
}

func (s *Status) applyLocked(e domain.Event) (bool, error) {
	if e.Seq == 0 {
		return false, fmt.Errorf("projections: event %s has no stream sequence", e.ID)
	}
	ent := s.conns[e.ConnectionID]
	if ent == nil {
		if _, ok := e.Payload.(domain.ConnectionCreated); !ok {
			return false, fmt.Errorf("%w: %s before connection.created", domain.ErrNotFound, e.Type())
		}
		ent = &statusEntry{gen: s.gen}
		if err := ent.c.Apply(e); err != nil {
			return false, err
		}
		s.conns[e.ConnectionID] = ent
		return true, nil
	}
	if e.Seq <= ent.c.Version {
		return false, nil
	}
	ent = s.own(e.ConnectionID, ent)
	if err := ent.c.Apply(e); err != nil {
		ent.c.Version = e.Seq
		return false, err
	}
	return true, nil
}

// own returns an entry that no snapshot shares (s.mu held).
func (s *Status) own(id string, ent *statusEntry) *statusEntry {
	if ent.gen == s.gen {
		return ent
	}
	n := &statusEntry{c: ent.c.Clone(), gen: s.gen}
	s.conns[id] = n
	return n
}

// Skip records that the message at seq on a connection's subject could not
// be applied (it does not decode): the connection's version advances.
func (s *Status) Skip(connectionID string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.skipLocked(connectionID, seq)
}

func (s *Status) skipLocked(connectionID string, seq uint64) {
	if ent := s.conns[connectionID]; ent != nil && seq > ent.c.Version {
		s.own(connectionID, ent).c.Version = seq
	}
}

// Get returns the status of one connection.
func (s *Status) Get(connectionID string) (ConnectionStatus, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ent := s.conns[connectionID]
	if ent == nil {
		return ConnectionStatus{}, false
	}
	return StatusOf(&ent.c), true
}

// Connection returns a copy of one connection's aggregate.
func (s *Status) Connection(connectionID string) (domain.Connection, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ent := s.conns[connectionID]
	if ent == nil {
		return domain.Connection{}, false
	}
	return ent.c.Clone(), true
}

// List returns every connection (deleted ones included), sorted by creation
// time and then id.
func (s *Status) List() []ConnectionStatus {
	s.mu.RLock()
	out := make([]ConnectionStatus, 0, len(s.conns))
	for _, ent := range s.conns {
		out = append(out, StatusOf(&ent.c))
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b ConnectionStatus) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// Len returns the number of connections.
func (s *Status) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.conns)
}

// each calls fn for every connection under the read lock; fn must not keep
// the pointer.
func (s *Status) each(fn func(c *domain.Connection)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, ent := range s.conns {
		fn(&ent.c)
	}
}

// capture returns the current connections for a snapshot. The returned
// aggregates are never modified afterwards (see own); the caller must not
// modify them either.
func (s *Status) capture() []*domain.Connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	out := make([]*domain.Connection, 0, len(s.conns))
	for _, ent := range s.conns {
		out = append(out, &ent.c)
	}
	return out
}

// replace swaps in the contents of o (a rebuilt or restored projection).
func (s *Status) replace(o *Status) {
	o.mu.Lock()
	conns := o.conns
	o.conns = map[string]*statusEntry{}
	o.mu.Unlock()
	s.mu.Lock()
	s.gen++
	for _, ent := range conns {
		ent.gen = s.gen
	}
	s.conns = conns
	s.mu.Unlock()
}
