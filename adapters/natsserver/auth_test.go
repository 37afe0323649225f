package natsserver

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/tokenline/tokenline/events"
)

// The identity files are created once with mode 0600, hold user seeds, and
// are reused across restarts, so consumers' files stay valid.
func TestIdentityFilesCreatedOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	s := startTest(t, dir)
	read := func(name string) []byte {
		t.Helper()
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode = %o, want 600", name, perm)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := nkeys.FromSeed(bytes.TrimSpace(data))
		if err != nil {
			t.Fatalf("%s does not hold a seed: %v", name, err)
		}
		if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
			t.Errorf("%s: %s is not a user key", name, pub)
		}
		return data
	}
	own, reader := read(TokenlineSeedFile), read(ReaderSeedFile)
	if bytes.Equal(own, reader) {
		t.Fatal("tokenline and reader share a seed")
	}
	if s.TokenlineSeedPath() != filepath.Join(dir, TokenlineSeedFile) || s.ReaderSeedPath() != filepath.Join(dir, ReaderSeedFile) {
		t.Errorf("paths %s %s", s.TokenlineSeedPath(), s.ReaderSeedPath())
	}
	s.Shutdown()
	startTest(t, dir)
	if !bytes.Equal(read(TokenlineSeedFile), own) || !bytes.Equal(read(ReaderSeedFile), reader) {
		t.Error("a restart replaced the identity files")
	}
}

// An identity file that others may read, or that is not a seed, stops
// Start with an error that says how to fix it and never shows the content;
// the data dir is released.
func TestIdentityFileRefused(t *testing.T) {
	dir := t.TempDir()
	s := startTest(t, dir)
	s.Shutdown()
	path := filepath.Join(dir, ReaderSeedFile)
	seed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Start(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) || strings.Contains(err.Error(), strings.TrimSpace(string(seed))) {
		t.Fatalf("world-readable seed: err = %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	startTest(t, dir).Shutdown() // released and fixed

	for name, content := range map[string]string{
		"garbage":    "not a seed at all, SUAsecretish",
		"public key": "UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Start(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:0"})
		if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), strings.TrimSpace(content)) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(t.Context(), Config{DataDir: dir, Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
}

// Connect tells a seed file from a .creds file and refuses anything else
// without quoting it.
func TestConnectCredsFileKinds(t *testing.T) {
	s := startTest(t, t.TempDir())
	nc, err := Connect(t.Context(), s.ClientURL(), ConnectOptions{CredsFile: s.ReaderSeedPath()})
	if err != nil {
		t.Fatalf("reader seed: %v", err)
	}
	nc.Close()
	bad := filepath.Join(t.TempDir(), "bad.creds")
	if err := os.WriteFile(bad, []byte("hunter2-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Connect(t.Context(), s.ClientURL(), ConnectOptions{CredsFile: bad})
	if err == nil || !strings.Contains(err.Error(), "neither a .creds file nor a user nkey seed") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad creds: %v", err)
	}
	// A .creds file goes to nats.UserCredentials: this server has no
	// operator, so the JWT is refused, but by the server, not as a format error.
	jwtFile := filepath.Join(t.TempDir(), "user.creds")
	seed, _ := os.ReadFile(s.ReaderSeedPath())
	creds := "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n" + string(seed) + "------END USER NKEY SEED------\n"
	if err := os.WriteFile(jwtFile, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	if nc, err := Connect(t.Context(), s.ClientURL(), ConnectOptions{CredsFile: jwtFile}); err == nil {
		nc.Close()
		t.Error("a JWT was accepted by a server without an operator")
	} else if strings.Contains(err.Error(), "neither") {
		t.Errorf(".creds file not recognised: %v", err)
	}
}

func TestReaderPermissionsCoverTheEventSubjects(t *testing.T) {
	p := ReaderPermissions(DefaultStream)
	// Not tokenline.checkpoints, and no consumers on the checkpoint stream:
	// a push consumer delivering to it, or from it to tokenline.conn.>,
	// would have the reader write into those streams.
	if len(p.Subscribe.Allow) != 2 || p.Subscribe.Allow[0] != events.SubjectAll || p.Subscribe.Allow[1] != "_INBOX.>" {
		t.Errorf("reader subscribe allow = %v", p.Subscribe.Allow)
	}
	for _, subj := range p.Publish.Allow {
		if strings.Contains(subj, DefaultStream+"_CHECKPOINTS") && !strings.Contains(subj, ".INFO.") && !strings.Contains(subj, ".GET.") {
			t.Errorf("reader may publish to %s: more than reading the checkpoint stream", subj)
		}
	}
	for _, subj := range p.Publish.Allow {
		if !strings.Contains(subj, DefaultStream) && subj != "$JS.API.INFO" {
			t.Errorf("reader may publish to %s, which is not about stream %s", subj, DefaultStream)
		}
	}
	if strings.HasPrefix(InboxPrefix+".", "_INBOX.") {
		t.Errorf("tokenline's inbox prefix %s is inside the readers' _INBOX.>", InboxPrefix)
	}
}
