package natsserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func startTest(t *testing.T, dir string) *Server {
	t.Helper()
	s, err := Start(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connectTest(t *testing.T, s *Server) *nats.Conn {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestJetStreamSurvivesRestart(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "data") // Start must create it
	s := startTest(t, dir)

	if u := s.ClientURL(); !strings.HasPrefix(u, "nats://127.0.0.1:") || strings.HasSuffix(u, ":0") || strings.HasSuffix(u, ":4222") {
		t.Errorf("ClientURL = %q, want nats://127.0.0.1:<random port>", u)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("data dir mode = %o, want 700", perm)
	}

	nc := connectTest(t, s)
	if nc.Opts.Name != DefaultConnectionName {
		t.Errorf("connection name = %q, want %q", nc.Opts.Name, DefaultConnectionName)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "PERSIST",
		Subjects: []string{"persist.>"},
		Storage:  jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	ack, err := js.Publish(ctx, "persist.one", []byte("hello"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Errorf("JetStream store not under DataDir/jetstream: %v", err)
	}

	nc.Close()
	s.Shutdown()

	s2 := startTest(t, dir)
	js2, err := jetstream.New(connectTest(t, s2))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js2.Stream(ctx, "PERSIST")
	if err != nil {
		t.Fatalf("stream lost after restart: %v", err)
	}
	msg, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatalf("message lost after restart: %v", err)
	}
	if string(msg.Data) != "hello" || msg.Subject != "persist.one" {
		t.Errorf("got %q on %q, want \"hello\" on persist.one", msg.Data, msg.Subject)
	}
}

func TestSecondStartOnSameDirFails(t *testing.T) {
	dir := t.TempDir()
	s1 := startTest(t, dir)

	begin := time.Now()
	s2, err := Start(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err == nil {
		s2.Shutdown()
		t.Fatal("second Start on a data dir in use succeeded")
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("second Start took %s to fail, want immediate", d)
	}
	var inUse *DataDirInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("error %v (%T) is not a *DataDirInUseError", err, err)
	}
	want := fmt.Sprintf("data dir %s is in use by another tokenline (pid %d): lock %s", dir, os.Getpid(), filepath.Join(dir, "LOCK"))
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}

	// The first server is unharmed.
	nc := connectTest(t, s1)
	if err := nc.Flush(); err != nil {
		t.Errorf("first server broken by second Start: %v", err)
	}

	s1.Shutdown()
	s3 := startTest(t, dir)
	connectTest(t, s3)
}

// TestHelperHoldLock is not a test: TestLockHeldByOtherProcess runs the test
// binary again with TOKENLINE_TEST_HOLD_LOCK set to make it lock a directory
// from another process.
func TestHelperHoldLock(t *testing.T) {
	dir := os.Getenv("TOKENLINE_TEST_HOLD_LOCK")
	if dir == "" {
		t.Skip("helper process only")
	}
	if _, err := lockDataDir(dir); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // hold until killed
	os.Exit(0)
}

func TestLockHeldByOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), "TOKENLINE_TEST_HOLD_LOCK="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper: %q, %v", line, err)
	}

	_, err = Start(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:0"})
	var inUse *DataDirInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("Start on a dir locked by another process: err = %v, want *DataDirInUseError", err)
	}
	if inUse.PID != cmd.Process.Pid {
		t.Errorf("reported pid %d, want helper pid %d (error: %v)", inUse.PID, cmd.Process.Pid, err)
	}

	// The OS releases the lock when its holder dies.
	_ = stdin.Close()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	s := startTest(t, dir)
	connectTest(t, s)
}

func TestShutdownIsIdempotent(t *testing.T) {
	s := startTest(t, t.TempDir())
	nc := connectTest(t, s)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(s.Shutdown)
	}
	wg.Wait()
	s.Shutdown()
	if _, err := s.Connect(); err == nil {
		t.Error("Connect after Shutdown succeeded")
	}
	deadline := time.Now().Add(2 * time.Second)
	for nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if nc.IsConnected() {
		t.Error("client still connected after Shutdown")
	}
}

func TestTCPClientAndName(t *testing.T) {
	s := startTest(t, t.TempDir())
	if nc, err := nats.Connect(s.ClientURL()); err == nil {
		nc.Close()
		t.Fatalf("anonymous TCP connect to %s succeeded", s.ClientURL())
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("anonymous connect: %v, want an authorization violation", err)
	}
	nc, err := Connect(t.Context(), s.ClientURL(), ConnectOptions{CredsFile: s.TokenlineSeedPath()})
	if err != nil {
		t.Fatalf("TCP connect to %s with tokenline's seed: %v", s.ClientURL(), err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	named, err := s.Connect(nats.Name("worker-7"))
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	if named.Opts.Name != "worker-7" {
		t.Errorf("name = %q, want caller's worker-7", named.Opts.Name)
	}
	if named.Opts.InboxPrefix != InboxPrefix {
		t.Errorf("inbox prefix = %q, want %q", named.Opts.InboxPrefix, InboxPrefix)
	}
}

func TestStartErrors(t *testing.T) {
	ctx := t.Context()
	if _, err := Start(ctx, Config{}); err == nil || !strings.Contains(err.Error(), "DataDir is required") {
		t.Errorf("empty DataDir: err = %v", err)
	}
	for _, listen := range []string{"4222", "127.0.0.1:http2", "127.0.0.1:70000"} {
		if _, err := Start(ctx, Config{DataDir: t.TempDir(), Listen: listen}); err == nil || !strings.Contains(err.Error(), "listen address") {
			t.Errorf("Listen %q: err = %v, want a listen address error", listen, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Start(cancelled, Config{DataDir: t.TempDir()}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: err = %v", err)
	}
	if _, err := Start(ctx, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", ServerName: "has space"}); err == nil {
		t.Error("server name with a space accepted")
	}

	// A JetStream store that cannot be opened is reported at once, and the
	// data dir is released.
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "jetstream"), []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if _, err := Start(ctx, Config{DataDir: broken, Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "Can't start JetStream") {
		t.Errorf("broken store: err = %v", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("broken store took %s to fail", d)
	}
	if err := os.Remove(filepath.Join(broken, "jetstream")); err != nil {
		t.Fatal(err)
	}
	startTest(t, broken)
}

func TestPortInUseFailsFastAndReleasesLock(t *testing.T) {
	s1 := startTest(t, t.TempDir())
	port := s1.ClientURL()[strings.LastIndex(s1.ClientURL(), ":")+1:]

	dir := t.TempDir()
	begin := time.Now()
	s2, err := Start(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:" + port})
	if err == nil {
		s2.Shutdown()
		t.Fatal("Start on a port in use succeeded")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("err = %v, want the listen failure", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("took %s to fail", d)
	}
	// The failed Start released its data dir.
	startTest(t, dir)
}

func TestParseListenDefaults(t *testing.T) {
	for in, want := range map[string]string{
		"":              "127.0.0.1:4222",
		":5000":         "127.0.0.1:5000",
		"0.0.0.0:4333":  "0.0.0.0:4333",
		"[::1]:0":       "::1:0",
		"localhost:123": "localhost:123",
	} {
		h, p, err := parseListen(in)
		if err != nil || fmt.Sprintf("%s:%d", h, p) != want {
			t.Errorf("parseListen(%q) = %s, %d, %v; want %s", in, h, p, err, want)
		}
	}
}

// recordHandler collects slog records.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestLoggerReceivesServerNotices(t *testing.T) {
	h := &recordHandler{}
	s, err := Start(t.Context(), Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", ServerName: "logtest", Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	h.mu.Lock()
	defer h.mu.Unlock()
	var ready, notices bool
	for _, r := range h.records {
		if r.Level == slog.LevelInfo && r.Message == "embedded NATS server ready" {
			ready = true
		}
		if r.Level == slog.LevelDebug && strings.Contains(r.Message, "Server is ready") {
			notices = true
		}
		if r.Level < slog.LevelInfo || r.Level > slog.LevelInfo {
			continue
		}
		if r.Message != "embedded NATS server ready" {
			t.Errorf("unexpected info line %q: server notices must be debug", r.Message)
		}
	}
	if !ready || !notices {
		t.Errorf("ready line logged: %v, server notices logged at debug: %v (%d records)", ready, notices, len(h.records))
	}
}
