// Command tokenline-cluster is the repeatable cluster scenario: it builds
// nats-server (from the module tokenline depends on) and tokenline, starts a
// three-node JetStream cluster with authentication, the sandbox provider as
// its own process and several tokenline instances on 127.0.0.1, authorises
// connections with short-lived access tokens so that refreshes come in
// waves, then injects one fault at a time and measures what each did:
//
//	a  kill -9 of a tokenline instance while it has refreshes in flight, restart
//	b  kill -9 of the node leading the TOKENLINE stream, restart
//	c  kill -9 of the node leading the vault bucket (KV_tokenline_tokens), restart
//	d  every nats-server node down (kill -9, or SIGSTOP with --outage-mode stop) for --outage, restart
//
// It exits 0 when every invariant held, 1 when one was violated, 2 when the
// scenario itself could not run. Run it from the repository:
//
//	go run ./cmd/tokenline-cluster --short          # CI: a few hundred connections, ~3-4 min
//	go run ./cmd/tokenline-cluster --connections 2000 --settle 60s --keep
//
// docs/operations.md ("Cluster scenario") explains every column.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
)

type options struct {
	connections    int
	instances      int
	accessTTL      time.Duration
	refreshLease   time.Duration
	gateMargin     time.Duration
	phases         []string
	settle         time.Duration
	down           time.Duration
	outage         time.Duration
	outageMode     string
	recoverTimeout time.Duration
	timeout        time.Duration
	short          bool
	keep           bool
	json           bool
	sandbox        string
	dir            string
}

// flagSet defines the scenario's flags on o.
func flagSet(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("tokenline-cluster", pflag.ContinueOnError)
	fs.IntVar(&o.connections, "connections", 1000, "connections to create and authorise")
	fs.IntVar(&o.instances, "instances", 3, "tokenline instances")
	fs.DurationVar(&o.accessTTL, "access-ttl", 30*time.Second, "access-token lifetime at the sandbox (a refresh every ~0.8 of it)")
	fs.DurationVar(&o.refreshLease, "refresh-lease", 5*time.Second, "tokenline --refresh-lease (keep it under access-ttl/5, the refresh margin)")
	fs.DurationVar(&o.gateMargin, "gate-expiry-margin", 2*time.Second, "tokenline --gate-expiry-margin (keep it under access-ttl/5)")
	fs.StringSliceVar(&o.phases, "phases", []string{"a", "b", "c", "d"}, "faults to inject, in order: a (instance), b (stream leader), c (vault leader), d (all NATS)")
	fs.DurationVar(&o.settle, "settle", 60*time.Second, "how long each phase goes on after the cluster recovered (the baseline phase lasts this or one refresh cycle, whichever is longer)")
	fs.DurationVar(&o.down, "down", 5*time.Second, "how long a killed process stays down before its restart (faults a, b, c)")
	fs.DurationVar(&o.outage, "outage", 20*time.Second, "how long all of NATS is down (fault d)")
	fs.StringVar(&o.outageMode, "outage-mode", "kill", "fault d: kill (kill -9, restart) or stop (SIGSTOP, SIGCONT)")
	fs.DurationVar(&o.recoverTimeout, "recover-timeout", 120*time.Second, "a phase not recovered after this long is a violation")
	fs.DurationVar(&o.timeout, "timeout", 45*time.Minute, "bound on the whole run")
	fs.BoolVar(&o.short, "short", false, "the CI run: 300 connections, settle 10s, down 3s, recover-timeout 60s, timeout 10m (explicit flags win)")
	fs.BoolVar(&o.keep, "keep", false, "keep the run directory (configs, stores, logs) for inspection")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON on stdout")
	fs.StringVar(&o.sandbox, "sandbox", "process", "the provider: process (tokenline sandbox, its own process) or embedded (served by this program)")
	fs.StringVar(&o.dir, "dir", "", "parent of the run directory (default the system temp dir)")
	return fs
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flagSet(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./cmd/tokenline-cluster [flags]\n\nThe cluster scenario (docs/operations.md, \"Cluster scenario\"). Flags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.short {
		set := func(name string, f func()) {
			if !fs.Changed(name) {
				f()
			}
		}
		set("connections", func() { o.connections = 300 })
		set("settle", func() { o.settle = 10 * time.Second })
		set("down", func() { o.down = 3 * time.Second })
		set("recover-timeout", func() { o.recoverTimeout = 60 * time.Second })
		set("timeout", func() { o.timeout = 10 * time.Minute })
	}
	switch {
	case o.connections < 1 || o.connections > 100000:
		return o, errors.New("--connections must be between 1 and 100000")
	case o.instances < 1 || o.instances > 16:
		return o, errors.New("--instances must be between 1 and 16")
	case o.accessTTL < 5*time.Second:
		return o, errors.New("--access-ttl must be at least 5s")
	case o.outageMode != "kill" && o.outageMode != "stop":
		return o, errors.New("--outage-mode must be kill or stop")
	case o.sandbox != "process" && o.sandbox != "embedded":
		return o, errors.New("--sandbox must be process or embedded")
	}
	for _, p := range o.phases {
		if !slices.Contains([]string{"a", "b", "c", "d"}, p) {
			return o, fmt.Errorf("--phases: unknown phase %q (want a, b, c, d)", p)
		}
	}
	return o, nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "scale" {
		return runScale(args[1:], stdout, stderr)
	}
	opt, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tokenline-cluster:", err)
		return 2
	}
	return execute("tokenline-cluster", opt.timeout, opt, stdout, stderr, (*runner).scenario, printReport,
		func(rep *report) int { return len(rep.Violations) })
}

// execute makes one run (the scenario or the scale run) under a context
// bounded by timeout and ended by SIGINT or SIGTERM, kills every child and
// removes the run directory (kept with --keep, or when the run failed),
// prints the report (JSON with --json) and returns the exit status: 0, 1
// when the report has violations, 2 when the run could not be made.
func execute[R any](name string, timeout time.Duration, opt options, stdout, stderr io.Writer,
	run func(*runner, context.Context) (R, error), print func(io.Writer, R), violations func(R) int) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	r := &runner{opt: opt, sup: &supervisor{}, log: stderr}
	failed := true
	defer func() {
		p := recover()
		r.cleanup(failed || p != nil)
		if p != nil {
			panic(p)
		}
	}()
	rep, err := run(r, ctx)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	failed = false
	if opt.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		print(stdout, rep)
	}
	if violations(rep) > 0 {
		return 1
	}
	return 0
}

// runner is one run of the scenario.
type runner struct {
	opt   options
	log   io.Writer
	root  string
	sup   *supervisor
	nats  *natsCluster
	sb    *sandboxRun
	fleet *fleet
	ids   []string
	admin *nats.Conn // tokenline user: stream info, leaders
	rdr   *nats.Conn // reader user: live events, the final scan
	js    jetstream.JetStream
	track *tracker
	poll  *poller
	t0    time.Time
}

func (r *runner) logf(format string, a ...any) {
	fmt.Fprintf(r.log, "[%6.1fs] %s\n", time.Since(r.t0).Seconds(), fmt.Sprintf(format, a...))
}

// cleanup kills every child and removes the run directory unless it is to
// be kept (--keep, or the run failed).
func (r *runner) cleanup(keep bool) {
	for _, nc := range []*nats.Conn{r.admin, r.rdr} {
		if nc != nil {
			nc.Close()
		}
	}
	r.sup.killAll()
	if r.fleet != nil {
		r.fleet.close()
	}
	if r.sb != nil {
		r.sb.close()
	}
	if r.root == "" {
		return
	}
	r.sup.mu.Lock()
	started := len(r.sup.procs) > 0
	r.sup.mu.Unlock()
	if r.opt.keep || (keep && started) {
		fmt.Fprintln(r.log, "tokenline-cluster: run directory kept:", r.root)
		return
	}
	_ = os.RemoveAll(r.root)
}

// build compiles nats-server and tokenline into dir.
func build(ctx context.Context, dir string, withNATS bool) (natsBin, tlBin string, err error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", "", errors.New("run it inside the tokenline module (go run ./cmd/tokenline-cluster)")
	}
	root := filepath.Dir(mod)
	cmd := exec.CommandContext(ctx, "go", "list", "-m")
	cmd.Dir = root
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "github.com/tokenline/tokenline" {
		return "", "", fmt.Errorf("%s is not the tokenline module: run the scenario from the tokenline repository", root)
	}
	natsBin, tlBin = filepath.Join(dir, "nats-server"), filepath.Join(dir, "tokenline")
	builds := [][]string{{"build", "-o", tlBin, "./cmd/tokenline"}}
	if withNATS {
		builds = append(builds, []string{"build", "-o", natsBin, "github.com/nats-io/nats-server/v2"})
	}
	for _, b := range builds {
		cmd := exec.CommandContext(ctx, "go", b...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go %s: %w\n%s", strings.Join(b, " "), err, out)
		}
	}
	return natsBin, tlBin, nil
}

// report is the whole run.
type report struct {
	Connections  int    `json:"connections"`
	Instances    int    `json:"instances"`
	AccessTTL    string `json:"access_ttl"`
	RefreshLease string `json:"refresh_lease"`
	Sandbox      string `json:"sandbox"`
	SetupTook    string `json:"setup_took"`
	// StartFailures are instances that exited while starting against the
	// fresh cluster (and were started again).
	StartFailures []string `json:"start_failures,omitempty"`
	// SetupFailed counts connections that could not be created and
	// authorised (they are left out of the phases); SetupRetries counts
	// authorisations that failed once and were retried.
	SetupFailed  int           `json:"setup_failed"`
	SetupRetries int           `json:"setup_retries"`
	SetupErrors  []string      `json:"setup_errors,omitempty"`
	StreamLast   uint64        `json:"stream_last_seq"`
	Scanned      int           `json:"events_scanned"`
	Phases       []phaseReport `json:"phases"`
	Violations   []string      `json:"violations"`
}

// phaseReport is one phase's measurements.
type phaseReport struct {
	Name            string    `json:"phase"`
	Fault           string    `json:"fault"`
	Target          string    `json:"target,omitempty"`
	InFlightAtFault int       `json:"in_flight_at_fault"`
	Seconds         float64   `json:"seconds"`
	StartAt         time.Time `json:"start_at"`
	EndAt           time.Time `json:"end_at"`
	FirstSeq        uint64    `json:"first_seq"`
	EndSeq          uint64    `json:"end_seq"`
	Cycles          float64   `json:"cycles"`

	RefreshRequests    int64            `json:"refresh_requests"`
	ReqPerConnPerCycle float64          `json:"requests_per_connection_per_cycle"`
	ReqPerRefresh      float64          `json:"requests_per_refresh_succeeded"`
	Reuse              int64            `json:"refresh_token_reuse"`
	TokenErrors        map[string]int64 `json:"token_endpoint_errors,omitempty"`
	// Grants is the sandbox's rotations per live grant at the phase's end:
	// connections authorised together should be within one or two of each
	// other; a connection refreshed too often or left behind widens it.
	Grants            grantSpread      `json:"grants_at_end"`
	RefreshesPerGrant map[string]int64 `json:"refreshes_per_grant_at_end"`

	Lost        int            `json:"connections_lost"`
	LostReasons map[string]int `json:"lost_reasons,omitempty"`
	// DiedWithKilled counts connections lost as rotated_tokens_lost whose
	// refresh lease was held by the tokenline instance this phase killed:
	// its refresh request may have been answered with rotated tokens that
	// died with the process, so tokenline gives the grant up rather than
	// present the old refresh token (by design; not counted in Lost).
	DiedWithKilled int               `json:"lost_with_killed_instance"`
	lostIDs        map[string]string // connection -> reason, of Lost

	ProviderUnauth  int            `json:"unauthenticated_by_provider"`
	ProviderReasons map[string]int `json:"provider_reasons,omitempty"`

	Recovered       bool    `json:"recovered"`
	RecoverSeconds  float64 `json:"recover_seconds"`
	NotRecoveredWhy string  `json:"not_recovered_why,omitempty"`

	Stream     streamFacts `json:"stream"`
	Poll       pollStats   `json:"poll"`
	Violations []string    `json:"violations,omitempty"`

	stats0, stats1 sandboxStats
	start, end     time.Time
}

var faultNames = map[string]string{
	"base": "none (baseline)",
	"a":    "kill -9 tokenline instance mid-wave",
	"b":    "kill -9 TOKENLINE stream leader node",
	"c":    "kill -9 vault bucket leader node",
	"d":    "all NATS down",
}

func (r *runner) scenario(ctx context.Context) (*report, error) {
	r.t0 = time.Now()
	o := r.opt
	var err error
	if r.root, err = os.MkdirTemp(o.dir, "tokenline-cluster-"); err != nil {
		return nil, err
	}
	for _, d := range []string{"bin", "logs"} {
		if err := os.MkdirAll(filepath.Join(r.root, d), 0o700); err != nil {
			return nil, err
		}
	}
	r.logf("run directory %s; building nats-server and tokenline (the module in the current directory)", r.root)
	natsBin, tlBin, err := build(ctx, filepath.Join(r.root, "bin"), true)
	if err != nil {
		return nil, err
	}

	r.logf("starting 3 nats-server nodes")
	if r.nats, err = newNATSCluster(r.root, natsBin, 3, r.sup); err != nil {
		return nil, err
	}
	if err := r.nats.startAll(ctx); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	publicURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	clientID, secret := "tokenline-scenario", randomHex(24)
	r.logf("starting the sandbox (%s)", o.sandbox)
	if r.sb, err = startSandbox(ctx, r.sup, sandboxConfig{mode: o.sandbox, bin: tlBin, root: r.root, clientID: clientID,
		clientSecret: secret, redirectURI: publicURL + "/oauth/callback", accessTTL: o.accessTTL, refreshTTL: 24 * time.Hour}); err != nil {
		return nil, err
	}
	r.logf("starting %d tokenline instances", o.instances)
	if r.fleet, err = newFleet(r.sup, fleetConfig{bin: tlBin, root: r.root, n: o.instances,
		natsURL: r.nats.url(userTokenline, r.nats.tokenlinePW), issuer: r.sb.issuer(), clientID: clientID, secret: secret,
		refreshLease: o.refreshLease, gateMargin: o.gateMargin, publicPort: ports[0]}); err != nil {
		return nil, err
	}
	startFailures, err := r.fleet.startAll(ctx)
	if err != nil {
		return nil, err
	}
	for _, f := range startFailures {
		r.logf("start-up: %s (started again)", f)
	}
	if r.admin, err = connectNATS(r.nats.url(userTokenline, r.nats.tokenlinePW), "scenario-admin"); err != nil {
		return nil, err
	}
	if r.js, err = jetstream.New(r.admin); err != nil {
		return nil, err
	}
	if r.rdr, err = connectNATS(r.nats.url(userReader, r.nats.readerPW), "scenario-reader"); err != nil {
		return nil, err
	}
	r.track = newTracker()
	sub, err := r.rdr.Subscribe("tokenline.conn.>", r.track.handle)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)

	r.logf("creating and authorising %d connections", o.connections)
	setupStart := time.Now()
	setup := r.fleet.setup(ctx, o.connections, func(d int) { r.logf("  %d set up", d) })
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.ids = setup.IDs
	if len(r.ids) == 0 {
		return nil, fmt.Errorf("no connection could be set up: %v", setup.Errors)
	}
	if setup.Failed > 0 || setup.Retries > 0 {
		r.logf("setup: %d connections failed, %d requests retried; first errors: %s", setup.Failed, setup.Retries, strings.Join(setup.Errors, " | "))
	}
	if at, v := r.waitHealthy(ctx, 2*time.Minute); at.IsZero() {
		return nil, fmt.Errorf("the connections did not all become active: %s", v.why)
	}
	rep := &report{StartFailures: startFailures, SetupFailed: setup.Failed, SetupRetries: setup.Retries, SetupErrors: setup.Errors, Connections: len(r.ids), Instances: o.instances, AccessTTL: o.accessTTL.String(),
		RefreshLease: o.refreshLease.String(), Sandbox: o.sandbox, SetupTook: time.Since(setupStart).Round(time.Millisecond).String()}
	r.logf("all %d connections active after %s", len(r.ids), rep.SetupTook)

	r.poll = newPoller(r.fleet, r.ids, 50*time.Millisecond)
	lost := map[string]string{}
	for _, name := range append([]string{"base"}, o.phases...) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		pr, err := r.phase(ctx, name, lost)
		if err != nil {
			return nil, fmt.Errorf("phase %s: %w", name, err)
		}
		rep.Phases = append(rep.Phases, pr)
	}

	r.logf("reading the whole %s stream with the reader user", streamName)
	evs, info, err := scanStream(ctx, r.rdr, 5*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	rep.StreamLast, rep.Scanned = info.LastSeq, len(evs)
	// Each phase is its window [FirstSeq, EndSeq] of the stream. Events
	// before the first phase (setup) and between or after phases (appended
	// while the scenario checked the cluster between two windows) belong
	// to no phase: their gaps, duplicates and double starts are added to
	// the phase before them (setup's to the first), their refreshes are
	// not counted, as the sandbox's counters are not read for them either.
	bounds := []uint64{1}
	for _, p := range rep.Phases {
		bounds = append(bounds, p.FirstSeq, p.EndSeq+1)
	}
	facts := analyse(evs, bounds, info.LastSeq)
	for i := range rep.Phases {
		p := &rep.Phases[i]
		p.Stream = facts[1+2*i]
		extra := []streamFacts{facts[2+2*i]}
		if i == 0 {
			extra = append(extra, facts[0])
		}
		for _, x := range extra {
			p.Stream.Gaps += x.Gaps
			p.Stream.DuplicateIDs += x.DuplicateIDs
			p.Stream.DoubleStarted += x.DoubleStarted
		}
		p.excuseKilledHolder()
		p.finish(len(r.ids), o.accessTTL)
		for _, v := range p.Violations {
			rep.Violations = append(rep.Violations, p.Name+": "+v)
		}
	}
	for _, f := range startFailures {
		rep.Violations = append(rep.Violations, "start-up: "+f)
	}
	if setup.Failed > 0 || setup.Retries > 0 {
		rep.Violations = append([]string{fmt.Sprintf("setup: %d connections could not be set up, %d authorisations failed and were retried (first: %s)",
			setup.Failed, setup.Retries, strings.Join(setup.Errors, " | "))}, rep.Violations...)
	}
	if rep.Violations == nil {
		rep.Violations = []string{}
	}
	return rep, nil
}

// phase runs one phase: the fault (none for the baseline), recovery, then
// settle; it records the sandbox counters, the stream position and the
// poller's counts around it.
func (r *runner) phase(ctx context.Context, name string, lost map[string]string) (phaseReport, error) {
	o := r.opt
	pr := phaseReport{Name: name, Fault: faultNames[name]}
	var err error
	// The sandbox's counters are read before the stream's first sequence
	// and after its last: a token request precedes its events, so a
	// request in flight at a boundary is counted and its events may not
	// be, never the other way round (requests per refresh >= 1 unless
	// refreshes are recorded without a request).
	if pr.stats0, err = r.sb.stats(ctx); err != nil {
		return pr, err
	}
	if pr.FirstSeq, err = r.lastSeq(ctx); err != nil {
		return pr, err
	}
	pr.FirstSeq++
	pr.start = time.Now()
	r.poll.reset()
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.poll.run(pctx) }()
	defer func() { pcancel(); <-done }()

	cycle := time.Duration(float64(o.accessTTL) * 0.8)
	var injected time.Time
	if name == "base" {
		// At least one refresh cycle, so every connection refreshes once.
		d := max(o.settle, cycle)
		r.logf("phase base: no fault for %s", d)
		sleep(ctx, d)
	} else {
		target, n := r.waitWave(ctx, cycle+cycle/2)
		pr.InFlightAtFault = n
		switch name {
		case "a":
			in := r.fleet.inst[0]
			for _, x := range r.fleet.inst {
				if x.name == target {
					in = x
				}
			}
			pr.Target = in.name
			r.logf("phase a: kill -9 %s (%d refreshes in flight), restart in %s", in.name, n, o.down)
			injected = time.Now()
			in.proc.kill()
			sleep(ctx, o.down)
			if err := in.proc.start(); err != nil {
				return pr, err
			}
		case "b", "c":
			stream := streamName
			if name == "c" {
				stream = vaultStream
			}
			leader, err := r.streamLeader(ctx, stream)
			if err != nil {
				return pr, err
			}
			nd := r.nats.node(leader)
			if nd == nil {
				return pr, fmt.Errorf("leader %q of %s is not one of our nodes", leader, stream)
			}
			pr.Target = nd.name
			r.logf("phase %s: kill -9 %s (leader of %s; %d refreshes in flight on %s), restart in %s", name, nd.name, stream, n, target, o.down)
			injected = time.Now()
			nd.proc.kill()
			sleep(ctx, o.down)
			if err := nd.proc.start(); err != nil {
				return pr, err
			}
		case "d":
			pr.Target = "n1,n2,n3 (" + o.outageMode + ")"
			r.logf("phase d: all nats-server nodes down (%s) for %s; %d refreshes in flight", o.outageMode, o.outage, n)
			injected = time.Now()
			for _, nd := range r.nats.nodes {
				if o.outageMode == "stop" {
					_ = nd.proc.freeze()
				} else {
					nd.proc.kill()
				}
			}
			sleep(ctx, o.outage)
			for _, nd := range r.nats.nodes {
				if o.outageMode == "stop" {
					_ = nd.proc.thaw()
				} else if err := nd.proc.start(); err != nil {
					return pr, err
				}
			}
		}
		r.track.forget()
		at, v := r.waitHealthy(ctx, o.recoverTimeout)
		if at.IsZero() {
			pr.NotRecoveredWhy = v.why
			r.logf("phase %s: NOT recovered after %s: %s", name, o.recoverTimeout, v.why)
		} else {
			pr.Recovered, pr.RecoverSeconds = true, at.Sub(injected).Seconds()
			r.logf("phase %s: recovered %.1fs after the fault", name, pr.RecoverSeconds)
		}
		// Settle; a phase lasts at least one refresh cycle, so that its
		// per-cycle figures cover every connection.
		sleep(ctx, max(o.settle, cycle-time.Since(pr.start)))
	}
	pcancel()
	<-done
	pr.Poll = r.poll.reset()
	pr.end = time.Now()
	if pr.EndSeq, err = r.lastSeq(ctx); err != nil {
		return pr, err
	}
	if pr.stats1, err = r.sb.stats(ctx); err != nil {
		return pr, err
	}
	// Who is unauthenticated now, and which are new in this phase.
	v := r.look(ctx)
	if v.unauth == nil && name != "base" {
		// No instance answered the list: wait for one, bounded.
		_, v = r.waitHealthy(ctx, 30*time.Second)
	}
	pr.LostReasons, pr.ProviderReasons = map[string]int{}, map[string]int{}
	for id, reason := range v.unauth {
		if _, seen := lost[id]; seen {
			continue
		}
		lost[id] = reason
		if providerReasons[reason] {
			pr.ProviderUnauth++
			pr.ProviderReasons[reason]++
		} else {
			pr.Lost++
			pr.LostReasons[reason]++
			if pr.lostIDs == nil {
				pr.lostIDs = map[string]string{}
			}
			pr.lostIDs[id] = reason
		}
	}
	if pr.Name == "base" {
		pr.Recovered = true
	}
	r.logf("phase %s done: reuse %d, lost %d, unauthenticated by provider %d, 5xx %d",
		name, pr.stats1.RefreshTokenReuse-pr.stats0.RefreshTokenReuse, pr.Lost, pr.ProviderUnauth, pr.Poll.Server5xx)
	return pr, nil
}

// finish computes the derived figures and the violations.
// excuseKilledHolder moves from Lost to DiedWithKilled the connections of a
// phase that killed a tokenline instance which went rotated_tokens_lost
// because that very instance held their refresh lease when it died (the
// invariant covers faults that kill no tokenline process).
func (p *phaseReport) excuseKilledHolder() {
	if p.Name != "a" || p.Target == "" {
		return
	}
	for id, reason := range p.lostIDs {
		if reason == "rotated_tokens_lost" && p.Stream.DiedHolding[id] == p.Target {
			p.Lost--
			p.LostReasons[reason]--
			if p.LostReasons[reason] == 0 {
				delete(p.LostReasons, reason)
			}
			p.DiedWithKilled++
		}
	}
}

func (p *phaseReport) finish(conns int, ttl time.Duration) {
	p.Seconds = p.end.Sub(p.start).Seconds()
	p.StartAt, p.EndAt = p.start.UTC(), p.end.UTC()
	cycle := 0.8 * ttl.Seconds()
	p.Cycles = p.Seconds / cycle
	p.RefreshRequests = p.stats1.TokenRequests.RefreshToken - p.stats0.TokenRequests.RefreshToken
	if p.Cycles > 0 && conns > 0 {
		p.ReqPerConnPerCycle = float64(p.RefreshRequests) / float64(conns) / p.Cycles
	}
	if p.Stream.Succeeded > 0 {
		p.ReqPerRefresh = float64(p.RefreshRequests) / float64(p.Stream.Succeeded)
	}
	p.Reuse = p.stats1.RefreshTokenReuse - p.stats0.RefreshTokenReuse
	p.Grants, p.RefreshesPerGrant = p.stats1.spread(), p.stats1.RefreshesPerGrant
	p.TokenErrors = map[string]int64{}
	for k, v := range p.stats1.Errors {
		if d := v - p.stats0.Errors[k]; d > 0 {
			p.TokenErrors[k] = d
		}
	}
	check := func(bad bool, format string, a ...any) {
		if bad {
			p.Violations = append(p.Violations, fmt.Sprintf(format, a...))
		}
	}
	check(p.Reuse > 0, "%d refresh-token reuses at the provider", p.Reuse)
	check(p.Lost > 0, "%d connections lost (%s)", p.Lost, countsString(p.LostReasons))
	check(p.ProviderUnauth > 0, "%d connections unauthenticated by the provider's answer (%s) though the provider revoked nothing", p.ProviderUnauth, countsString(p.ProviderReasons))
	check(p.Stream.Gaps > 0, "%d stream sequences missing", p.Stream.Gaps)
	check(p.Stream.DuplicateIDs > 0, "%d duplicate event ids", p.Stream.DuplicateIDs)
	check(p.Stream.DoubleStarted > 0, "%d connections with two refresh.started and no outcome between", p.Stream.DoubleStarted)
	check(!p.Recovered, "not recovered: %s", p.NotRecoveredWhy)
	check(p.Poll.Server5xx > 0, "%d API answers with a 5xx (%s)", p.Poll.Server5xx, countsString64(p.Poll.Statuses5xx))
	check(p.Poll.Rollbacks > 0, "%d status answers older than one the same instance gave before", p.Poll.Rollbacks)
}

func countsString(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func countsString64(m map[string]int64) string {
	c := map[string]int{}
	for k, v := range m {
		c[k] = int(v)
	}
	return countsString(c)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// printReport prints one row per phase, then the violations.
func printReport(w io.Writer, rep *report) {
	fmt.Fprintf(w, "\ntokenline cluster scenario: %d connections, %d instances, access TTL %s, lease %s, sandbox %s; setup %s (%d failed, %d retried); stream last seq %d, %d events read\n\n",
		rep.Connections, rep.Instances, rep.AccessTTL, rep.RefreshLease, rep.Sandbox, rep.SetupTook, rep.SetupFailed, rep.SetupRetries, rep.StreamLast, rep.Scanned)
	fmt.Fprintf(w, "%-5s %-8s %6s %7s %7s %7s %6s %5s %5s %5s %6s %5s %5s %6s %8s %8s %8s %5s %6s %7s\n",
		"phase", "target", "secs", "req/c/c", "req/ref", "rot/g", "reuse", "lost", "died", "prov", "gaps", "dupid", "dblst", "lease", "recover", "p50", "p99", "5xx", "dead", "409exp")
	for _, p := range rep.Phases {
		rec := "-"
		if p.Name != "base" {
			rec = "never"
			if p.Recovered {
				rec = fmt.Sprintf("%.1fs", p.RecoverSeconds)
			}
		}
		target := p.Target
		if i := strings.IndexByte(target, ' '); i > 0 {
			target = target[:i]
		}
		fmt.Fprintf(w, "%-5s %-8s %6.0f %7.2f %7.2f %7s %6d %5d %5d %5d %6d %5d %5d %6d %8s %8s %8s %5d %6d %7d\n",
			p.Name, target, p.Seconds, p.ReqPerConnPerCycle, p.ReqPerRefresh, fmt.Sprintf("%d-%d", p.Grants.Min, p.Grants.Max), p.Reuse, p.Lost, p.DiedWithKilled, p.ProviderUnauth,
			p.Stream.Gaps, p.Stream.DuplicateIDs, p.Stream.DoubleStarted, p.Stream.LeaseExpired, rec,
			ms(p.Stream.LatencyP50), ms(p.Stream.LatencyP99), p.Poll.Server5xx, p.Poll.Unreachable, p.Poll.GateDetails["token_expired"])
	}
	var reqs int64
	var cycles float64
	for _, p := range rep.Phases {
		reqs += p.RefreshRequests
		cycles += p.Cycles
	}
	if cycles > 0 && rep.Connections > 0 {
		fmt.Fprintf(w, "all phases: %.2f refresh requests per connection per cycle (%d requests, %.1f cycles)\n",
			float64(reqs)/float64(rep.Connections)/cycles, reqs, cycles)
	}
	fmt.Fprintln(w)
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "%s (%s): %d refresh requests, %d started, %d succeeded, %d transient / %d terminal failures %v, %d outcomes without a start; token-endpoint errors %v; polled %d (ok %d, 409 %v, 5xx %v, other 4xx %d, dead instance %d, transport %d)\n",
			p.Name, p.Fault, p.RefreshRequests, p.Stream.Started, p.Stream.Succeeded, p.Stream.FailedTransient, p.Stream.FailedTerminal,
			p.Stream.TerminalCodes, p.Stream.Orphans, p.TokenErrors, p.Poll.Requests, p.Poll.OK, p.Poll.GateDetails, p.Poll.Statuses5xx,
			p.Poll.Other4xx, p.Poll.Unreachable, p.Poll.Transport)
	}
	fmt.Fprintln(w)
	if len(rep.Violations) == 0 {
		fmt.Fprintln(w, "every invariant held")
		return
	}
	fmt.Fprintf(w, "%d invariant violations:\n", len(rep.Violations))
	for _, v := range rep.Violations {
		fmt.Fprintln(w, "  -", v)
	}
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
}
