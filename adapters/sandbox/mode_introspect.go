package sandbox

import "net/http"

// RFC 7662 introspection (POST /sandbox/oauth/token/introspect, listed as
// introspection_endpoint in the metadata) is for the client itself: the
// caller authenticates with the client's credentials in HTTP Basic
// (client_secret_basic), which is how tokenline's probes call it. fosite
// would also accept any valid access token as a Bearer credential, which
// lets the holder of one token learn about others; the sandbox refuses
// that, as providers that restrict introspection to confidential clients
// do.
func requireClientCredentials(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="sandbox"`)
			writeJSONError(w, http.StatusUnauthorized, "invalid_client", "Introspection needs the client's credentials (HTTP Basic).")
			return
		}
		next(w, r)
	}
}
