package natsserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestConnectExternal(t *testing.T) {
	s := startTest(t, t.TempDir())
	nc, err := Connect(t.Context(), s.ClientURL(), ConnectOptions{Name: "ext", CredsFile: s.TokenlineSeedPath(), InboxPrefix: InboxPrefix})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if nc.Opts.Name != "ext" || nc.Opts.MaxReconnect != -1 || nc.Opts.ReconnectWait != ReconnectWait || nc.Opts.InboxPrefix != InboxPrefix {
		t.Errorf("name %q, max reconnects %d, wait %s, inbox %q", nc.Opts.Name, nc.Opts.MaxReconnect, nc.Opts.ReconnectWait, nc.Opts.InboxPrefix)
	}
	nc2, err := Connect(t.Context(), s.ClientURL(), ConnectOptions{CredsFile: s.ReaderSeedPath()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	if nc2.Opts.Name != DefaultConnectionName {
		t.Errorf("default name = %q", nc2.Opts.Name)
	}
}

func TestConnectErrorsHideSecrets(t *testing.T) {
	ctx := t.Context()
	// A closed port: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	for _, u := range []string{
		"nats://alice:s3cretPassw0rd@" + addr,
		"nats://tokenTOKENtoken@" + addr,
		"nats://127.0.0.1:1,nats://bob:s3cretPassw0rd@" + addr,
	} {
		_, err := Connect(ctx, u, ConnectOptions{})
		if err == nil {
			t.Fatalf("Connect(%s) to a closed port succeeded", u)
		}
		msg := err.Error()
		t.Logf("error: %s", msg)
		if strings.Contains(msg, "s3cretPassw0rd") || strings.Contains(msg, "tokenTOKENtoken") {
			t.Errorf("error leaks a secret: %s", msg)
		}
		if !strings.Contains(msg, "redacted@") {
			t.Errorf("error does not show the redacted server: %s", msg)
		}
		if !errors.Is(err, nats.ErrNoServers) {
			t.Errorf("error %v does not unwrap to nats.ErrNoServers", err)
		}
	}

	if _, err := Connect(ctx, "", ConnectOptions{}); err == nil {
		t.Error("empty URL accepted")
	}
	if _, err := Connect(ctx, "nats://"+addr, ConnectOptions{TLSCert: "cert.pem"}); err == nil || !strings.Contains(err.Error(), "together") {
		t.Errorf("cert without key: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "user.creds")
	if _, err := Connect(ctx, "nats://"+addr, ConnectOptions{CredsFile: missing}); err == nil || !strings.Contains(err.Error(), "credentials file") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing creds file: %v", err)
	}
	if _, err := Connect(ctx, "nats://"+addr, ConnectOptions{TLSCA: missing}); err == nil || !strings.Contains(err.Error(), "TLS CA file") {
		t.Errorf("missing CA file: %v", err)
	}
}

// TestConnectMutualTLS runs a nats-server that requires a client certificate
// and connects to it with the certificate, the key and a private CA.
func TestConnectMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "test CA", true)
	srvCert, srvKey := newCert(t, ca, caKey, "server", false)
	cliCert, cliKey := newCert(t, ca, caKey, "client", false)
	caFile := writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw)
	cliFile := writePEM(t, dir, "client.pem", "CERTIFICATE", cliCert.Raw)
	cliKeyFile := writePEM(t, dir, "client-key.pem", "EC PRIVATE KEY", marshalKey(t, cliKey))

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey, Leaf: srvCert}},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
		},
		TLSVerify:  true,
		TLSTimeout: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("TLS server not ready")
	}
	u := "nats://" + ns.Addr().String()

	nc, err := Connect(t.Context(), u, ConnectOptions{TLSCert: cliFile, TLSKey: cliKeyFile, TLSCA: caFile})
	if err != nil {
		t.Fatalf("mutual TLS connect: %v", err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if st, err := nc.TLSConnectionState(); err != nil || !st.HandshakeComplete {
		t.Errorf("connection is not TLS: %v", err)
	}

	if nc2, err := Connect(t.Context(), u, ConnectOptions{TLSCA: caFile}); err == nil {
		nc2.Close()
		t.Error("connected without a client certificate to a server that requires one")
	}
}

func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage, tmpl.IPAddresses = nil, nil
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func marshalKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
