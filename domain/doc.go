// Package domain is the centre of tokenline: the connection aggregate, its four
// states, the closed set of reasons for being unauthenticated, the event
// vocabulary, the commands that produce events and the pure function that
// rebuilds state from events.
//
// The package does no I/O and imports no other tokenline package. Adapters
// (the JetStream event store, the token vault, the OAuth client) implement the
// interfaces declared in ports.go; projections read the events.
//
// The life of a connection is an explicit finite-state machine built with
// github.com/looplab/fsm. Transitions (in transitions.go) is the single source
// of truth for which event may follow which state. Commands are decided against
// the current state (Decide) and yield exactly one event each; state is
// rebuilt from events by Apply, which never fires side effects, so replaying a
// history is always safe.
package domain
