package projections

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// AuditQuery selects audit entries. Zero fields do not filter.
type AuditQuery struct {
	// ConnectionID limits the log to one connection (the server then sends
	// only that connection's subject).
	ConnectionID string
	// Since and Until bound the event time: Since ≤ time < Until.
	Since, Until time.Time
	// Types keeps only these event types.
	Types []domain.EventType
	// StoredSlack, when positive, lets a time-bounded query skip the parts
	// of the stream that cannot match, using the time the server stored each
	// message: it starts at the first message stored at Since−StoredSlack and
	// stops at the first stored at or after Until+StoredSlack. That is exact
	// only if no event was stored more than StoredSlack after (or before) its
	// own time, which holds for events stamped by the appending instance
	// (clock skew) but not for back-dated ones. Zero reads the whole stream
	// (or the whole connection).
	StoredSlack time.Duration
	// Logger receives the skipped-record warnings (nil: slog.Default()).
	Logger *slog.Logger
}

// errStopScan ends a read early without an error.
var errStopScan = errors.New("stop")

// failureOf returns the provider's error code and HTTP status an event
// records (failures and rejections), or zero values.
func failureOf(p domain.Payload) (errorCode string, httpStatus int) {
	switch d := p.(type) {
	case domain.AuthorisationFailed:
		return d.ErrorCode, 0
	case domain.RefreshFailed:
		return d.ErrorCode, d.HTTPStatus
	case domain.AccessRejected:
		return d.ErrorCode, d.HTTPStatus
	}
	return "", 0
}

// AuditEvents reads the stream and calls fn with every event matching q
// and the time the server stored it, in stream order (which is each
// connection's order): the HTTP API presents them as CloudEvents. It holds
// nothing but the event in hand; records that do not decode are left out
// (and logged, never their payload). A connection without events gives
// none and no error.
func AuditEvents(ctx context.Context, src Source, q AuditQuery, fn func(e domain.Event, stored time.Time) error) error {
	o := events.Range{ConnectionID: q.ConnectionID}
	var stopAt time.Time
	if q.StoredSlack > 0 {
		if !q.Since.IsZero() {
			o.StartTime = q.Since.Add(-q.StoredSlack)
		}
		if !q.Until.IsZero() {
			stopAt = q.Until.Add(q.StoredSlack)
		}
	}
	_, err := src.Read(ctx, o, func(rec *events.Record) error {
		if !stopAt.IsZero() && !rec.Stored.Before(stopAt) {
			return errStopScan
		}
		if rec.Err != nil {
			cmp.Or(q.Logger, slog.Default()).Warn("audit: skipped a record", "seq", rec.Seq, "subject", rec.Subject, "error", rec.Err.Error())
			return nil
		}
		e := rec.Event
		if (!q.Since.IsZero() && e.Time.Before(q.Since)) || (!q.Until.IsZero() && !e.Time.Before(q.Until)) {
			return nil
		}
		if len(q.Types) > 0 && !slices.Contains(q.Types, e.Type()) {
			return nil
		}
		return fn(e, rec.Stored)
	})
	if errors.Is(err, errStopScan) {
		return nil
	}
	return err
}
