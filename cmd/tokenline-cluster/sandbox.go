package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tokenline/tokenline/adapters/sandbox"
)

// sandboxStats is what the scenario reads from GET /sandbox/admin/stats.
type sandboxStats struct {
	TokenRequests struct {
		AuthorizationCode int64 `json:"authorization_code"`
		RefreshToken      int64 `json:"refresh_token"`
		Other             int64 `json:"other"`
	} `json:"token_requests"`
	Successes         int64            `json:"successes"`
	Failures          int64            `json:"failures"`
	Errors            map[string]int64 `json:"errors"`
	Revocations       int64            `json:"revocations"`
	RefreshTokenReuse int64            `json:"refresh_token_reuse"`
	// RefreshesPerGrant maps a number of rotations to the live grants that
	// had exactly that many.
	RefreshesPerGrant map[string]int64 `json:"refreshes_per_grant"`
}

// grantSpread summarises RefreshesPerGrant: how many live grants, and the
// fewest and most rotations one of them has had.
type grantSpread struct {
	Grants int64 `json:"grants"`
	Min    int   `json:"min_rotations"`
	Max    int   `json:"max_rotations"`
}

func (st sandboxStats) spread() grantSpread {
	g := grantSpread{Min: -1}
	for k, n := range st.RefreshesPerGrant {
		var r int
		if _, err := fmt.Sscan(k, &r); err != nil || n <= 0 {
			continue
		}
		g.Grants += n
		if g.Min < 0 || r < g.Min {
			g.Min = r
		}
		g.Max = max(g.Max, r)
	}
	g.Min = max(g.Min, 0)
	return g
}

// sandboxRun is the shared OAuth provider every instance uses.
type sandboxRun struct {
	base       string // http://127.0.0.1:port
	adminToken string
	proc       *proc        // the separate process (mode "process")
	srv        *http.Server // the in-process server (mode "embedded")
}

func (s *sandboxRun) issuer() string { return s.base + "/sandbox" }

type sandboxConfig struct {
	mode         string // "process" or "embedded"
	bin          string // tokenline binary (process mode)
	root         string
	clientID     string
	clientSecret string
	redirectURI  string
	accessTTL    time.Duration
	refreshTTL   time.Duration
	// maxGrants and maxCodes raise the sandbox's caps (0: its defaults).
	maxGrants, maxCodes int
}

// startSandbox starts the provider: `tokenline sandbox` as its own process,
// or (mode embedded) the same sandbox package served from this process.
func startSandbox(ctx context.Context, sup *supervisor, cfg sandboxConfig) (*sandboxRun, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	run := &sandboxRun{base: "http://" + addr, adminToken: randomHex(24)}
	switch cfg.mode {
	case "embedded":
		sb, err := sandbox.New(sandbox.Config{
			ClientID: cfg.clientID, ClientSecret: cfg.clientSecret, RedirectURIs: []string{cfg.redirectURI},
			AccessTokenLifetime: cfg.accessTTL, RefreshTokenLifetime: cfg.refreshTTL, Consent: sandbox.ConsentApprove,
			AdminToken: run.adminToken, Logger: slog.New(slog.DiscardHandler), MaxGrants: cfg.maxGrants, MaxCodes: cfg.maxCodes,
		})
		if err != nil {
			return nil, err
		}
		sb.SetIssuer(run.base)
		mux := http.NewServeMux()
		mux.Handle("/sandbox/", sb.Handler())
		mux.Handle("/.well-known/oauth-authorization-server/sandbox", sb.MetadataHandler())
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		run.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = run.srv.Serve(l) }()
		return run, nil
	case "process":
		dir := filepath.Join(cfg.root, "sandbox")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		run.proc = sup.add(&proc{
			name: "sandbox", path: cfg.bin,
			args: []string{"sandbox", "--http", addr, "--client-id", cfg.clientID, "--redirect-uri", cfg.redirectURI,
				"--access-ttl", cfg.accessTTL.String(), "--refresh-ttl", cfg.refreshTTL.String(),
				"--consent", "approve", "--data-dir", dir,
				"--max-grants", fmt.Sprint(cmp.Or(cfg.maxGrants, sandbox.DefaultMaxGrants)),
				"--max-codes", fmt.Sprint(cmp.Or(cfg.maxCodes, sandbox.DefaultMaxCodes))},
			env:     []string{"TOKENLINE_SANDBOX_CLIENT_SECRET=" + cfg.clientSecret, "TOKENLINE_API_TOKEN=" + run.adminToken},
			logPath: filepath.Join(cfg.root, "logs", "sandbox.log"),
		})
		if err := run.proc.start(); err != nil {
			return nil, err
		}
		if err := run.proc.waitHTTP(ctx, run.base+"/sandbox/.well-known/oauth-authorization-server", 30*time.Second); err != nil {
			return nil, err
		}
		return run, nil
	}
	return nil, fmt.Errorf("--sandbox %q: want process or embedded", cfg.mode)
}

func (s *sandboxRun) close() {
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.srv.Shutdown(ctx)
		cancel()
	}
}

// stats reads the provider's counters.
func (s *sandboxRun) stats(ctx context.Context) (sandboxStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/sandbox/admin/stats", nil)
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return sandboxStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sandboxStats{}, fmt.Errorf("sandbox stats: status %d", resp.StatusCode)
	}
	var st sandboxStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("sandbox stats: %w", err)
	}
	return st, nil
}
