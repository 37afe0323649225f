// Package httpapi is tokenline's HTTP surface: the /v1 API, the OAuth
// callback, the embedded web UI, health, readiness and Prometheus metrics,
// and (when configured) the sandbox provider mounted at /sandbox/.
//
// The package declares the interfaces it needs (ConnectionService,
// StatusReader, AuditReader, Readiness in ports.go); cmd/tokenline wires the
// concrete types. docs/openapi.yaml describes the API.
//
// # Routes
//
//	POST   /v1/connections                     create → 201 status (unauthenticated, never_authorised)
//	GET    /v1/connections                     list statuses (deleted ones left out)
//	GET    /v1/connections/{id}                status
//	PATCH  /v1/connections/{id}                replace config and/or scopes; state and tokens untouched
//	DELETE /v1/connections/{id}                delete → 204 (tokens revoked best effort; history kept)
//	POST   /v1/connections/{id}/authorize      start (re)authorisation → {"authorize_url"}
//	GET    /v1/connections/{id}/token          200 {"access_token","token_type","expires_at"} or 409 gate closed
//	POST   /v1/connections/{id}/rejections     report a 401/403 from the provider's API → status
//	GET    /v1/connections/{id}/events         CloudEvents (JSON array, or ?format=jsonl); ?type= ?since= ?until=
//	GET    /v1/connections/{id}/state?at=      state at an instant + the events that led there
//	GET    /v1/events/timeline?from=&to=       incident timeline: state transitions and counts (window ≤ 7 days)
//	POST   /v1/ui/login-links                  a one-time web UI login link (API token only)
//	GET    /oauth/callback                     OAuth redirect URI (no bearer; the one-time state protects it)
//	GET    /healthz                            200 while the process serves
//	GET    /readyz                             200, or 503 with reasons
//	GET    /metrics                            Prometheus text format (API token unless Config.MetricsPublic)
//	GET    /                                   → /ui/
//	GET    /ui/                                connections page (without a session: the login page)
//	GET    /ui/connections/{id}                connection page with its audit timeline (likewise)
//	GET    /ui/login?code=                     trade a login link's code for a session cookie
//	POST   /ui/logout                          end the session
//	GET    /ui/static/...                      CSS and JavaScript
//	       /sandbox/...                        the sandbox provider, when mounted
//
// Every /v1 request needs "Authorization: Bearer <API token>", compared in
// constant time, or (a same-origin fetch of the web UI) a session cookie;
// without either the answer is 401. Errors are JSON
// {"error": word, "message": text}: malformed JSON, unknown fields, bodies
// over 64 KiB, ids that are not UUIDs and wrong methods get 4xx and change
// nothing. Domain errors map as ErrNotFound 404, ErrInvalidCommand 400,
// ErrInvalidTransition and ErrConflict 409, ErrDeleted 410.
//
// Tokens, state values, authorisation codes and secrets are never logged or
// echoed: the access log records method, route, path, status and duration,
// never a query string (the callback's carries state and code), body or
// header. Token answers carry Cache-Control: no-store.
//
// See ui.go and session.go for how the web UI authenticates (one-time login
// links and a session cookie; the pages never carry the API token).
package httpapi
