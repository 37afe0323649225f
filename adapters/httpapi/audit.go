package httpapi

import (
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
	"github.com/tokenline/tokenline/projections"
)

// The audit routes present package projections' audit log and incident
// replay (through AuditReader): events as CloudEvents, the state at an
// instant, and the timeline as projections.TimelineReport.

// StateAtResponse is the answer of GET /v1/connections/{id}/state.
type StateAtResponse struct {
	ConnectionID string                    `json:"connection_id"`
	At           time.Time                 `json:"at"`
	Status       apitypes.ConnectionStatus `json:"status"`
	// Events are the CloudEvents that led there, oldest first.
	Events []json.RawMessage `json:"events"`
}

// batchContentType is the CloudEvents JSON batch format (an array of
// structured-mode events).
const batchContentType = "application/cloudevents-batch+json"

// MaxTimelineEvents bounds how many events one timeline answer lists
// (projections.WithLimit); its counts cover the whole window.
const MaxTimelineEvents = 50000

// MaxTimelineWindow bounds to - from of one timeline request: the timeline
// reads every event of every connection in its window, so a longer one is
// refused (400 window_too_large) rather than scanning years of history; ask
// for consecutive windows instead.
const MaxTimelineWindow = 7 * 24 * time.Hour

// parseTime reads an RFC 3339 query parameter into *dst (left zero when
// absent); it is false (and 400 written) when the parameter is malformed.
func parseTime(w http.ResponseWriter, r *http.Request, name string, dst *time.Time) bool {
	v := r.URL.Query().Get(name)
	if v == "" {
		return true
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_time", name+" must be an RFC 3339 time, e.g. 2026-11-28T10:02:00Z")
		return false
	}
	*dst = t
	return true
}

// typeFilter parses ?type= (repeated or comma-separated; with or without the
// "tokenline." prefix). nil means every type.
func typeFilter(w http.ResponseWriter, r *http.Request) ([]domain.EventType, bool) {
	var out []domain.EventType
	for _, v := range r.URL.Query()["type"] {
		for t := range strings.SplitSeq(v, ",") {
			et := domain.EventType(strings.TrimPrefix(strings.TrimSpace(t), events.TypePrefix))
			if et == "" {
				continue
			}
			if !slices.Contains(domain.EventTypes, et) {
				writeError(w, http.StatusBadRequest, "invalid_type", "unknown event type "+quote(string(et)))
				return nil, false
			}
			if !slices.Contains(out, et) {
				out = append(out, et)
			}
		}
	}
	return out, true
}

func (s *Server) requireAudit(w http.ResponseWriter) bool {
	if s.cfg.Audit == nil {
		writeError(w, http.StatusNotImplemented, "not_available", "the audit reader is not configured")
		return false
	}
	return true
}

// handleEvents serves a connection's audit trail as CloudEvents, streamed:
// a JSON array (application/cloudevents-batch+json), or JSON Lines with
// ?format=jsonl.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := connectionID(w, r)
	if !ok || !s.requireAudit(w) {
		return
	}
	var since, until time.Time
	types, ok := typeFilter(w, r)
	if !ok || !parseTime(w, r, "since", &since) || !parseTime(w, r, "until", &until) {
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "jsonl" {
		writeError(w, http.StatusBadRequest, "invalid_format", "format must be json or jsonl")
		return
	}
	q := projections.AuditQuery{ConnectionID: id, Since: since, Types: types}
	if !until.IsZero() {
		// ?until= is inclusive; AuditQuery.Until is not (RFC 3339 times
		// are at most nanosecond-precise).
		q.Until = until.Add(time.Nanosecond)
	}
	s.streamEvents(w, r, q, format == "jsonl")
}

// streamEvents writes the events matching q while it reads them, never
// holding the whole history: as JSON Lines (jsonl) or as one JSON array
// (application/cloudevents-batch+json), flushed every 100 events. An error
// after the first event aborts the response, so that a client cannot take a
// cut-off stream for the whole history (a cut-off array does not parse).
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, q projections.AuditQuery, jsonl bool) {
	q.Logger = cmp.Or(q.Logger, s.log)
	rc := http.NewResponseController(w)
	ct, open, sep, end := batchContentType+"; charset=utf-8", "[", ",\n", "]\n"
	if jsonl {
		ct, open, sep, end = "application/jsonl; charset=utf-8", "", "", ""
	}
	start := func() {
		startBody(w, http.StatusOK, ct)
		_, _ = io.WriteString(w, open)
	}
	n := 0
	errWrite := errors.New("client gone")
	err := s.cfg.Audit.AuditEvents(r.Context(), q, func(e domain.Event, _ time.Time) error {
		b, err := events.Encode(e)
		if err != nil {
			return err
		}
		if n == 0 {
			start()
		} else {
			_, _ = io.WriteString(w, sep)
		}
		n++
		if jsonl {
			b = append(b, '\n')
		}
		if _, err := w.Write(b); err != nil {
			return errWrite
		}
		if n%100 == 0 {
			_ = rc.Flush()
		}
		return nil
	})
	switch {
	case errors.Is(err, errWrite) || (n > 0 && r.Context().Err() != nil):
		// the client went away
	case err != nil && n == 0:
		s.writeServiceError(w, r, err)
	case err != nil:
		s.log.Error("request failed", "method", r.Method, "route", r.Pattern, "error", err.Error())
		panic(http.ErrAbortHandler)
	case n == 0:
		if s.connectionExists(w, r, q.ConnectionID) {
			start()
			_, _ = io.WriteString(w, end)
		}
	default:
		_, _ = io.WriteString(w, end)
	}
}

// connectionExists tells a connection without matching events from an
// unknown one, which it answers (404) itself.
func (s *Server) connectionExists(w http.ResponseWriter, r *http.Request, id string) bool {
	if _, err := s.cfg.Status.Connection(r.Context(), id); err != nil {
		s.writeServiceError(w, r, err)
		return false
	}
	return true
}

// handleStateAt replays the connection's history up to ?at= and answers
// the state it was in then, with the events that led there.
func (s *Server) handleStateAt(w http.ResponseWriter, r *http.Request) {
	id, ok := connectionID(w, r)
	if !ok || !s.requireAudit(w) {
		return
	}
	if r.URL.Query().Get("at") == "" {
		writeError(w, http.StatusBadRequest, "invalid_time", "at is required (RFC 3339)")
		return
	}
	var at time.Time
	if !parseTime(w, r, "at", &at) {
		return
	}
	c, evs, err := s.cfg.Audit.StateAt(r.Context(), id, at)
	if errors.Is(err, domain.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "the connection did not exist at that time")
		return
	}
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	resp := StateAtResponse{ConnectionID: id, At: at.UTC(), Status: s.status(c), Events: make([]json.RawMessage, 0, len(evs))}
	for _, e := range evs {
		b, err := events.Encode(e)
		if err != nil {
			s.writeServiceError(w, r, err)
			return
		}
		resp.Events = append(resp.Events, b)
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleTimeline answers the incident timeline of every connection in
// [?from=, ?to=) (default: the last 24 hours; at most MaxTimelineWindow) as
// a projections.TimelineReport listing at most MaxTimelineEvents events.
func (s *Server) handleTimeline(w http.ResponseWriter, r *http.Request) {
	if !s.requireAudit(w) {
		return
	}
	var from, to time.Time
	if !parseTime(w, r, "from", &from) || !parseTime(w, r, "to", &to) {
		return
	}
	if to.IsZero() {
		to = time.Now()
	}
	if from.IsZero() {
		from = to.Add(-24 * time.Hour)
	}
	if to.Before(from) {
		writeError(w, http.StatusBadRequest, "invalid_time", "to is before from")
		return
	}
	if to.Sub(from) > MaxTimelineWindow {
		writeError(w, http.StatusBadRequest, "window_too_large",
			"the timeline window (to - from) is at most 168h (7 days); ask for consecutive windows")
		return
	}
	rep, err := s.cfg.Audit.Timeline(r.Context(), from.UTC(), to.UTC(), projections.WithLimit(MaxTimelineEvents))
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
