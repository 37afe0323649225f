package httpapi

import (
	"cmp"
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
	"github.com/tokenline/tokenline/projections"
)

// StoreReader serves StatusReader and AuditReader straight from the event
// store, without a projection. Connection is exact and reads its own writes.
// Connections lists the stream's subjects (one per connection, from the
// server's subject index: no message is read) and loads each aggregate from
// the store's cache. The AuditReader methods are package projections' audit
// and replay functions, which read the stream on demand through the store
// (a projections.Source).
type StoreReader struct {
	Store *jsstore.Store
}

var (
	_ StatusReader = StoreReader{}
	_ AuditReader  = StoreReader{}
	_ StatusReader = StatusFromProjection{}
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
	slices.SortFunc(out, func(a, b domain.Connection) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// AuditEvents implements AuditReader with projections.AuditEvents.
func (s StoreReader) AuditEvents(ctx context.Context, q projections.AuditQuery, fn func(domain.Event, time.Time) error) error {
	return projections.AuditEvents(ctx, s.Store, q, fn)
}

// StateAt implements AuditReader with projections.StateAt.
func (s StoreReader) StateAt(ctx context.Context, id string, at time.Time) (domain.Connection, []domain.Event, error) {
	return projections.StateAt(ctx, s.Store, id, at)
}

// Timeline implements AuditReader with projections.Timeline.
func (s StoreReader) Timeline(ctx context.Context, from, to time.Time, opts ...projections.TimelineOption) (projections.TimelineReport, error) {
	return projections.Timeline(ctx, s.Store, from, to, opts...)
}

// StatusFromProjection serves StatusReader from the status projection. It
// reads this instance's own writes when the projection is fed by the event
// store's append hook (jsstore.Store.OnAppend calling Status.Apply), as
// cmd/tokenline wires it.
type StatusFromProjection struct {
	Status *projections.Status
	// Fallback, if set, serves a connection the projection has not seen:
	// one created through another instance a moment ago, whose event this
	// instance's runner has not applied yet. cmd/tokenline sets it to the
	// event store, whose Load reads the stream (its leader).
	Fallback interface {
		Load(ctx context.Context, id string) (domain.Connection, error)
	}
}

// Connection implements StatusReader.
func (p StatusFromProjection) Connection(ctx context.Context, id string) (domain.Connection, error) {
	c, ok := p.Status.Connection(id)
	if !ok {
		if p.Fallback != nil && domain.ValidConnectionID(id) {
			return p.Fallback.Load(ctx, id)
		}
		return domain.Connection{}, domain.ErrNotFound
	}
	return c, nil
}

// Connections implements StatusReader, in the projection's order (creation
// time, then id).
func (p StatusFromProjection) Connections(context.Context) ([]domain.Connection, error) {
	return slices.DeleteFunc(p.Status.List(), func(c domain.Connection) bool { return c.Deleted }), nil
}
