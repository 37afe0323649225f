package main

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"time"
)

// providerReasons are the reasons a connection goes unauthenticated by the
// provider's decision (its token endpoint or API said no). Every other
// reason after an authorisation (refresh_retries_exhausted,
// rotated_tokens_lost, ...) is a connection tokenline lost by itself.
var providerReasons = map[string]bool{
	"invalid_grant": true, "invalid_client": true, "unauthorized_client": true,
	"unsupported_grant_type": true, "invalid_scope": true, "token_endpoint_rejected": true,
	"access_token_rejected": true, "authorisation_denied": true,
}

// streamFacts is what the whole stream says about one phase: the events
// with sequences in [from, to).
type streamFacts struct {
	Events          int            `json:"events"`
	Started         int            `json:"refresh_started"`
	Succeeded       int            `json:"refresh_succeeded"`
	FailedTransient int            `json:"refresh_failed_transient"`
	FailedTerminal  int            `json:"refresh_failed_terminal"`
	LeaseExpired    int            `json:"lease_expired"`
	TerminalCodes   map[string]int `json:"terminal_error_codes,omitempty"`
	Gaps            uint64         `json:"sequence_gaps"`
	DuplicateIDs    int            `json:"duplicate_event_ids"`
	// DoubleStarted counts connections with a refresh.started while their
	// previous refresh.started had no outcome (succeeded or failed) yet.
	DoubleStarted int `json:"double_refresh_started"`
	// Orphans counts refresh.succeeded or refresh.failed events with no
	// refresh.started open for their connection.
	Orphans int `json:"outcomes_without_start"`
	// Latencies are refresh.started -> refresh.succeeded, by event times.
	LatencyP50 time.Duration `json:"refresh_latency_p50_ns"`
	LatencyP99 time.Duration `json:"refresh_latency_p99_ns"`
	LatencyMax time.Duration `json:"refresh_latency_max_ns"`
	// DiedHolding maps a connection whose refresh lease was recovered as
	// lost (terminal lease_expired: rotated_tokens_lost) to the instance
	// that held that lease (its refresh.started actor, "instance/" trimmed).
	DiedHolding map[string]string `json:"-"`
	// FirstAt and LastAt are the times of the phase's first and last event.
	FirstAt   time.Time `json:"first_event_at,omitzero"`
	LastAt    time.Time `json:"last_event_at,omitzero"`
	latencies []time.Duration
}

// analyse walks the whole stream once and attributes what it finds to the
// phases whose first sequences are bounds (ascending; phase i covers
// [bounds[i], bounds[i+1]), the last up to lastSeq).
func analyse(evs []scanEvent, bounds []uint64, lastSeq uint64) []streamFacts {
	out := make([]streamFacts, len(bounds))
	phaseOf := func(seq uint64) int {
		i := sort.Search(len(bounds), func(i int) bool { return bounds[i] > seq }) - 1
		return max(i, 0)
	}
	for i := range out {
		out[i].TerminalCodes = map[string]int{}
		out[i].DiedHolding = map[string]string{}
	}
	type open struct {
		started time.Time
		seq     uint64
		actor   string
	}
	opens := map[string]*open{}
	doubled := map[[2]any]bool{} // (phase, connection) counted once
	ids := map[string]bool{}
	var prev uint64
	for _, e := range evs {
		p := phaseOf(e.Seq)
		f := &out[p]
		f.Events++
		if f.FirstAt.IsZero() {
			f.FirstAt = e.Time
		}
		f.LastAt = e.Time
		if e.Seq > prev+1 {
			// Missing sequences belong to the phase the hole starts in.
			out[phaseOf(prev+1)].Gaps += e.Seq - prev - 1
		}
		prev = max(prev, e.Seq)
		if e.ID != "" {
			if ids[e.ID] {
				f.DuplicateIDs++
			}
			ids[e.ID] = true
		}
		conn := e.Subject
		switch e.Type {
		case "refresh.started":
			f.Started++
			if o := opens[conn]; o != nil && !doubled[[2]any{p, conn}] {
				doubled[[2]any{p, conn}] = true
				f.DoubleStarted++
			}
			opens[conn] = &open{started: e.Time, seq: e.Seq, actor: strings.TrimPrefix(e.Actor, "instance/")}
		case "refresh.succeeded":
			f.Succeeded++
			if o := opens[conn]; o != nil {
				out[phaseOf(o.seq)].latencies = append(out[phaseOf(o.seq)].latencies, e.Time.Sub(o.started))
			} else {
				f.Orphans++
			}
			delete(opens, conn)
		case "refresh.failed":
			var d struct {
				Terminal  bool   `json:"terminal"`
				ErrorCode string `json:"error_code"`
			}
			_ = json.Unmarshal(e.Data, &d)
			if d.Terminal {
				f.FailedTerminal++
				f.TerminalCodes[d.ErrorCode]++
			} else {
				f.FailedTransient++
			}
			if d.ErrorCode == "lease_expired" {
				f.LeaseExpired++
				if o := opens[conn]; d.Terminal && o != nil {
					f.DiedHolding[strings.TrimPrefix(conn, "tokenline.conn.")] = o.actor
				}
			}
			if opens[conn] == nil {
				f.Orphans++
			}
			delete(opens, conn)
		case "connection.deleted", "tokens.invalidated":
			delete(opens, conn)
		}
	}
	if lastSeq > prev {
		out[phaseOf(prev+1)].Gaps += lastSeq - prev
	}
	for i := range out {
		l := out[i].latencies
		slices.Sort(l)
		out[i].LatencyP50, out[i].LatencyP99 = percentile(l, 0.50), percentile(l, 0.99)
		if len(l) > 0 {
			out[i].LatencyMax = l[len(l)-1]
		}
	}
	return out
}

// percentile is the nearest-rank percentile of sorted values (0 if none).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
