package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// tracker follows the events live (a core subscription of the reader user)
// to know which instance has refreshes in flight right now: the moment to
// kill it. Messages can be missed across reconnects; it only times faults,
// the measurements come from the whole stream read at the end.
type tracker struct {
	mu     sync.Mutex
	open   map[string]string // connection -> actor of its open refresh.started
	starts []time.Time       // recent refresh.started receipt times
	seen   atomic.Int64
}

func newTracker() *tracker { return &tracker{open: map[string]string{}} }

func (t *tracker) handle(m *nats.Msg) {
	t.seen.Add(1)
	var env struct {
		Type  string `json:"type"`
		Actor string `json:"actor"`
	}
	if json.Unmarshal(m.Data, &env) != nil {
		return
	}
	conn := strings.TrimPrefix(m.Subject, "tokenline.conn.")
	t.mu.Lock()
	defer t.mu.Unlock()
	switch strings.TrimPrefix(env.Type, "tokenline.") {
	case "refresh.started":
		t.open[conn] = strings.TrimPrefix(env.Actor, "instance/")
		now := time.Now()
		t.starts = append(t.starts, now)
		if len(t.starts) > 4096 {
			t.starts = t.starts[len(t.starts)-2048:]
		}
	case "refresh.succeeded", "refresh.failed", "tokens.invalidated", "connection.deleted":
		delete(t.open, conn)
	}
}

// inFlight returns the refreshes in flight per instance and the
// refresh.started events received in the last second.
func (t *tracker) inFlight() (map[string]int, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	per := map[string]int{}
	for _, a := range t.open {
		per[a]++
	}
	cut := time.Now().Add(-time.Second)
	i := sort.Search(len(t.starts), func(i int) bool { return t.starts[i].After(cut) })
	return per, len(t.starts) - i
}

// forget drops what the tracker believes is open (after a fault its view may
// be stale).
func (t *tracker) forget() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.open)
}

// pollStats are the answers of the retry-free client during a phase.
type pollStats struct {
	Requests    int64            `json:"requests"`
	OK          int64            `json:"ok"`
	Gate409     int64            `json:"token_409"`
	GateDetails map[string]int64 `json:"token_409_details,omitempty"`
	Server5xx   int64            `json:"server_5xx"`
	Statuses5xx map[string]int64 `json:"server_5xx_by_route,omitempty"`
	Other4xx    int64            `json:"other_4xx"`
	Unreachable int64            `json:"unreachable_dead_instance"`
	Transport   int64            `json:"transport_errors_live_instance"`
	Rollbacks   int64            `json:"version_went_back"`
}

// poller is a client with no retries: it asks a random instance for a
// random connection's status and token, every interval, and counts what
// comes back. It also checks that one instance process never answers an
// older version of a connection than it answered before.
type poller struct {
	f        *fleet
	ids      []string
	interval time.Duration
	hc       *http.Client

	mu      sync.Mutex
	st      pollStats
	seenVer map[string]int64 // instance#incarnation/connection -> version
}

func newPoller(f *fleet, ids []string, interval time.Duration) *poller {
	return &poller{f: f, ids: ids, interval: interval, hc: &http.Client{Timeout: 5 * time.Second}, seenVer: map[string]int64{}}
}

// reset starts a new phase's counts and returns the previous ones.
func (p *poller) reset() pollStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.st
	p.st = pollStats{GateDetails: map[string]int64{}, Statuses5xx: map[string]int64{}}
	return out
}

func (p *poller) run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		in := p.f.inst[rand.IntN(len(p.f.inst))]
		id := p.ids[rand.IntN(len(p.ids))]
		p.one(ctx, in, id, "status")
		p.one(ctx, in, id, "token")
	}
}

func (p *poller) one(ctx context.Context, in *instance, id, what string) {
	path := apitypes.Path(apitypes.RouteConnection, id)
	if what == "token" {
		path = apitypes.Path(apitypes.RouteToken, id)
	}
	alive := in.proc.running()
	incarnation := in.proc.incarnation()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+p.f.apiToken)
	resp, err := p.hc.Do(req)
	if ctx.Err() != nil {
		if err == nil {
			resp.Body.Close()
		}
		return // the phase ended mid-request: not counted
	}
	var body []byte
	if err == nil {
		body = make([]byte, 0, 4096)
		buf := make([]byte, 4096)
		for len(body) < 1<<20 {
			n, rerr := resp.Body.Read(buf)
			body = append(body, buf[:n]...)
			if rerr != nil {
				break
			}
		}
		resp.Body.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.st.Requests++
	switch {
	case err != nil && !alive:
		p.st.Unreachable++
	case err != nil:
		p.st.Transport++
	case resp.StatusCode == http.StatusServiceUnavailable && what == "token" && strings.Contains(string(body), `"refresh_in_progress"`):
		// The gate's refusal that time cures (a refresh that did not land
		// within /token's wait): counted with the gate's refusals, not as a
		// server error.
		p.st.Gate409++
		var g struct {
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(body, &g)
		p.st.GateDetails[g.Detail]++
	case resp.StatusCode >= 500:
		p.st.Server5xx++
		p.st.Statuses5xx[fmt.Sprintf("%s %d", what, resp.StatusCode)]++
	case resp.StatusCode == http.StatusConflict && what == "token":
		p.st.Gate409++
		var g struct {
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(body, &g)
		p.st.GateDetails[g.Detail]++
	case resp.StatusCode >= 400:
		p.st.Other4xx++
	default:
		p.st.OK++
		if what == "status" {
			var st struct {
				Version int64 `json:"version"`
			}
			if json.Unmarshal(body, &st) == nil {
				key := fmt.Sprintf("%s#%d/%s", in.name, incarnation, id)
				if st.Version < p.seenVer[key] {
					p.st.Rollbacks++
				}
				p.seenVer[key] = max(p.seenVer[key], st.Version)
			}
		}
	}
}

// clusterView is what the recovery check sees at one moment.
type clusterView struct {
	healthy bool
	why     string
	// unauth is the unauthenticated connections by id -> reason, from the
	// first instance that answered the list.
	unauth map[string]string
}

// look checks every component and every connection: every nats-server node
// and tokenline instance is up and ready, and on every instance every
// connection that is not unauthenticated is active or refreshing with an
// access token that has not expired.
func (r *runner) look(ctx context.Context) clusterView {
	v := clusterView{healthy: true}
	var why []string
	hc := &http.Client{Timeout: 3 * time.Second}
	get := func(url string, auth bool) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+r.fleet.apiToken)
		}
		return hc.Do(req)
	}
	for _, nd := range r.nats.nodes {
		resp, err := get(nd.healthURL(), false)
		if err != nil {
			why = append(why, nd.name+" unreachable")
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			why = append(why, fmt.Sprintf("%s healthz %d", nd.name, resp.StatusCode))
		}
	}
	now := time.Now()
	for _, in := range r.fleet.inst {
		resp, err := get(in.readyURL(), false)
		if err != nil {
			why = append(why, in.name+" unreachable")
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			why = append(why, fmt.Sprintf("%s readyz %d", in.name, resp.StatusCode))
			continue
		}
		resp, err = get(in.base+"/v1/connections", true)
		if err != nil {
			why = append(why, in.name+" list: "+err.Error())
			continue
		}
		var list apitypes.ListResponse
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			why = append(why, fmt.Sprintf("%s list: status %d %v", in.name, resp.StatusCode, err))
			continue
		}
		byID := make(map[string]apitypes.ConnectionStatus, len(list.Connections))
		for _, c := range list.Connections {
			byID[c.ID] = c
		}
		bad := map[string]int{}
		unauth := map[string]string{}
		for _, id := range r.ids {
			c, ok := byID[id]
			switch {
			case !ok:
				bad["missing"]++
			case c.State == "unauthenticated":
				unauth[id] = string(c.Reason)
			case c.State != "active" && c.State != "refreshing":
				bad[string(c.State)]++
			case !c.AccessTokenExpiresAt.After(now):
				bad["token expired"]++
			}
		}
		if v.unauth == nil {
			v.unauth = unauth
		}
		for k, n := range bad {
			why = append(why, fmt.Sprintf("%s: %d %s", in.name, n, k))
		}
	}
	if len(why) > 0 {
		v.healthy = false
		sort.Strings(why)
		v.why = strings.Join(why, "; ")
	}
	return v
}

// waitHealthy polls look every 500 ms until healthy or timeout, and returns
// when it became healthy (zero if it never did) and the last view.
func (r *runner) waitHealthy(ctx context.Context, timeout time.Duration) (time.Time, clusterView) {
	deadline := time.Now().Add(timeout)
	var v clusterView
	for time.Now().Before(deadline) && ctx.Err() == nil {
		v = r.look(ctx)
		if v.healthy {
			return time.Now(), v
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return time.Time{}, v
}

// waitWave waits (at most max) until refreshes are in full swing and
// returns the instance with the most refreshes in flight then, and how many
// it had.
func (r *runner) waitWave(ctx context.Context, maxWait time.Duration) (string, int) {
	want := max(3, len(r.ids)/50)
	deadline := time.Now().Add(maxWait)
	best, bestN := "", 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		per, rate := r.track.inFlight()
		best, bestN = "", 0
		for name, n := range per {
			if n > bestN || (n == bestN && name < best) {
				best, bestN = name, n
			}
		}
		if bestN >= 1 && rate >= want {
			return best, bestN
		}
		time.Sleep(20 * time.Millisecond)
	}
	return best, bestN
}

// streamLeader asks the cluster which node leads a stream (bounded retries:
// right after a fault there may be no leader for a moment).
func (r *runner) streamLeader(ctx context.Context, name string) (string, error) {
	var err error
	for range 40 {
		var in streamInfo
		in, err = streamState(ctx, r.js, name)
		if err == nil && in.Leader != "" {
			return in.Leader, nil
		}
		if err == nil {
			err = fmt.Errorf("stream %s has no leader", name)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return "", err
}

// lastSeq is the stream's last sequence (bounded retries).
func (r *runner) lastSeq(ctx context.Context) (uint64, error) {
	var err error
	for range 40 {
		var in streamInfo
		if in, err = streamState(ctx, r.js, streamName); err == nil {
			return in.LastSeq, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return 0, err
}

var _ jetstream.JetStream // r.js
