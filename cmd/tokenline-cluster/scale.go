package main

// The scale run (`go run ./cmd/tokenline-cluster scale`): one `tokenline
// serve` on its embedded NATS server with the production defaults, the
// sandbox as its own process, N connections authorised with short-lived
// access tokens, then a window of steady refreshing while /token is polled.
// It prints what an operator sizing a deployment asks: set-up rate,
// sustained refreshes per second, refresh latency, refreshes that started
// after their token had expired, token requests refused on healthy
// connections, the server's CPU, RSS and heap, and a bare golang.org/x/oauth2
// loop doing the same number of refreshes against the same sandbox.
// docs/operations.md ("Scale run") explains every line.

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/adapters/httpapi/client"
)

type scaleOptions struct {
	connections    int
	accessTTL      time.Duration
	window         time.Duration
	pollRate       int
	baselineGrants int
	logLevel       string
	nats           string
	timeout        time.Duration
	keep           bool
	json           bool
	dir            string
}

func scaleFlagSet(o *scaleOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("tokenline-cluster scale", pflag.ContinueOnError)
	fs.IntVar(&o.connections, "connections", 10000, "connections to create and authorise")
	fs.DurationVar(&o.accessTTL, "access-ttl", 30*time.Second, "access-token lifetime at the sandbox")
	fs.DurationVar(&o.window, "window", 0, "how long to measure after set-up (default: 1.2 access-token lifetimes, at least 60s)")
	fs.IntVar(&o.pollRate, "poll-rate", 50, "GET /token requests per second during the window, on random connections")
	fs.IntVar(&o.baselineGrants, "baseline-grants", 64, "grants the bare x/oauth2 baseline refreshes in turn")
	fs.StringVar(&o.logLevel, "log-level", "info", "tokenline --log-level (info is the production level)")
	fs.StringVar(&o.nats, "nats", "embedded", "embedded (serve's own NATS server, the default deployment) or process (a nats-server process of its own: serve's CPU, RSS and heap are then tokenline's alone)")
	fs.DurationVar(&o.timeout, "timeout", 90*time.Minute, "bound on the whole run")
	fs.BoolVar(&o.keep, "keep", false, "keep the run directory (data dir, logs)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON on stdout")
	fs.StringVar(&o.dir, "dir", "", "parent of the run directory (default the system temp dir)")
	return fs
}

func parseScaleFlags(args []string, stderr io.Writer) (scaleOptions, error) {
	var o scaleOptions
	fs := scaleFlagSet(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./cmd/tokenline-cluster scale [flags]\n\nThe scale run (docs/operations.md, \"Scale run\"). Flags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.window == 0 {
		o.window = max(60*time.Second, o.accessTTL*6/5)
	}
	switch {
	case o.connections < 1 || o.connections > 200000:
		return o, errors.New("--connections must be between 1 and 200000")
	case o.accessTTL < 5*time.Second || o.accessTTL > 24*time.Hour:
		return o, errors.New("--access-ttl must be between 5s and 24h")
	case o.window < 10*time.Second || o.window > 24*time.Hour:
		return o, errors.New("--window must be between 10s and 24h")
	case o.pollRate < 0 || o.pollRate > 5000:
		return o, errors.New("--poll-rate must be between 0 and 5000")
	case o.nats != "embedded" && o.nats != "process":
		return o, errors.New("--nats must be embedded or process")
	case o.baselineGrants < 1 || o.baselineGrants > 10000:
		return o, errors.New("--baseline-grants must be between 1 and 10000")
	}
	return o, nil
}

// scaleReport is the scale run's result.
type scaleReport struct {
	Connections int     `json:"connections"`
	SetupFailed int     `json:"setup_failed"`
	AccessTTL   string  `json:"access_ttl"`
	Window      string  `json:"window"`
	NATS        string  `json:"nats"`
	SetupSecs   float64 `json:"setup_seconds"`
	SetupRate   float64 `json:"setup_per_second"`

	// Refreshes succeeded with their refresh.started inside the window.
	Refreshes       int     `json:"refreshes"`
	RefreshesPerSec float64 `json:"refreshes_per_second"`
	// DemandPerSec is the rate one refresh per access-token lifetime needs.
	DemandPerSec float64 `json:"demand_per_second"`
	P50ms        float64 `json:"refresh_p50_ms"`
	P90ms        float64 `json:"refresh_p90_ms"`
	P99ms        float64 `json:"refresh_p99_ms"`
	// LateStarts counts refresh.started events after the access token they
	// replace had expired; ExpiredGaps counts refreshes whose new token
	// arrived after the old one had expired (a window without a token).
	LateStarts      int            `json:"late_starts"`
	ExpiredGaps     int            `json:"expired_before_replaced"`
	FailedTransient int            `json:"refresh_failed_transient"`
	Lost            map[string]int `json:"connections_lost,omitempty"`

	TokenCalls   int64            `json:"token_calls"`
	TokenRefused int64            `json:"token_refused"`
	RefusedWhy   map[string]int64 `json:"token_refused_by_error,omitempty"`

	CPUCores     float64 `json:"server_cpu_cores"`
	RSSMaxMiB    float64 `json:"server_rss_max_mib"`
	HeapLiveMiB  float64 `json:"server_heap_live_mib"`
	HeapInuseMiB float64 `json:"server_heap_inuse_mib"`
	// HeapPerConn is (live heap at the end - live heap before set-up) / N.
	HeapPerConn   float64 `json:"server_heap_live_bytes_per_connection"`
	CPUPerRefresh float64 `json:"server_cpu_ms_per_refresh"`

	Baseline baselineReport `json:"baseline"`

	Violations []string `json:"violations"`
	Targets    []string `json:"targets_missed"`
}

type baselineReport struct {
	Refreshes     int     `json:"refreshes"`
	Seconds       float64 `json:"seconds"`
	PerSec        float64 `json:"per_second"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	CPUPerRefresh float64 `json:"cpu_ms_per_refresh"`
}

func runScale(args []string, stdout, stderr io.Writer) int {
	o, err := parseScaleFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tokenline-cluster scale:", err)
		return 2
	}
	scale := func(r *runner, ctx context.Context) (*scaleReport, error) { return r.scale(ctx, o) }
	return execute("tokenline-cluster scale", o.timeout, options{keep: o.keep, json: o.json}, stdout, stderr, scale, printScale,
		func(rep *scaleReport) int { return len(rep.Violations) })
}

func (r *runner) scale(ctx context.Context, o scaleOptions) (*scaleReport, error) {
	r.t0 = time.Now()
	var err error
	if r.root, err = os.MkdirTemp(o.dir, "tokenline-scale-"); err != nil {
		return nil, err
	}
	for _, d := range []string{"bin", "logs"} {
		if err := os.MkdirAll(filepath.Join(r.root, d), 0o700); err != nil {
			return nil, err
		}
	}
	r.logf("run directory %s; building tokenline", r.root)
	natsBin, tlBin, err := build(ctx, filepath.Join(r.root, "bin"), o.nats == "process")
	if err != nil {
		return nil, err
	}
	var natsURL, readerURL string
	if o.nats == "process" {
		r.logf("starting nats-server (a process of its own)")
		if r.nats, err = newNATSCluster(r.root, natsBin, 1, r.sup); err != nil {
			return nil, err
		}
		if err := r.nats.startAll(ctx); err != nil {
			return nil, err
		}
		natsURL, readerURL = r.nats.url(userTokenline, r.nats.tokenlinePW), r.nats.url(userReader, r.nats.readerPW)
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	publicURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	natsListen := fmt.Sprintf("127.0.0.1:%d", ports[1])
	clientID, secret := "tokenline-scale", randomHex(24)
	r.logf("starting the sandbox (its own process, access tokens %s)", o.accessTTL)
	if r.sb, err = startSandbox(ctx, r.sup, sandboxConfig{mode: "process", bin: tlBin, root: r.root, clientID: clientID,
		clientSecret: secret, redirectURI: publicURL + "/oauth/callback", accessTTL: o.accessTTL, refreshTTL: 24 * time.Hour,
		maxGrants: o.connections + o.baselineGrants + 100, maxCodes: o.connections + o.baselineGrants + 100}); err != nil {
		return nil, err
	}
	r.logf("starting tokenline serve (NATS %s, production defaults, --log-level %s)", o.nats, o.logLevel)
	if r.fleet, err = newFleet(r.sup, fleetConfig{bin: tlBin, root: r.root, n: 1, natsListen: natsListen, natsURL: natsURL, replicas: 1,
		issuer: r.sb.issuer(), clientID: clientID, secret: secret, publicPort: ports[0], logLevel: o.logLevel,
		defaults: true}); err != nil {
		return nil, err
	}
	if _, err := r.fleet.startAll(ctx); err != nil {
		return nil, err
	}
	in := r.fleet.inst[0]

	// The heap before any connection exists: the per-connection figure is
	// what the connections added.
	live0, _, err := serverHeap(ctx, in.base, r.fleet.apiToken)
	if err != nil {
		return nil, err
	}
	rep := &scaleReport{AccessTTL: o.accessTTL.String(), Window: o.window.String(), NATS: o.nats, Lost: map[string]int{},
		RefusedWhy: map[string]int64{}}
	r.logf("creating and authorising %d connections", o.connections)
	setupStart := time.Now()
	step := max(o.connections/10, 100)
	setup := r.fleet.setup(ctx, o.connections, func(d int) {
		if d%step == 0 {
			r.logf("  %d set up (%.0f/s)", d, float64(d)/time.Since(setupStart).Seconds())
		}
	})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.SetupSecs = time.Since(setupStart).Seconds()
	rep.Connections, rep.SetupFailed = len(setup.IDs), setup.Failed
	rep.SetupRate = float64(len(setup.IDs)) / rep.SetupSecs
	if len(setup.IDs) == 0 {
		return nil, fmt.Errorf("no connection could be set up: %v", setup.Errors)
	}
	r.logf("%d connections set up in %.1fs (%.0f/s), %d failed", len(setup.IDs), rep.SetupSecs, rep.SetupRate, setup.Failed)

	// The window: poll /token, sample the server's RSS.
	r.logf("measuring for %s", o.window)
	pid := in.proc.pid()
	cpu0, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	wStart := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, o.window)
	var wg sync.WaitGroup
	var rssMax atomic.Int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			if rss, err := procRSS(pid); err == nil && rss > rssMax.Load() {
				rssMax.Store(rss)
			}
			select {
			case <-wctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	var pollMu sync.Mutex
	go func() {
		defer wg.Done()
		pollTokens(wctx, in.api, setup.IDs, o.pollRate, func(why string) {
			pollMu.Lock()
			defer pollMu.Unlock()
			rep.TokenCalls++
			if why != "" {
				rep.TokenRefused++
				rep.RefusedWhy[why]++
			}
		})
	}()
	<-wctx.Done()
	wcancel()
	wg.Wait()
	wEnd := time.Now()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	cpu1, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	secs := wEnd.Sub(wStart).Seconds()
	rep.CPUCores = (cpu1 - cpu0) / secs
	rep.RSSMaxMiB = float64(rssMax.Load()) / (1 << 20)
	if live, inuse, err := serverHeap(ctx, in.base, r.fleet.apiToken); err == nil {
		rep.HeapLiveMiB, rep.HeapInuseMiB = live/(1<<20), inuse/(1<<20)
		rep.HeapPerConn = max(live-live0, 0) / float64(rep.Connections)
	} else {
		r.logf("heap: %v", err)
	}

	r.logf("reading the stream")
	var nc *nats.Conn
	if readerURL != "" {
		nc, err = connectNATS(readerURL, "scale-reader")
	} else {
		nc, err = nats.Connect("nats://"+natsListen, nats.Name("scale-reader"), nats.Timeout(5*time.Second),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
			readerSeed(filepath.Join(in.dataDir, "nats-reader.nk")))
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS as the reader: %w", err)
	}
	defer nc.Close()
	a := newScaleAnalysis(wStart, wEnd)
	if _, err := eachEvent(ctx, nc, 10*time.Minute, readerURL != "", a.add); err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	a.finish(rep, secs, o)
	if rep.Refreshes > 0 {
		rep.CPUPerRefresh = (cpu1 - cpu0) * 1000 / float64(rep.Refreshes)
	}

	// The baseline refreshes at tokenline's rate (so that latencies compare
	// at the same load), for at most 30 s.
	baseN := max(min(rep.Refreshes, int(rep.RefreshesPerSec*30)), 1)
	r.logf("baseline: %d refreshes with bare x/oauth2 over %d grants at %.0f/s", baseN, o.baselineGrants, rep.RefreshesPerSec)
	if rep.Baseline, err = bareBaseline(ctx, r.sb, clientID, secret, publicURL+"/oauth/callback", o.baselineGrants, baseN, rep.RefreshesPerSec); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	rep.judge(o)
	return rep, nil
}

// readerSeed authenticates as the reader identity with the nkey seed file
// serve wrote into its data dir.
func readerSeed(path string) nats.Option {
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		return func(*nats.Options) error { return err }
	}
	return opt
}

// pollTokens asks for random connections' tokens at rate per second until
// ctx ends; note gets "" for a token and the error word otherwise.
func pollTokens(ctx context.Context, api *client.Client, ids []string, rate int, note func(why string)) {
	if rate == 0 {
		<-ctx.Done()
		return
	}
	sem := make(chan struct{}, 32)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // 32 in flight: the server is slower than the rate
		}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := api.Token(cctx, id)
			if err == nil {
				note("")
				return
			}
			var ae *client.APIError
			switch {
			case errors.As(err, &ae):
				note(fmt.Sprintf("%d %s", ae.Status, ae.Code))
			default:
				note("transport")
			}
		}(ids[mrand.IntN(len(ids))])
	}
}

// scaleAnalysis walks the stream once: per connection, the expiry of its
// current access token and its open refresh.
type scaleAnalysis struct {
	from, to  time.Time
	expiry    map[string]time.Time
	open      map[string]time.Time
	latencies []time.Duration
	late      int
	gaps      int
	transient int
	lost      map[string]int
}

func newScaleAnalysis(from, to time.Time) *scaleAnalysis {
	return &scaleAnalysis{from: from, to: to, expiry: map[string]time.Time{}, open: map[string]time.Time{},
		lost: map[string]int{}}
}

func (a *scaleAnalysis) add(e scanEvent) {
	in := !e.Time.Before(a.from) && e.Time.Before(a.to)
	conn := e.Subject
	var d struct {
		Tokens struct {
			ExpiresAt time.Time `json:"access_token_expires_at"`
		} `json:"tokens"`
		Terminal bool   `json:"terminal"`
		Reason   string `json:"reason"`
		Code     string `json:"error_code"`
	}
	switch e.Type {
	case "authorisation.completed":
		_ = json.Unmarshal(e.Data, &d)
		a.expiry[conn] = d.Tokens.ExpiresAt
	case "refresh.started":
		if _, ok := a.open[conn]; !ok {
			a.open[conn] = e.Time
		}
		if exp, ok := a.expiry[conn]; in && ok && !exp.IsZero() && e.Time.After(exp) {
			a.late++
		}
	case "refresh.succeeded":
		_ = json.Unmarshal(e.Data, &d)
		started, ok := a.open[conn]
		delete(a.open, conn)
		if ok && !started.Before(a.from) && started.Before(a.to) {
			a.latencies = append(a.latencies, e.Time.Sub(started))
			if exp := a.expiry[conn]; !exp.IsZero() && e.Time.After(exp) {
				a.gaps++
			}
		}
		a.expiry[conn] = d.Tokens.ExpiresAt
	case "refresh.failed":
		_ = json.Unmarshal(e.Data, &d)
		if in && !d.Terminal {
			a.transient++
		}
		if d.Terminal {
			// The connection went unauthenticated: no provider revokes
			// anything in this run, so tokenline lost it.
			a.lost[cmp.Or(d.Reason, d.Code, "terminal")]++
			delete(a.open, conn)
			delete(a.expiry, conn)
		}
	case "connection.deleted", "tokens.invalidated":
		delete(a.open, conn)
		delete(a.expiry, conn)
	}
}

func (a *scaleAnalysis) finish(rep *scaleReport, secs float64, o scaleOptions) {
	l := a.latencies
	slices.Sort(l)
	rep.Refreshes = len(l)
	rep.RefreshesPerSec = float64(len(l)) / secs
	rep.DemandPerSec = float64(rep.Connections) / o.accessTTL.Seconds()
	rep.P50ms, rep.P90ms, rep.P99ms = msf(percentile(l, 0.5)), msf(percentile(l, 0.9)), msf(percentile(l, 0.99))
	rep.LateStarts, rep.ExpiredGaps, rep.FailedTransient = a.late, a.gaps, a.transient
	rep.Lost = a.lost
}

func msf(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

// judge lists the invariants broken (exit 1) and the targets missed (printed).
func (rep *scaleReport) judge(o scaleOptions) {
	v := func(ok bool, f string, a ...any) {
		if !ok {
			rep.Violations = append(rep.Violations, fmt.Sprintf(f, a...))
		}
	}
	v(rep.SetupFailed == 0, "%d connections could not be set up", rep.SetupFailed)
	v(rep.LateStarts == 0, "%d refreshes started after their token had expired", rep.LateStarts)
	v(rep.ExpiredGaps == 0, "%d tokens expired before their replacement was stored", rep.ExpiredGaps)
	v(rep.TokenRefused == 0, "%d of %d token requests on healthy connections were refused", rep.TokenRefused, rep.TokenCalls)
	lost := 0
	for _, n := range rep.Lost {
		lost += n
	}
	v(lost == 0, "%d connections lost (%v)", lost, rep.Lost)
	v(rep.Refreshes > 0 || o.window < o.accessTTL/2, "no refresh in the window")
	t := func(ok bool, f string, a ...any) {
		if !ok {
			rep.Targets = append(rep.Targets, fmt.Sprintf(f, a...))
		}
	}
	t(rep.CPUCores <= 1, "server CPU %.2f cores (target <= 1)", rep.CPUCores)
	t(rep.RSSMaxMiB <= 512, "server RSS %.0f MiB (target <= 512)", rep.RSSMaxMiB)
	t(rep.HeapPerConn <= 2048, "server live heap %.0f B/connection (target <= 2048)", rep.HeapPerConn)
}

// procCPU is a process's user+system CPU seconds (Linux /proc).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU of the server: %w (the scale run reads /proc: Linux only)", err)
	}
	// Fields after the command name (which may hold spaces) end with ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, errors.New("CPU of the server: short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// procRSS is a process's resident set size in bytes (Linux /proc).
func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// serverHeap reads go_gc_heap_live_bytes (the heap the last GC found live:
// heap in use after GC) and go_memstats_heap_inuse_bytes from /metrics.
func serverHeap(ctx context.Context, base, apiToken string) (live, inuse float64, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for name, dst := range map[string]*float64{"go_gc_heap_live_bytes ": &live, "go_memstats_heap_inuse_bytes ": &inuse} {
			if v, ok := strings.CutPrefix(line, name); ok {
				*dst, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
	}
	if live == 0 {
		return 0, inuse, errors.New("/metrics has no go_gc_heap_live_bytes")
	}
	return live, inuse, sc.Err()
}

// bareBaseline authorises grants at the sandbox with golang.org/x/oauth2
// alone (PKCE, the same client) and refreshes them in turn, n refreshes
// paced at rate per second (0: as fast as it goes) with at most tokenline's
// default concurrency (16) in flight, timing each and this process's CPU.
func bareBaseline(ctx context.Context, sb *sandboxRun, clientID, secret, redirect string, grants, n int, rate float64) (baselineReport, error) {
	var meta struct {
		Auth  string `json:"authorization_endpoint"`
		Token string `json:"token_endpoint"`
	}
	resp, err := http.Get(sb.issuer() + "/.well-known/oauth-authorization-server")
	if err != nil {
		return baselineReport{}, err
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta)
	resp.Body.Close()
	if err != nil {
		return baselineReport{}, fmt.Errorf("sandbox metadata: %w", err)
	}
	cfg := &oauth2.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: redirect, Scopes: []string{"users:read"},
		Endpoint: oauth2.Endpoint{AuthURL: meta.Auth, TokenURL: meta.Token, AuthStyle: oauth2.AuthStyleInHeader}}
	toks := make([]*oauth2.Token, 0, grants)
	for range grants {
		verifier := oauth2.GenerateVerifier()
		state := rand.Text()
		loc, err := hop(ctx, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
		if err != nil {
			return baselineReport{}, fmt.Errorf("authorize: %w", err)
		}
		u, err := url.Parse(loc)
		if err != nil || u.Query().Get("code") == "" {
			return baselineReport{}, fmt.Errorf("authorize: no code in the redirect %s", redactQuery(loc))
		}
		tok, err := cfg.Exchange(ctx, u.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			return baselineReport{}, fmt.Errorf("exchange: %w", err)
		}
		toks = append(toks, tok)
	}
	var (
		mu   sync.Mutex
		lat  = make([]time.Duration, 0, n)
		next atomic.Int64
		ferr error
		wg   sync.WaitGroup
	)
	cpu0 := selfCPU()
	start := time.Now()
	workers := min(16, grants)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Worker w owns grants w, w+workers, ...: no grant is
			// refreshed twice at once (the sandbox would see a reuse).
			var mine []int
			for g := w; g < grants; g += workers {
				mine = append(mine, g)
			}
			for k := 0; ctx.Err() == nil; k++ {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if rate > 0 {
					time.Sleep(time.Until(start.Add(time.Duration(float64(i-1) / rate * float64(time.Second)))))
				}
				g := mine[k%len(mine)]
				t0 := time.Now()
				tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: toks[g].RefreshToken}).Token()
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					ferr = cmp.Or(ferr, err)
				} else {
					lat = append(lat, d)
					toks[g] = tok
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start).Seconds()
	if ferr != nil {
		return baselineReport{}, ferr
	}
	slices.Sort(lat)
	return baselineReport{Refreshes: len(lat), Seconds: took, PerSec: float64(len(lat)) / took,
		P50ms: msf(percentile(lat, 0.5)), P99ms: msf(percentile(lat, 0.99)),
		CPUPerRefresh: (selfCPU() - cpu0) * 1000 / float64(max(len(lat), 1))}, nil
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func printScale(w io.Writer, r *scaleReport) {
	fmt.Fprintf(w, "scale run: %d connections, access tokens %s, window %s, NATS %s\n\n", r.Connections, r.AccessTTL, r.Window, r.NATS)
	fmt.Fprintf(w, "  set-up                      %.0f connections/s (%.1f s, %d failed)\n", r.SetupRate, r.SetupSecs, r.SetupFailed)
	fmt.Fprintf(w, "  refreshes                   %d in the window, %.1f/s (demand %.1f/s)\n", r.Refreshes, r.RefreshesPerSec, r.DemandPerSec)
	fmt.Fprintf(w, "  refresh latency             p50 %.1f ms, p90 %.1f ms, p99 %.1f ms (refresh.started -> refresh.succeeded)\n", r.P50ms, r.P90ms, r.P99ms)
	fmt.Fprintf(w, "  started after expiry        %d\n", r.LateStarts)
	fmt.Fprintf(w, "  replaced after expiry       %d\n", r.ExpiredGaps)
	fmt.Fprintf(w, "  transient refresh failures  %d\n", r.FailedTransient)
	fmt.Fprintf(w, "  connections lost            %v\n", r.Lost)
	fmt.Fprintf(w, "  /token refused (healthy)    %d of %d %v\n", r.TokenRefused, r.TokenCalls, r.RefusedWhy)
	fmt.Fprintf(w, "  server CPU                  %.2f cores, %.2f ms per refresh (everything: API, NATS, vault, events)\n", r.CPUCores, r.CPUPerRefresh)
	fmt.Fprintf(w, "  server RSS (max)            %.0f MiB\n", r.RSSMaxMiB)
	fmt.Fprintf(w, "  server heap                 live after GC %.1f MiB (%.0f B per connection over the empty server's), in use %.1f MiB%s\n", r.HeapLiveMiB, r.HeapPerConn, r.HeapInuseMiB, map[string]string{"embedded": " (embedded NATS included)", "process": ""}[r.NATS])
	b := r.Baseline
	fmt.Fprintf(w, "  bare x/oauth2 baseline      %d refreshes in %.1f s (%.0f/s), p50 %.1f ms, p99 %.1f ms, %.2f ms CPU per refresh\n", b.Refreshes, b.Seconds, b.PerSec, b.P50ms, b.P99ms, b.CPUPerRefresh)
	if b.P50ms > 0 {
		fmt.Fprintf(w, "  tokenline / bare            p50 latency %.2fx, CPU per refresh %.2fx\n", r.P50ms/b.P50ms, r.CPUPerRefresh/max(b.CPUPerRefresh, 1e-9))
	}
	fmt.Fprintln(w)
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "targets missed:\n  %s\n", strings.Join(r.Targets, "\n  "))
	}
	if len(r.Violations) == 0 {
		fmt.Fprintln(w, "PASS: no late refresh, no refused token request, no lost connection")
		return
	}
	fmt.Fprintf(w, "FAIL:\n  %s\n", strings.Join(r.Violations, "\n  "))
}
