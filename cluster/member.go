package cluster

import (
	"encoding/json"
	"fmt"
	"slices"
)

// MaxMetaSize is memberlist's limit on node meta.
const MaxMetaSize = 512

// Meta is what a node gossips about itself; assignment reads it.
type Meta struct {
	Weight   int    `json:"w,omitempty"` // capacity weight; ≤0 counts as 1
	Draining bool   `json:"d,omitempty"` // leaving: assign it nothing
	Version  string `json:"v,omitempty"` // kinactor version
	HTTP     string `json:"h,omitempty"` // the node's --http address, if any
	// App identifies the application (lease table and stream): members
	// of another application on the same seeds and label are ignored.
	App string `json:"a,omitempty"`
	// Unhealthy lists the services this node cannot use ("kinesis",
	// "dynamodb", "processor"): assign it nothing, unless every member
	// says the same.
	Unhealthy []string `json:"u,omitempty"`
	// Refuse lists shards this node cannot serve (they stalled here).
	Refuse []string `json:"r,omitempty"`
}

// Equal reports whether two metas are the same.
func (m Meta) Equal(o Meta) bool {
	return m.Weight == o.Weight && m.Draining == o.Draining && m.Version == o.Version && m.HTTP == o.HTTP &&
		m.App == o.App && slices.Equal(m.Unhealthy, o.Unhealthy) && slices.Equal(m.Refuse, o.Refuse)
}

// Encode returns the meta as gossiped, or an error if over MaxMetaSize.
func (m Meta) Encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("cluster: node meta is %d bytes, over memberlist's %d", len(b), MaxMetaSize)
	}
	return b, nil
}

// DecodeMeta parses gossiped meta; empty or malformed meta gives the zero
// Meta (weight 1, not draining) and the error.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, nil
	}
	err := json.Unmarshal(b, &m)
	return m, err
}

// State of a member as gossip sees it.
type State int

// Member states.
const (
	StateAlive State = iota
	StateSuspect
	StateDead
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Member is one node as gossip sees it.
type Member struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"` // gossip host:port
	State State  `json:"-"`
	Meta  Meta   `json:"meta"`
}

// MarshalJSON writes the state as a word.
func (m Member) MarshalJSON() ([]byte, error) {
	type plain Member
	return json.Marshal(struct {
		plain
		State string `json:"state"`
	}{plain(m), m.State.String()})
}

// EventKind says what happened to a member.
type EventKind int

// Event kinds.
const (
	MemberJoined    EventKind = iota + 1 // a new member is alive
	MemberUpdated                        // its meta changed
	MemberLeft                           // it left gracefully
	MemberDied                           // gossip declared it dead
	MessageReceived                      // a user message (Send or Broadcast) arrived
)

func (k EventKind) String() string {
	switch k {
	case MemberJoined:
		return "joined"
	case MemberUpdated:
		return "updated"
	case MemberLeft:
		return "left"
	case MemberDied:
		return "died"
	case MessageReceived:
		return "message"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one membership change or message. Events are delivered in the
// order memberlist reports them, from a goroutine of the Membership's own,
// never from inside memberlist's callbacks.
type Event struct {
	Kind    EventKind
	Member  Member // for member events; for messages, the sender when known
	Payload []byte // for MessageReceived
}

// Candidates turns live, non-draining members into assignment candidates.
func Candidates(ms []Member) []Candidate {
	var out []Candidate
	for _, m := range ms {
		if m.State == StateDead || m.State == StateLeft || m.Meta.Draining {
			continue
		}
		out = append(out, Candidate{Name: m.Name, Weight: m.Meta.Weight})
	}
	return out
}
