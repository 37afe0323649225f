package projections

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/domain"
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
}

// AuditEntry is one event as the audit log shows it: a flat record with the
// fields people filter on, plus the event's data. The JSON Lines export
// writes one AuditEntry per line (flat entries rather than CloudEvents
// envelopes: they carry the stream sequence and the storage time, which the
// envelope does not, and need no knowledge of the schema to grep; the
// envelope's data is kept verbatim in Data). No entry holds a secret: events
// carry fingerprints only.
type AuditEntry struct {
	Seq          uint64           `json:"seq"`
	Time         time.Time        `json:"time"`
	Stored       time.Time        `json:"stored"`
	ConnectionID string           `json:"connection_id"`
	EventID      string           `json:"event_id"`
	Type         domain.EventType `json:"type"`
	Actor        string           `json:"actor,omitempty"`
	// Reason is the reason the event records (unauthenticated reasons of
	// failures and rejections, never_authorised at creation,
	// connection_deleted at deletion).
	Reason     domain.Reason   `json:"reason,omitempty"`
	ErrorCode  string          `json:"error_code,omitempty"`
	HTTPStatus int             `json:"http_status,omitempty"`
	Data       json.RawMessage `json:"data"`
}

// AuditEntryOf describes one stored event.
func AuditEntryOf(e domain.Event, stored time.Time) AuditEntry {
	a := AuditEntry{Seq: e.Seq, Time: e.Time, Stored: stored, ConnectionID: e.ConnectionID, EventID: e.ID, Type: e.Type(), Actor: e.Actor}
	a.ErrorCode, a.HTTPStatus = failureOf(e.Payload)
	switch d := e.Payload.(type) {
	case domain.ConnectionCreated:
		a.Reason = domain.ReasonNeverAuthorised
	case domain.AuthorisationFailed:
		a.Reason = d.Reason
	case domain.RefreshFailed:
		a.Reason = d.Reason
	case domain.AccessRejected:
		a.Reason = d.Reason
	case domain.TokensInvalidated:
		a.Reason = d.Reason
	case domain.ConnectionDeleted:
		a.Reason = domain.ReasonConnectionDeleted
	}
	if b, err := json.Marshal(e.Payload); err == nil {
		a.Data = b
	} else {
		a.Data = json.RawMessage(`{}`)
	}
	return a
}

var errStopScan = errors.New("stop")

// AuditEach reads the stream and calls fn with every entry matching q, in
// stream order (which is each connection's order). It holds nothing but the
// entry in hand; records that do not decode are left out (and logged).
func AuditEach(ctx context.Context, store *jsstore.Store, q AuditQuery, fn func(AuditEntry) error) error {
	return AuditEvents(ctx, store, q, func(e domain.Event, stored time.Time) error {
		return fn(AuditEntryOf(e, stored))
	})
}

// AuditEvents is AuditEach for the events themselves (with the time the
// server stored each), for callers that present them in another form, such
// as the HTTP API's CloudEvents. A connection without events gives none and
// no error.
func AuditEvents(ctx context.Context, store *jsstore.Store, q AuditQuery, fn func(e domain.Event, stored time.Time) error) error {
	o := scanOptions{ConnectionID: q.ConnectionID}
	var stopAt time.Time
	if q.StoredSlack > 0 {
		if !q.Since.IsZero() {
			o.StartTime = q.Since.Add(-q.StoredSlack)
		}
		if !q.Until.IsZero() {
			stopAt = q.Until.Add(q.StoredSlack)
		}
	}
	_, err := scan(ctx, store, o, func(rec *jsstore.Record) error {
		if !stopAt.IsZero() && !rec.Stored.Before(stopAt) {
			return errStopScan
		}
		if rec.Err != nil {
			slog.Warn("audit: skipped a record", "seq", rec.Seq, "subject", rec.Subject, "error", rec.Err.Error())
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

// Audit returns the entries matching q.
func Audit(ctx context.Context, store *jsstore.Store, q AuditQuery) ([]AuditEntry, error) {
	var out []AuditEntry
	err := AuditEach(ctx, store, q, func(a AuditEntry) error {
		out = append(out, a)
		return nil
	})
	return out, err
}

// WriteJSONL writes entries as JSON Lines, one AuditEntry per line.
func WriteJSONL(w io.Writer, entries []AuditEntry) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range entries {
		if err := enc.Encode(&entries[i]); err != nil {
			return fmt.Errorf("projections: audit export: %w", err)
		}
	}
	return bw.Flush()
}

// ExportJSONL streams the entries matching q to w as JSON Lines without
// collecting them, and returns how many it wrote.
func ExportJSONL(ctx context.Context, store *jsstore.Store, q AuditQuery, w io.Writer) (int, error) {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	n := 0
	err := AuditEach(ctx, store, q, func(a AuditEntry) error {
		n++
		return enc.Encode(&a)
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return n, err
}
