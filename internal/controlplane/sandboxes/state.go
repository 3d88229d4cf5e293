package sandboxes

import (
	"slices"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// State is a sandbox's state as the store records it (sandboxes.state).
type State string

// The states. Their strings are the store's CHECK constraint and the
// REST API's SandboxState.
const (
	Starting   State = "starting"
	Running    State = "running"
	Paused     State = "paused"
	Hibernated State = "hibernated"
	// Missing: its host stopped answering; the host monitor set it and a
	// heartbeat from the host resolves it.
	Missing State = "missing"
	Stopped State = "stopped"
	Error   State = "error"
)

// All is every state, in the order the API documents them.
var All = []State{Starting, Running, Paused, Hibernated, Missing, Stopped, Error}

// Live are the states in which the sandbox exists on its host.
var Live = []State{Running, Paused, Hibernated}

// Listed are the states a listing shows unless it asks for others.
var Listed = []State{Starting, Running, Paused, Hibernated, Missing, Error}

// Op is a lifecycle operation a caller asks for.
type Op string

// The operations whose allowed source states the table below holds.
const (
	OpPause      Op = "pause"
	OpHibernate  Op = "hibernate"
	OpResume     Op = "resume"
	OpFork       Op = "fork"
	OpSnapshot   Op = "snapshot"
	OpSetTimeout Op = "set the timeout of"
	OpSetNetwork Op = "set the network of"
	OpMetrics    Op = "read the metrics of"
	OpLogs       Op = "read the logs of"
	OpExec       Op = "run a process in"
)

// edge is where an operation may start and, for those that change state,
// where it ends.
type edge struct {
	from []State
	to   State // "": the operation leaves the state as it is
}

// table is the one definition of which operation may run in which state
// and what it leaves behind. Every writer of sandboxes.state (the
// service, the host monitor, heartbeats) moves rows only along these
// edges or the system edges below.
var table = map[Op]edge{
	OpPause:      {from: []State{Running}, to: Paused},
	OpHibernate:  {from: []State{Running, Paused}, to: Hibernated},
	OpResume:     {from: []State{Paused, Hibernated}, to: Running},
	OpFork:       {from: []State{Running, Paused}},
	OpSnapshot:   {from: []State{Running, Paused}},
	OpSetTimeout: {from: Live},
	OpSetNetwork: {from: Live},
	OpMetrics:    {from: Live},
	OpLogs:       {from: []State{Starting, Running, Paused, Hibernated, Error}},
	OpExec:       {from: []State{Running}},
}

// From is the states op may start in.
func From(op Op) []State { return slices.Clone(table[op].from) }

// To is the state op leaves the sandbox in ("" if it does not change it).
func To(op Op) State { return table[op].to }

// Allows reports whether op may run on a sandbox in state st.
func Allows(op Op, st State) bool { return slices.Contains(table[op].from, st) }

// Check is nil when op may run on sb, else the 409 failed_precondition
// that names what the state is and what it would need to be.
func Check(op Op, sb store.Sandbox) error {
	if Allows(op, State(sb.State)) {
		return nil
	}
	return WrongState(sb, op)
}

// WrongState is the 409 for op on sb in its current state.
func WrongState(sb store.Sandbox, op Op) error {
	names := make([]string, len(table[op].from))
	for i, st := range table[op].from {
		names[i] = string(st)
	}
	return errdefs.New(errdefs.ErrFailedPrecondition, "cannot %s sandbox %s: it is %s (needs %s)",
		op, sb.ID, sb.State, strings.Join(names, " or "))
}

// Strings converts states for the store's text[] parameters.
func Strings(sts []State) []string {
	out := make([]string, len(sts))
	for i, st := range sts {
		out[i] = string(st)
	}
	return out
}

// Parse reads a state name.
func Parse(s string) (State, bool) {
	st := State(s)
	return st, slices.Contains(All, st)
}

// FromAgent is the store state for what an agent reports a sandbox to be
// in. The agent's starting is running here: the control plane's starting
// is a create it has not heard the end of, and a sandbox the agent lists
// finished starting or is about to. Unknown values (a newer agent) are
// running, the state in which every operation checks again with the agent.
func FromAgent(st hostagentv1.SandboxState) State {
	switch st {
	case hostagentv1.SandboxState_SANDBOX_STATE_PAUSED:
		return Paused
	case hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED:
		return Hibernated
	case hostagentv1.SandboxState_SANDBOX_STATE_STOPPED:
		return Stopped
	case hostagentv1.SandboxState_SANDBOX_STATE_ERROR:
		return Error
	default:
		return Running
	}
}
