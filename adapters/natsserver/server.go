package natsserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DefaultListen is the client listen address used when Config.Listen is
// empty: the standard NATS port on the IPv4 loopback interface only, so an
// embedded server is never reachable from the network unless asked for.
const DefaultListen = "127.0.0.1:4222"

// DefaultConnectionName is the NATS client name given to connections made by
// Server.Connect and Connect unless the caller names them. It shows up in the
// server's connection list (nats server report connections, /connz).
const DefaultConnectionName = "tokenline"

// LockFileName is the name of the lock file inside Config.DataDir.
const LockFileName = "LOCK"

// readyTimeout bounds how long Start waits for the server to accept clients.
// JetStream recovers its streams before it is ready, so a large store can
// take a few seconds; a server that is not up after this is reported broken.
const readyTimeout = 10 * time.Second

// Config describes an embedded NATS server.
type Config struct {
	// DataDir is the directory the server owns. It is created with mode 0700
	// if missing. The JetStream file store lives in DataDir/jetstream and the
	// lock that keeps a second server out in DataDir/LOCK. Required.
	DataDir string

	// Listen is the "host:port" address the server accepts TCP clients on.
	// Empty means DefaultListen ("127.0.0.1:4222"). An empty host (":4222")
	// also means 127.0.0.1, not every interface: to listen on the network
	// give the host explicitly, for example "0.0.0.0:4222". Port 0 picks a
	// random free port; Server.ClientURL reports the one actually bound.
	Listen string

	// ServerName is the NATS server name (shown in monitoring and in
	// JetStream cluster metadata). Optional; NATS uses the server's random
	// public key if empty. It may not contain spaces.
	ServerName string

	// Logger receives the server's own log lines. Optional: nil discards
	// them. Debug and trace logging of the server stay off; notices are
	// logged at slog.LevelDebug, warnings at slog.LevelWarn and errors at
	// slog.LevelError, each with the attribute component=nats-server. Start
	// itself logs one line at slog.LevelInfo once the server is ready.
	Logger *slog.Logger
}

// DataDirInUseError is returned by Start when another server, in this process
// or in another one, holds the lock on the data directory.
type DataDirInUseError struct {
	// DataDir is the absolute path of the data directory.
	DataDir string
	// LockFile is the path of the lock file held by the other server.
	LockFile string
	// PID is the process id recorded by the holder, or 0 if unknown.
	PID int
}

// Error reports the directory, the holder's pid and the lock file, e.g.
// "data dir /x is in use by another tokenline (pid 1234): lock /x/LOCK".
func (e *DataDirInUseError) Error() string {
	pid := "pid unknown"
	if e.PID > 0 {
		pid = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data dir %s is in use by another tokenline (%s): lock %s", e.DataDir, pid, e.LockFile)
}

// Server is a running embedded NATS server with JetStream. It is safe for
// concurrent use. Stop it with Shutdown.
type Server struct {
	ns      *server.Server
	lock    *dirLock
	url     string
	dataDir string

	once sync.Once
}

// Start launches an embedded nats-server with JetStream enabled and its file
// store under cfg.DataDir/jetstream, and waits until it accepts clients.
//
// Start first locks the data directory; if another server holds it, Start
// fails immediately with a *DataDirInUseError. It then waits at most ten
// seconds (less if ctx ends sooner) for the server to become ready. A server
// that reports a fatal error while starting, such as a listen port already in
// use, is stopped and its message returned. On any error nothing keeps
// running and the lock is released.
//
// ctx bounds only the start-up; cancelling it later does not stop the
// server.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsserver: start: %w", err)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("natsserver: start: Config.DataDir is required")
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("natsserver: data dir %q: %w", cfg.DataDir, err)
	}
	host, port, err := parseListen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("natsserver: create data dir: %w", err)
	}
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return nil, err
	}

	users, err := identities(dataDir, DefaultStream)
	if err != nil {
		lock.release()
		return nil, err
	}

	port = cmp.Or(port, server.RANDOM_PORT) // nats-server reads 0 as "default port"
	opts := &server.Options{
		Nkeys:                  users, // no anonymous clients
		ServerName:             cfg.ServerName,
		Host:                   host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               dataDir, // nats-server appends "jetstream"
		NoSigs:                 true,    // the host process owns signal handling
		DisableJetStreamBanner: true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("natsserver: configure nats-server: %w", err)
	}
	logs := newLogAdapter(cfg.Logger)
	ns.SetLoggerV2(logs, false, false, false)
	ns.Start()

	if err := waitReady(ctx, ns, logs.fatal); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		lock.release()
		return nil, err
	}

	s := &Server{ns: ns, lock: lock, dataDir: dataDir}
	s.url = clientURL(ns, host)
	logs.log.Info("embedded NATS server ready", "url", s.url, "data_dir", dataDir, "server_name", ns.Name(),
		"reader_nkey_file", s.ReaderSeedPath())
	return s, nil
}

// waitReady polls the server until it is ready, reports a fatal error, ctx
// ends or readyTimeout passes.
func waitReady(ctx context.Context, ns *server.Server, fatal <-chan string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return fmt.Errorf("natsserver: nats-server failed to start: %s", msg)
		case <-ctx.Done():
			return fmt.Errorf("natsserver: waiting for nats-server to start: %w", ctx.Err())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsserver: nats-server not ready for connections after %s", readyTimeout)
		}
	}
}

// parseListen splits Config.Listen, applying the loopback default.
func parseListen(listen string) (host string, port int, err error) {
	listen = cmp.Or(listen, DefaultListen)
	h, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("natsserver: listen address %q: want host:port: %w", listen, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("natsserver: listen address %q: invalid port %q", listen, p)
	}
	return cmp.Or(h, "127.0.0.1"), port, nil
}

// clientURL builds the URL of the bound listener. An unspecified listen host
// (0.0.0.0 or ::) is replaced by the matching loopback address, which is
// what a local client should dial.
func clientURL(ns *server.Server, host string) string {
	if tcp, ok := ns.Addr().(*net.TCPAddr); ok {
		ip := tcp.IP
		switch {
		case ip.Equal(net.IPv4zero):
			ip = net.IPv4(127, 0, 0, 1)
		case ip.Equal(net.IPv6unspecified):
			ip = net.IPv6loopback
		}
		return (&url.URL{Scheme: "nats", Host: net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))}).String()
	}
	return ns.ClientURL()
}

// ClientURL returns the URL of the TCP listener actually bound, for example
// "nats://127.0.0.1:41234". Give it to tools such as the nats CLI; code in
// this process should use Connect instead.
func (s *Server) ClientURL() string { return s.url }

// DataDir returns the absolute path of the server's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// TokenlineSeedPath is the file holding tokenline's own nkey seed
// (DataDir/nats-tokenline.nk): every right on this server. Give it to
// administrators' tools, never to consumers.
func (s *Server) TokenlineSeedPath() string { return filepath.Join(s.dataDir, TokenlineSeedFile) }

// ReaderSeedPath is the file holding the reader identity's nkey seed
// (DataDir/nats-reader.nk), for downstream consumers: see ReaderPermissions.
func (s *Server) ReaderSeedPath() string { return filepath.Join(s.dataDir, ReaderSeedFile) }

// Connect returns a client connection to the server, authenticated as
// tokenline (TokenlineSeedPath) and with reply subjects under InboxPrefix.
// The connection goes through an in-process pipe, not TCP, and is named
// DefaultConnectionName unless opts contain nats.Name. opts are applied
// after the defaults and may override any of them. Connect fails once the
// server has been shut down.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	if !s.ns.Running() {
		return nil, errors.New("natsserver: connect: server is shut down")
	}
	auth, err := nats.NkeyOptionFromSeed(s.TokenlineSeedPath())
	if err != nil {
		return nil, fmt.Errorf("natsserver: connect to embedded server: identity file %s: %w", s.TokenlineSeedPath(), err)
	}
	all := append([]nats.Option{
		nats.Name(DefaultConnectionName),
		nats.InProcessServer(s.ns),
		auth,
		nats.CustomInboxPrefix(InboxPrefix),
	}, opts...)
	nc, err := nats.Connect(s.url, all...)
	if err != nil {
		return nil, fmt.Errorf("natsserver: connect to embedded server: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server, waits until it has stopped (JetStream has
// flushed its store and every client was disconnected) and then releases the
// data directory lock, so that a new Start on the same directory succeeds.
// It is safe to call more than once and from several goroutines; later calls
// return once the first has finished.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.lock.release()
	})
}

// logAdapter routes nats-server log calls into a slog.Logger and reports
// fatal errors to Start.
type logAdapter struct {
	log   *slog.Logger
	fatal chan string
}

func newLogAdapter(l *slog.Logger) *logAdapter {
	l = cmp.Or(l, slog.New(slog.DiscardHandler))
	return &logAdapter{log: l.With("component", "nats-server"), fatal: make(chan string, 1)}
}

func (a *logAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }

// Fatalf logs at error level and hands the first fatal message to Start; it
// never exits the process (the stock nats-server logger would).
func (a *logAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	a.log.Error(msg, "fatal", true)
	select {
	case a.fatal <- msg:
	default:
	}
}

// lockPath is the lock file of a data directory.
func lockPath(dataDir string) string { return filepath.Join(dataDir, LockFileName) }
