package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/jsstore"
)

// Audit queries leave no consumer behind on the event stream. Each used to
// create a JetStream consumer that lingered until the server's inactivity
// threshold (5 minutes), and nats-server bounds the consumers of a stream:
// under load the API answered 500 "maximum consumers limit reached". 5,000
// queries in a row (1,000 with -short), of every audit route (a
// connection's events as JSON and JSON Lines, filtered by time and type,
// its state at an instant, the stream-wide timeline), must all answer 200
// with the right events, while the stream's consumer count, read from
// JetStream every 100 queries, stays at what it was before (plus the one
// consumer a timeline read holds while it runs), and is back to it at the
// end.
func TestAuditQueriesLeaveNoConsumers(t *testing.T) {
	queries := 5000
	if testing.Short() {
		queries = 1000
	}
	e := newEnvWith(t, envConfig{noScheduler: true})
	ctx := context.Background()
	stream, err := e.store.JetStream().Stream(ctx, jsstore.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		t.Helper()
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	const conns, updates = 4, 9
	var ids []string
	for range conns {
		c := e.create()
		ids = append(ids, c.ID)
		for i := range updates {
			resp, body := e.request("PATCH", "/v1/connections/"+c.ID, map[string]any{"config": map[string]string{"n": fmt.Sprint(i)}})
			e.expect(resp, body, http.StatusOK, nil)
		}
	}
	const perConn = 1 + updates // connection.created and the updates
	before := consumers()
	now := url.QueryEscape(time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano))
	past := url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano))
	most := before
	start := time.Now()
	for i := range queries {
		id := ids[i%conns]
		var path string
		var want int // events in the answer
		switch i % 5 {
		case 0:
			path, want = "/v1/connections/"+id+"/events", perConn
		case 1:
			path, want = "/v1/connections/"+id+"/events?format=jsonl&since="+past, perConn
		case 2:
			path, want = "/v1/connections/"+id+"/events?type=connection.updated&until="+now, updates
		case 3:
			path, want = "/v1/connections/"+id+"/state?at="+now, perConn
		case 4:
			path, want = "/v1/events/timeline?from="+past+"&to="+now, conns*perConn
		}
		resp, body := e.request("GET", path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("query %d, GET %s: status %d: %s (consumers on the stream: %d)", i, path, resp.StatusCode, body, consumers())
		}
		if got := countEvents(t, path, body); got != want {
			t.Fatalf("query %d, GET %s: %d events, want %d", i, path, got, want)
		}
		if i%100 == 99 {
			n := consumers()
			most = max(most, n)
			if n > before+1 {
				t.Fatalf("after %d queries the stream has %d consumers (%d before): audit reads leave consumers behind", i+1, n, before)
			}
		}
	}
	elapsed := time.Since(start)
	if n := consumers(); n != before {
		t.Fatalf("after %d queries the stream has %d consumers, %d before", queries, n, before)
	}
	t.Logf("%d audit queries in %s (%.0f/s); consumers on the stream: %d before, at most %d while querying", queries,
		elapsed.Round(time.Millisecond), float64(queries)/elapsed.Seconds(), before, most)
}

// countEvents counts the events of an audit answer: a CloudEvents array, JSON
// Lines, a state's events or a timeline's transitions.
func countEvents(t *testing.T, path string, body []byte) int {
	t.Helper()
	switch {
	case strings.Contains(path, "format=jsonl"):
		return strings.Count(strings.TrimSpace(string(body)), "\n") + 1
	case strings.Contains(path, "/state"):
		var st struct{ Events []json.RawMessage }
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		return len(st.Events)
	case strings.Contains(path, "/timeline"):
		var tl struct{ Events int }
		if err := json.Unmarshal(body, &tl); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		return tl.Events
	default:
		var evs []json.RawMessage
		if err := json.Unmarshal(body, &evs); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
		return len(evs)
	}
}
