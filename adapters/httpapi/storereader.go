package httpapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// StoreReader serves StatusReader and AuditReader straight from the event
// store, without a projection. Connection and History are exact and read
// their own writes. Connections lists the stream's subjects (one per
// connection, from the server's subject index: no message is read) and loads
// each aggregate from the store's cache. Between replays the stream, so it
// costs O(stream); prefer the audit projection when it is wired.
type StoreReader struct {
	Store *jsstore.Store
}

var (
	_ StatusReader = StoreReader{}
	_ AuditReader  = StoreReader{}
)

// Connection implements StatusReader.
func (s StoreReader) Connection(ctx context.Context, id string) (domain.Connection, error) {
	return s.Store.Load(ctx, id)
}

// Connections implements StatusReader.
func (s StoreReader) Connections(ctx context.Context) ([]domain.Connection, error) {
	info, err := s.Store.Stream().Info(ctx, jetstream.WithSubjectFilter(events.SubjectPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("httpapi: list connections: %w", err)
	}
	out := make([]domain.Connection, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		id := strings.TrimPrefix(subj, events.SubjectPrefix)
		if !domain.ValidConnectionID(id) {
			continue
		}
		c, err := s.Store.Load(ctx, id)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !c.Deleted {
			out = append(out, c)
		}
	}
	sortConnections(out)
	return out, nil
}

func sortConnections(cs []domain.Connection) {
	slices.SortFunc(cs, func(a, b domain.Connection) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// History implements AuditReader.
func (s StoreReader) History(ctx context.Context, id string) ([]domain.Event, error) {
	return s.Store.History(ctx, id)
}

// Between implements AuditReader by replaying the stream.
func (s StoreReader) Between(ctx context.Context, from, to time.Time, limit int) ([]domain.Event, bool, error) {
	var out []domain.Event
	truncated := false
	errFull := errors.New("full")
	err := s.Store.Replay(ctx, jsstore.ReplayOptions{}, func(r jsstore.Record) error {
		if r.Err != nil || r.Event.Time.Before(from) || r.Event.Time.After(to) {
			return nil
		}
		if limit > 0 && len(out) >= limit {
			truncated = true
			return errFull
		}
		out = append(out, r.Event)
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, false, err
	}
	return out, truncated, nil
}
