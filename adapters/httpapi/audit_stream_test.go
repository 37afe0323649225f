package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// pausingAudit is the real StoreReader, except that AuditEvents stops after
// its first 100 events until release is closed: the answer so far must have
// reached the client by then, which only a streaming handler achieves.
type pausingAudit struct {
	httpapi.StoreReader
	paused  chan struct{}
	release chan struct{}
}

func (p pausingAudit) AuditEvents(ctx context.Context, q projections.AuditQuery, fn func(domain.Event, time.Time) error) error {
	n := 0
	return p.StoreReader.AuditEvents(ctx, q, func(e domain.Event, at time.Time) error {
		if err := fn(e, at); err != nil {
			return err
		}
		if n++; n == 100 {
			close(p.paused)
			select {
			case <-p.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
}

// The JSON audit answer is streamed: the first 100 events reach the client
// before the server has read the rest, and the whole answer is one valid
// CloudEvents array.
func TestAuditJSONStreams(t *testing.T) {
	var pa pausingAudit
	e := newEnv(t, func(e *env, c *httpapi.Config) {
		pa = pausingAudit{StoreReader: httpapi.StoreReader{Store: e.store}, paused: make(chan struct{}), release: make(chan struct{})}
		c.Audit = pa
	})
	c := e.create()
	for i := range 150 {
		resp, body := e.request("PATCH", "/v1/connections/"+c.ID, map[string]any{"config": map[string]string{"n": strings.Repeat("x", i%7+1)}})
		e.expect(resp, body, http.StatusOK, nil)
	}
	req, _ := http.NewRequest("GET", e.base+"/v1/connections/"+c.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := e.client.Do(req) // returns once the headers arrive
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	select {
	case <-pa.paused:
	case <-time.After(20 * time.Second):
		t.Fatal("the reader never reached its 100th event")
	}
	// The reader is paused: what was written so far must be readable now.
	first := make([]byte, 1)
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, first); got <- err }()
	select {
	case err := <-got:
		if err != nil || first[0] != '[' {
			t.Fatalf("first byte %q, %v", first, err)
		}
	case <-time.After(20 * time.Second):
		close(pa.release)
		t.Fatal("nothing of the answer arrived while the reader was paused: the handler buffers")
	}
	close(pa.release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var evs []json.RawMessage
	if err := json.Unmarshal(append(first, rest...), &evs); err != nil || len(evs) != 151 {
		t.Fatalf("answer: %d events, %v", len(evs), err)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/cloudevents-batch+json") {
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
}

// A timeline window of exactly MaxTimelineWindow is served.
func TestTimelineWindowCap(t *testing.T) {
	e := newEnv(t)
	to := time.Now().UTC()
	from := to.Add(-httpapi.MaxTimelineWindow)
	resp, body := e.request("GET", "/v1/events/timeline?from="+from.Format(time.RFC3339Nano)+"&to="+to.Format(time.RFC3339Nano), nil)
	e.expect(resp, body, http.StatusOK, nil)
	resp, body = e.request("GET", "/v1/events/timeline?from="+from.Add(-time.Second).Format(time.RFC3339Nano)+"&to="+to.Format(time.RFC3339Nano), nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "window_too_large") || !strings.Contains(string(body), "168h") {
		t.Fatalf("window beyond the cap: %d %s", resp.StatusCode, body)
	}
}
