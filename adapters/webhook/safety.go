package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Safety is what the outbound client allows.
type Safety struct {
	// AllowHTTP accepts http:// URLs (--webhooks-allow-http, for loopback
	// development). Default: https only.
	AllowHTTP bool
	// AllowPrivate accepts targets whose address is loopback, private
	// (RFC 1918, fc00::/7), link-local, CGNAT, unspecified or multicast
	// (--webhooks-allow-private). Default: refused, checked on the address
	// actually dialled, so a name that resolves differently later (DNS
	// rebinding) is refused too.
	AllowPrivate bool
}

// ErrURL says a subscription URL is refused.
var ErrURL = errors.New("webhook: URL refused")

// CheckURL validates a subscription URL: absolute http(s) with a host, no
// user information (it would put a credential in the subscription's
// events), no fragment; https unless AllowHTTP; a literal IP address must
// be public unless AllowPrivate (names are checked when dialled).
func (s Safety) CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: %q is not an absolute URL", ErrURL, raw)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && s.AllowHTTP:
	case u.Scheme == "http":
		return fmt.Errorf("%w: only https URLs are accepted (start tokenline with --webhooks-allow-http for plain http in development)", ErrURL)
	default:
		return fmt.Errorf("%w: scheme %q (want https)", ErrURL, u.Scheme)
	}
	if u.User != nil {
		return fmt.Errorf("%w: user information in the URL is not accepted (receivers authenticate tokenline by the signature)", ErrURL)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%w: a URL fragment is not accepted", ErrURL)
	}
	if len(raw) > 2048 {
		return fmt.Errorf("%w: longer than 2048 bytes", ErrURL)
	}
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !s.AllowPrivate && !publicAddr(ip) {
		return fmt.Errorf("%w: %s is a private, loopback or otherwise non-public address (start tokenline with --webhooks-allow-private to allow it)", ErrURL, ip)
	}
	if strings.EqualFold(u.Hostname(), "localhost") && !s.AllowPrivate {
		return fmt.Errorf("%w: localhost is refused (start tokenline with --webhooks-allow-private to allow it)", ErrURL)
	}
	return nil
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// publicAddr reports whether ip is a global unicast address outside the
// private, loopback, link-local and CGNAT ranges.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsGlobalUnicast() && !ip.IsPrivate() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !cgnat.Contains(ip)
}

// errPrivateTarget is returned by the dialer for a refused address.
var errPrivateTarget = errors.New("webhook: target address is private or loopback (refused; --webhooks-allow-private allows it)")

// MaxAnswerHeaderBytes bounds the header of a receiver's answer (net/http
// would read up to 10 MiB per request in flight); a longer one fails the
// attempt. The answer's body is bounded by Config.MaxResponse.
const MaxAnswerHeaderBytes = 64 << 10

// Client returns the HTTP client of deliveries: timeout per attempt, no
// redirects followed (a 3xx is a failed attempt), no proxy from the
// environment, answer headers of at most MaxAnswerHeaderBytes, and unless
// AllowPrivate a dialer that refuses non-public addresses at connect time
// (after resolution).
func (s Safety) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !s.AllowPrivate {
		d.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !publicAddr(ap.Addr()) {
				return errPrivateTarget
			}
			return nil
		}
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		Proxy:               nil,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: timeout,
		// HTTP/2 answers are bounded by the same field (its
		// MaxHeaderListSize defaults to it).
		MaxResponseHeaderBytes: MaxAnswerHeaderBytes,
		// No ResponseHeaderTimeout: the client's Timeout bounds the whole
		// attempt (a second timer per request otherwise).
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// isPrivateDial reports whether err is the dialer's refusal.
func isPrivateDial(err error) bool { return errors.Is(err, errPrivateTarget) }
