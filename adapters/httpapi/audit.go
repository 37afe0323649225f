package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
	"github.com/tokenline/tokenline/projections"
)

// StateAtResponse is the answer of GET /v1/connections/{id}/state.
type StateAtResponse struct {
	ConnectionID string                       `json:"connection_id"`
	At           time.Time                    `json:"at"`
	Status       projections.ConnectionStatus `json:"status"`
	// Events are the CloudEvents that led there, oldest first.
	Events []json.RawMessage `json:"events"`
}

// Transition is one state-changing event in the incident timeline.
type Transition struct {
	Time         time.Time     `json:"time"`
	Seq          uint64        `json:"seq"`
	ConnectionID string        `json:"connection_id"`
	Type         string        `json:"type"`
	To           domain.State  `json:"to_state"`
	Reason       domain.Reason `json:"reason,omitempty"`
	ErrorCode    string        `json:"error_code,omitempty"`
	Actor        string        `json:"actor,omitempty"`
}

// TimelineCounts summarises the events of a timeline window.
type TimelineCounts struct {
	Events      int            `json:"events"`
	Connections int            `json:"connections"`
	ByType      map[string]int `json:"by_type"`
	// ByReason counts entries into unauthenticated by reason.
	ByReason map[string]int `json:"by_reason"`
	// ByState counts transitions by the state entered.
	ByState map[string]int `json:"by_state"`
}

// TimelineResponse is the answer of GET /v1/events/timeline.
type TimelineResponse struct {
	From        time.Time      `json:"from"`
	To          time.Time      `json:"to"`
	Transitions []Transition   `json:"transitions"`
	Counts      TimelineCounts `json:"counts"`
	// Truncated is true when the window held more than MaxTimelineEvents
	// events; only the first ones were read.
	Truncated bool `json:"truncated"`
}

// batchContentType is the CloudEvents JSON batch format (an array of
// structured-mode events).
const batchContentType = "application/cloudevents-batch+json"

// MaxTimelineEvents bounds how many events one timeline request reads.
const MaxTimelineEvents = 50000

// parseTime reads an RFC 3339 query parameter; ok is false (and 400 written)
// when it is malformed.
func parseTime(w http.ResponseWriter, r *http.Request, name string) (time.Time, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, true
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_time", name+" must be an RFC 3339 time, e.g. 2026-11-28T10:02:00Z")
		return time.Time{}, false
	}
	return t, true
}

// typeFilter parses ?type= (repeated or comma-separated; with or without the
// "tokenline." prefix). nil means every type.
func typeFilter(w http.ResponseWriter, r *http.Request) (map[domain.EventType]bool, bool) {
	var out map[domain.EventType]bool
	for _, v := range r.URL.Query()["type"] {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), events.TypePrefix)
			if t == "" {
				continue
			}
			if !slices.Contains(domain.EventTypes, domain.EventType(t)) {
				writeError(w, http.StatusBadRequest, "invalid_type", "unknown event type "+quote(t))
				return nil, false
			}
			if out == nil {
				out = map[domain.EventType]bool{}
			}
			out[domain.EventType(t)] = true
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

// handleEvents serves a connection's audit trail as CloudEvents: a JSON
// array (application/cloudevents-batch+json), or JSON Lines with
// ?format=jsonl.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := connectionID(w, r)
	if !ok || !s.requireAudit(w) {
		return
	}
	types, ok := typeFilter(w, r)
	if !ok {
		return
	}
	since, ok := parseTime(w, r, "since")
	if !ok {
		return
	}
	until, ok := parseTime(w, r, "until")
	if !ok {
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "jsonl" {
		writeError(w, http.StatusBadRequest, "invalid_format", "format must be json or jsonl")
		return
	}
	hist, err := s.cfg.Audit.History(r.Context(), id)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	var out [][]byte
	for _, e := range hist {
		if types != nil && !types[e.Type()] || !since.IsZero() && e.Time.Before(since) || !until.IsZero() && e.Time.After(until) {
			continue
		}
		b, err := events.Encode(e)
		if err != nil {
			s.writeServiceError(w, r, err)
			return
		}
		out = append(out, b)
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if format == "jsonl" {
		w.Header().Set("Content-Type", "application/jsonl; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for i, b := range out {
			if _, err := w.Write(append(b, '\n')); err != nil {
				return
			}
			if i%100 == 99 {
				_ = rc.Flush()
			}
		}
		return
	}
	w.Header().Set("Content-Type", batchContentType+"; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(joinArray(out))
}

func joinArray(items [][]byte) []byte {
	n := 3
	for _, b := range items {
		n += len(b) + 1
	}
	buf := make([]byte, 0, n)
	buf = append(buf, '[')
	for i, b := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, b...)
	}
	return append(buf, ']', '\n')
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
	at, ok := parseTime(w, r, "at")
	if !ok {
		return
	}
	hist, err := s.cfg.Audit.History(r.Context(), id)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	c, upto, err := StateAt(hist, at)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	if upto == 0 {
		writeError(w, http.StatusNotFound, "not_found", "the connection did not exist at that time")
		return
	}
	resp := StateAtResponse{ConnectionID: id, At: at.UTC(), Status: s.status(c), Events: make([]json.RawMessage, 0, upto)}
	for _, e := range hist[:upto] {
		b, err := events.Encode(e)
		if err != nil {
			s.writeServiceError(w, r, err)
			return
		}
		resp.Events = append(resp.Events, b)
	}
	writeJSON(w, http.StatusOK, resp)
}

// StateAt folds the prefix of history (in stream order) whose events
// happened at or before at; n is the length of that prefix (0: the
// connection did not exist yet).
func StateAt(history []domain.Event, at time.Time) (c domain.Connection, n int, err error) {
	for n < len(history) && !history[n].Time.After(at) {
		n++
	}
	c, err = domain.Replay(history[:n])
	return c, n, err
}

// TransitionTo returns the state an event moves its connection to, and
// false for events that do not change the state (self-loops). It follows
// the domain's transition table, whose non-loop transitions each have a
// single destination.
func TransitionTo(e domain.Event) (domain.State, bool) {
	if e.Type() == domain.EventConnectionCreated {
		return domain.StateUnauthenticated, true
	}
	name := domain.TransitionName(e.Payload)
	var to domain.State
	for _, d := range domain.Transitions {
		if d.Name != name {
			continue
		}
		if len(d.Src) == 1 && d.Src[0] == d.Dst {
			return "", false // self-loop
		}
		to = domain.State(d.Dst)
	}
	return to, to != ""
}

// handleTimeline answers the incident timeline of every connection between
// ?from= and ?to= (default: the last 24 hours).
func (s *Server) handleTimeline(w http.ResponseWriter, r *http.Request) {
	if !s.requireAudit(w) {
		return
	}
	from, ok := parseTime(w, r, "from")
	if !ok {
		return
	}
	to, ok := parseTime(w, r, "to")
	if !ok {
		return
	}
	if to.IsZero() {
		to = time.Now().UTC()
	}
	if from.IsZero() {
		from = to.Add(-24 * time.Hour)
	}
	if to.Before(from) {
		writeError(w, http.StatusBadRequest, "invalid_time", "to is before from")
		return
	}
	evs, truncated, err := s.cfg.Audit.Between(r.Context(), from, to, MaxTimelineEvents)
	if err != nil {
		s.writeServiceError(w, r, err)
		return
	}
	resp := TimelineResponse{From: from.UTC(), To: to.UTC(), Transitions: []Transition{}, Truncated: truncated,
		Counts: TimelineCounts{ByType: map[string]int{}, ByReason: map[string]int{}, ByState: map[string]int{}}}
	conns := map[string]bool{}
	for _, e := range evs {
		resp.Counts.Events++
		resp.Counts.ByType[string(e.Type())]++
		conns[e.ConnectionID] = true
		st, changes := TransitionTo(e)
		if !changes {
			continue
		}
		tr := Transition{Time: e.Time.UTC(), Seq: e.Seq, ConnectionID: e.ConnectionID, Type: string(e.Type()), To: st, Actor: e.Actor}
		switch d := e.Payload.(type) {
		case domain.ConnectionCreated:
			tr.Reason = domain.ReasonNeverAuthorised
		case domain.AuthorisationFailed:
			tr.Reason, tr.ErrorCode = d.Reason, d.ErrorCode
		case domain.RefreshFailed:
			tr.Reason, tr.ErrorCode = d.Reason, d.ErrorCode
		case domain.AccessRejected:
			tr.Reason, tr.ErrorCode = d.Reason, d.ErrorCode
		case domain.ConnectionDeleted:
			tr.Reason = domain.ReasonConnectionDeleted
		}
		resp.Counts.ByState[string(st)]++
		if st == domain.StateUnauthenticated && tr.Reason != "" {
			resp.Counts.ByReason[string(tr.Reason)]++
		}
		resp.Transitions = append(resp.Transitions, tr)
	}
	resp.Counts.Connections = len(conns)
	writeJSON(w, http.StatusOK, resp)
}
