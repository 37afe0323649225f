package jsstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// maxHistory bounds how many messages one Load or History call reads for a
// single connection (a connection sees tens of events a day).
const maxHistory = 1 << 20

// Load implements domain.EventStore. A cached aggregate is checked against
// the subject's last message as the stream's leader has it (one request to
// the leader, so a write acknowledged on any node is seen); if it is
// behind, only the missing messages are read (subjectRange). Messages on the subject that do not decode, or
// that the transition table refuses, are skipped (logged and counted) but
// still advance Version, so appends keep working after a poison message.
func (s *Store) Load(ctx context.Context, connectionID string) (domain.Connection, error) {
	if !domain.ValidConnectionID(connectionID) {
		return domain.Connection{}, fmt.Errorf("jsstore: invalid connection id %q: %w", connectionID, domain.ErrNotFound)
	}
	subject := events.Subject(connectionID)
	last, err := s.lastSeq(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return domain.Connection{}, domain.ErrNotFound
	}
	if err != nil {
		return domain.Connection{}, fmt.Errorf("jsstore: load %s: %w", connectionID, err)
	}
	s.mu.RLock()
	cached, ok := s.cache[connectionID]
	var c domain.Connection
	if ok {
		c = cached.Clone()
	}
	s.mu.RUnlock()
	if !ok && s.cfg.Seed != nil {
		if sc, found := s.cfg.Seed(connectionID); found && sc.ID == connectionID && sc.Version <= last {
			c, ok = sc, true
		}
	}
	if ok && c.Version == last {
		s.put(connectionID, &c)
		return c, nil
	}
	if ok && c.Version > last {
		c, ok = domain.Connection{}, false // stream was recreated: start over
	}
	if err := s.catchUp(ctx, connectionID, &c, last); err != nil {
		return domain.Connection{}, err
	}
	if !c.Exists() {
		return domain.Connection{}, domain.ErrNotFound
	}
	s.put(connectionID, &c)
	return c, nil
}

// LoadForAppend returns the aggregate a caller decides its next append
// against. When the cache holds the connection, and no failed append put
// the entry in doubt since it was last read from the stream, it is returned
// as it is, without a request (cached true): it may be stale, and the
// append decided against it then fails with domain.ErrConflict, which puts
// the entry in doubt, so that the caller's next LoadForAppend (or Load)
// reads what it lacks from the stream. A caller must therefore take only a
// successful append as proof that the aggregate was current: a conflict, or
// a decision not to append because of what the cached aggregate says, is
// answered by loading again with Load (lifecycle's transact and refresh do
// both). A connection the cache does not hold is taken, on the same terms,
// from Config.Seed when that has it (cached true, no request). Otherwise
// it is Load (cached false).
//
// A cache entry is never ahead of the stream: it is read from the stream
// or advanced by appends the stream acknowledged, in order; a stream that
// was recreated shorter makes the next append conflict, and Load then
// starts over.
func (s *Store) LoadForAppend(ctx context.Context, connectionID string) (c domain.Connection, cached bool, err error) {
	s.mu.RLock()
	e, ok := s.cache[connectionID]
	if ok {
		if _, doubt := s.doubt[connectionID]; !doubt {
			c, cached = e.Clone(), true
		}
	}
	s.mu.RUnlock()
	if cached {
		return c, true, nil
	}
	if !ok && s.cfg.Seed != nil {
		// A miss: the seed (a projection that follows the stream, never
		// ahead of it) is trusted as the cache would be, and cached, so
		// that the appends decided against it advance the entry.
		if sc, found := s.cfg.Seed(connectionID); found && sc.ID == connectionID {
			s.put(connectionID, &sc)
			return sc, true, nil
		}
	}
	c, err = s.Load(ctx, connectionID)
	return c, false, err
}

// putInDoubt marks a connection's cache entry as possibly behind the
// stream (an append to it failed): LoadForAppend does not trust it until
// Load has read the stream again.
func (s *Store) putInDoubt(connectionID string) {
	s.mu.Lock()
	if _, ok := s.cache[connectionID]; ok {
		if s.doubt == nil {
			s.doubt = map[string]struct{}{}
		}
		s.doubt[connectionID] = struct{}{}
	}
	s.mu.Unlock()
}

// Saw tells the store that the stream holds a connection's events up to
// version: a projection that follows the stream applied them (wired to
// projections.Status.OnChange). A cached entry behind it is put in doubt,
// so that the next LoadForAppend reads what it lacks from the stream
// instead of deciding against it and conflicting (another instance
// appended). It is cheap when the entry is current (this instance's own
// appends), as it must be under the projection's lock.
func (s *Store) Saw(connectionID string, version uint64) {
	s.mu.RLock()
	c, ok := s.cache[connectionID]
	behind := ok && c.Version < version
	s.mu.RUnlock()
	if behind {
		s.putInDoubt(connectionID)
	}
}

// put caches a copy of c, read from the stream as the stream's leader has
// it, unless the cache holds a newer one; a full cache drops an arbitrary
// entry first. Either way the entry is no longer in doubt.
func (s *Store) put(connectionID string, c *domain.Connection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.doubt, connectionID)
	// The entry's memory is reused, the replaced one's or the dropped
	// one's: no reader keeps a pointer to an entry (they copy under s.mu).
	slot, ok := s.cache[connectionID]
	if ok && slot.Version >= c.Version {
		return
	}
	if !ok && len(s.cache) >= s.cfg.CacheSize {
		for id, old := range s.cache {
			delete(s.cache, id)
			delete(s.doubt, id)
			slot = old
			break
		}
	}
	if slot == nil {
		slot = new(domain.Connection)
	}
	*slot = c.Clone()
	s.cache[connectionID] = slot
}

// catchUp applies the subject's messages after c.Version up to last (the
// sequence of the subject's last message, as the stream's leader has it).
func (s *Store) catchUp(ctx context.Context, connectionID string, c *domain.Connection, last uint64) error {
	if c.Version >= last {
		return nil
	}
	n := 0
	err := s.subjectRange(ctx, events.Subject(connectionID), c.Version+1, last, func(seq uint64, data []byte) error {
		if seq > last {
			return nil // appended since last was read: not part of this load
		}
		if n++; n > maxHistory {
			return fmt.Errorf("jsstore: load %s: more than %d events", connectionID, maxHistory)
		}
		e, err := events.Decode(data)
		if err == nil {
			e.Seq = seq
			if e.ConnectionID != connectionID {
				err = fmt.Errorf("event subject %s does not match its message subject", e.ConnectionID)
			} else {
				err = c.Apply(e)
			}
		}
		if err != nil {
			if errors.Is(err, domain.ErrChainBroken) {
				c.ChainBreaks++ // refused: forged, altered or out of order (events/chain.go)
			}
			s.skip(connectionID, seq, err)
		}
		c.Version = seq
		return nil
	})
	if err != nil {
		return err
	}
	if c.Version != last {
		return fmt.Errorf("jsstore: load %s: read up to %d, the subject's last message is %d", connectionID, c.Version, last)
	}
	return nil
}

func (s *Store) skip(connectionID string, seq uint64, err error) {
	n, _ := s.skipped.LoadOrStore(connectionID, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	s.log.Warn("skipped event", "connection_id", connectionID, "seq", seq, "error", err.Error())
}

// Skipped returns how many messages of a connection Load skipped.
func (s *Store) Skipped(connectionID string) int64 {
	n, ok := s.skipped.Load(connectionID)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// History implements domain.EventStore: an unknown connection has an empty
// history. Undecodable messages are left out.
func (s *Store) History(ctx context.Context, connectionID string) ([]domain.Event, error) {
	if !domain.ValidConnectionID(connectionID) {
		return nil, fmt.Errorf("jsstore: invalid connection id %q: %w", connectionID, domain.ErrNotFound)
	}
	subject := events.Subject(connectionID)
	last, err := s.lastSeq(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return []domain.Event{}, nil // an unknown connection has no history (domain.EventStore)
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: history %s: %w", connectionID, err)
	}
	var out []domain.Event
	err = s.subjectRange(ctx, subject, 1, last, func(seq uint64, data []byte) error {
		if len(out) >= maxHistory {
			return fmt.Errorf("jsstore: history %s: more than %d events", connectionID, maxHistory)
		}
		if e, err := events.Decode(data); err == nil && e.ConnectionID == connectionID {
			e.Seq = seq
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
