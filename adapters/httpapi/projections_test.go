package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/projections"
)

// TestServedFromProjections wires the server as cmd/tokenline does: reads
// from the projections runner's Status (fed by the stream, and by the
// store's append hook for read-your-own-writes), readiness and lag from the
// runner.
func TestServedFromProjections(t *testing.T) {
	var runner *projections.Runner
	e := newEnv(t, func(e *env, c *httpapi.Config) {
		ctx := context.Background()
		st := projections.NewStatus()
		cp, err := e.store.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		runner, err = projections.NewRunner(projections.RunnerConfig{Source: e.store, Checkpoints: cp, Status: st, SnapshotInterval: -1, SnapshotEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		e.store.OnAppend(func(ev domain.Event) { _, _ = st.Apply(ev) })
		if err := runner.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = runner.Close(context.Background()) })
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := runner.WaitReady(wctx); err != nil {
			t.Fatal(err)
		}
		c.Status = httpapi.StatusFromProjection{Status: st}
		c.ProjectionLag = runner.Lag
		c.Ready = append(c.Ready, httpapi.Check{Name: "projections", Probe: httpapi.ProjectionsReady(runner.Ready, runner.Lag, 100)})
	})

	c := e.create("users:read")
	if got := e.get(c.ID); got.State != domain.StateUnauthenticated {
		t.Fatalf("read-your-own-write from the projection: %+v", got)
	}
	tok := e.authorise(c.ID)
	if e.callAPI(tok) != http.StatusOK {
		t.Fatal("token does not work")
	}
	var list apitypes.ListResponse
	resp, body := e.request("GET", "/v1/connections", nil)
	e.expect(resp, body, http.StatusOK, &list)
	if len(list.Connections) != 1 || list.Connections[0].State != domain.StateActive {
		t.Fatalf("list from the projection: %s", body)
	}

	resp, body = e.request("GET", "/readyz", nil, "Authorization", "")
	e.expect(resp, body, http.StatusOK, nil)

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = e.request("GET", "/metrics", nil, "Authorization", "")
		if strings.Contains(string(body), "\ntokenline_projection_lag 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projection lag never reached 0:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(string(body), `tokenline_connections{state="active"} 1`) {
		t.Errorf("connections gauge from the projection:\n%s", body)
	}
}
