package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/httpapi/client"
)

// instance is one `tokenline serve` process.
type instance struct {
	name    string
	dataDir string
	base    string // http://127.0.0.1:port
	proc    *proc
	api     *client.Client
}

// fleet is the tokenline instances and the front (the one public URL every
// instance is configured with; it forwards to a running instance).
type fleet struct {
	inst      []*instance
	publicURL string
	apiToken  string
	front     *http.Server
	next      atomic.Uint64
}

type fleetConfig struct {
	bin, root                string
	n                        int
	natsURL                  string
	issuer, clientID, secret string
	refreshLease, gateMargin time.Duration
	publicPort               int
	// natsListen (with natsURL empty) runs each instance on its embedded
	// NATS server, listening there (the scale run: one instance).
	natsListen string
	// logLevel is tokenline's --log-level (default warn).
	logLevel string
	// replicas is --replicas with natsURL (default 3).
	replicas int
	// defaults leaves --refresh-lease and --gate-expiry-margin at
	// tokenline's own defaults (the production configuration).
	defaults bool
}

// newFleet registers the instances with sup and starts the front; start the
// instances with startAll.
func newFleet(sup *supervisor, cfg fleetConfig) (*fleet, error) {
	ports, err := freePorts(cfg.n)
	if err != nil {
		return nil, err
	}
	f := &fleet{publicURL: fmt.Sprintf("http://127.0.0.1:%d", cfg.publicPort), apiToken: "tl_" + randomHex(32)}
	vaultKey := randomHex(32)
	for i := range cfg.n {
		name := fmt.Sprintf("t%d", i+1)
		dir := filepath.Join(cfg.root, "tokenline", name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		in := &instance{name: name, base: "http://" + addr}
		args := []string{"serve", "--http", addr, "--data-dir", dir, "--instance", name,
			"--provider", "custom", "--provider-name", "sandbox", "--issuer", cfg.issuer, "--client-id", cfg.clientID,
			"--public-url", f.publicURL, "--log-level", cmp.Or(cfg.logLevel, "warn")}
		if !cfg.defaults {
			args = append(args, "--refresh-lease", cfg.refreshLease.String(), "--gate-expiry-margin", cfg.gateMargin.String())
		}
		// Secrets travel in the environment, not in argv (ps shows argv).
		env := []string{"TOKENLINE_VAULT_KEY=" + vaultKey, "TOKENLINE_API_TOKEN=" + f.apiToken, "TOKENLINE_CLIENT_SECRET=" + cfg.secret}
		if cfg.natsURL != "" {
			args = append(args, "--replicas", fmt.Sprint(cmp.Or(cfg.replicas, 3)))
			env = append(env, "TOKENLINE_NATS_URL="+cfg.natsURL)
		} else {
			args = append(args, "--nats-listen", cfg.natsListen)
		}
		in.dataDir = dir
		in.proc = sup.add(&proc{name: name, path: cfg.bin, args: args, env: env,
			logPath: filepath.Join(cfg.root, "logs", name+".log")})
		// No retries: every request is one attempt, bounded at 10 s.
		in.api, err = client.New(in.base, f.apiToken, client.WithTimeout(10*time.Second))
		if err != nil {
			return nil, err
		}
		f.inst = append(f.inst, in)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.publicPort))
	if err != nil {
		return nil, fmt.Errorf("front: %w", err)
	}
	f.front = &http.Server{Handler: &httputil.ReverseProxy{
		// Rewrite adds no X-Forwarded-* header: the front is a plain
		// loopback load balancer.
		Rewrite: func(r *httputil.ProxyRequest) {
			in := f.pick()
			u, _ := url.Parse(in.base)
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "front: "+err.Error(), http.StatusBadGateway)
		},
	}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.front.Serve(l) }()
	return f, nil
}

// pick returns the next running instance, round robin (any one if none runs).
func (f *fleet) pick() *instance {
	for range len(f.inst) {
		in := f.inst[int(f.next.Add(1))%len(f.inst)]
		if in.proc.running() {
			return in
		}
	}
	return f.inst[0]
}

func (in *instance) readyURL() string { return in.base + "/readyz" }

// startAll starts the instances one after the other (the first creates the
// stream and buckets) and waits for each to be ready. An instance that
// exits while starting is started again, at most twice; each such exit is
// returned (with the last line of its log) to be reported.
func (f *fleet) startAll(ctx context.Context) ([]string, error) {
	var failures []string
	for _, in := range f.inst {
		for try := 1; ; try++ {
			if err := in.proc.start(); err != nil {
				return failures, err
			}
			err := in.proc.waitHTTP(ctx, in.readyURL(), 90*time.Second)
			if err == nil {
				break
			}
			if in.proc.running() || try == 3 || ctx.Err() != nil {
				return failures, err
			}
			failures = append(failures, fmt.Sprintf("%s exited while starting: %s", in.name, lastLine(in.proc.logPath)))
			time.Sleep(time.Second)
		}
	}
	return failures, nil
}

// lastLine returns the last non-empty line of a file (at most 300 bytes).
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	l := lines[len(lines)-1]
	if len(l) > 300 {
		l = l[:300]
	}
	return l
}

func (f *fleet) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = f.front.Shutdown(ctx)
}

// noRedirect is an HTTP client that never follows a redirect: the scenario
// follows the authorisation chain itself, hop by hop.
var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// authorise takes one connection through consent (the sandbox approves at
// once): POST authorize on in, GET the authorize URL at the sandbox, which
// redirects to <public URL>/oauth/callback; that hop goes to the front (the
// public URL), which hands it to any running instance.
func (f *fleet) authorise(ctx context.Context, in *instance, id string) error {
	authURL, err := in.api.Authorize(ctx, id)
	if err != nil {
		return err
	}
	loc, err := hop(ctx, authURL)
	if err != nil {
		return fmt.Errorf("authorize URL: %w", err)
	}
	if !strings.HasPrefix(loc, f.publicURL+"/oauth/callback?") {
		return fmt.Errorf("the sandbox redirected to %q, not to the callback", redactQuery(loc))
	}
	if strings.Contains(loc, "error=") {
		return fmt.Errorf("the sandbox refused: %s", redactQuery(loc))
	}
	back, err := hop(ctx, loc)
	if err != nil {
		return fmt.Errorf("callback: %w", err)
	}
	if !strings.Contains(back, "/ui/connections/"+id) || strings.Contains(back, "denied") {
		return fmt.Errorf("the callback sent the browser to %q", back)
	}
	return nil
}

// hop GETs u and returns the Location of its redirect.
func hop(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return "", fmt.Errorf("status %d, not a redirect", resp.StatusCode)
	}
	return resp.Header.Get("Location"), nil
}

// redactQuery drops a URL's query (codes and states are secrets).
func redactQuery(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// setupResult is what setting the connections up went through.
type setupResult struct {
	// IDs are the connections that were created and authorised.
	IDs []string
	// Failed counts connections that could not be created or authorised
	// after the retries; Retries counts requests that failed and were
	// retried; Errors holds the first few error messages.
	Failed  int
	Retries int
	Errors  []string
}

// setup creates n connections spread over the instances and authorises
// each (its callback through the front), with a few workers in parallel.
// A failed authorisation is retried on the same instance (at most 4 more
// times, 250 ms apart) and counted: a connection the API had just created
// must be found by the same instance.
func (f *fleet) setup(ctx context.Context, n int, progress func(done int)) setupResult {
	var (
		mu   sync.Mutex
		res  setupResult
		done int
	)
	note := func(err error, retry bool) {
		mu.Lock()
		defer mu.Unlock()
		if retry {
			res.Retries++
		}
		if len(res.Errors) < 5 {
			res.Errors = append(res.Errors, err.Error())
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				in := f.inst[i%len(f.inst)]
				st, err := in.api.CreateConnection(ctx, apitypes.CreateRequest{Provider: "sandbox",
					Scopes: []string{"users:read"}, Config: map[string]string{"scenario": fmt.Sprint(i)}})
				if err != nil {
					err = fmt.Errorf("create on %s: %w", in.name, err)
				}
				for try := 0; err == nil; try++ {
					err = f.authorise(ctx, in, st.ID)
					if err == nil {
						break
					}
					err = fmt.Errorf("authorise %s on %s (try %d): %w", st.ID, in.name, try+1, err)
					if try == 4 || ctx.Err() != nil {
						break
					}
					note(err, true)
					err = nil
					time.Sleep(250 * time.Millisecond)
				}
				mu.Lock()
				if err != nil {
					res.Failed++
				} else {
					res.IDs = append(res.IDs, st.ID)
				}
				done++
				d := done
				mu.Unlock()
				if err != nil {
					note(err, false)
				}
				if progress != nil && d%100 == 0 {
					progress(d)
				}
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	return res
}
