// Package memory holds in-memory implementations of every port of
// domain/ports.go, for the unit tests of the use cases (domain/lifecycle)
// and for anything else that wants the real semantics without NATS or an
// authorization server:
//
//   - EventStore (domain.EventStore): one global sequence, per-connection
//     optimistic concurrency, idempotent resend, the same event encoding as
//     adapters/jsstore; plus OnAppend hooks, failure injection, a hook to
//     let a racing writer in, and call counters.
//   - Vault (domain.TokenVault) and Attempts (domain.Attempts), with
//     failure injection.
//   - TokenEndpoint (domain.TokenEndpoint): a scriptable authorization
//     server with PKCE, refresh-token rotation and reuse detection,
//     revocation, scripted failures classified exactly as adapters/provider
//     classifies real ones, held requests and request counters.
//   - Clock (domain.Clock): a fake clock whose After channels fire when the
//     clock is moved past their deadline.
//
// Every type is safe for concurrent use. The contract suites of
// adapters/porttest run against these and against the production adapters,
// so the two agree on everything the ports document.
package memory
