// Package cluster is the face of kinactor's gossip membership: what a user
// sets to run nodes as one cluster (Config) and what a node reports of the
// members it sees (Member, its State and Meta). The membership itself
// (memberlist, events, messages) and the assignment of shards are internal.
//
// This package must not import the root package or anything internal.
package cluster

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config makes a node one of a cluster of nodes sharing a stream, by
// gossip (hashicorp/memberlist). The node's WorkerID is its gossip name; it
// must be unique per process (the default is). Zero timings take the
// defaults noted, which declare a killed node dead in about 1.2-1.4 s.
type Config struct {
	// BindAddr is the gossip "host:port" (TCP and UDP); port 0 picks one.
	BindAddr string
	// AdvertiseAddr, if set, is the "host:port" others reach this node at.
	AdvertiseAddr string
	// Join lists seed members' "host:port". Seeds are re-joined every
	// RejoinInterval, so that the halves of a healed partition merge.
	Join []string
	// SecretKey (16, 24 or 32 bytes) encrypts gossip; Label keeps
	// clusters on one network apart. Both optional.
	SecretKey []byte
	Label     string
	// Weight is this node's capacity relative to others (default 1).
	Weight int
	// HTTPAddr is advertised to other members (for status tools).
	HTTPAddr string
	// Failure detection and rejoin timings: ProbeInterval (250ms),
	// ProbeTimeout (125ms), SuspicionMult (3), RejoinInterval (5s).
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	RejoinInterval time.Duration
	// Transport replaces memberlist's network transport (tests: the mock
	// network, a traffic-dropping wrapper for partitions).
	Transport memberlist.NodeAwareTransport
	// EarlyDetection: members hold TCP connections to each other and
	// declare a member dead as soon as its connection ends and its gossip
	// port refuses connections (a killed process, in milliseconds rather
	// than gossip's 1.2-1.4 s). On by default with the network transport;
	// off with a custom Transport unless set (its addresses must then be
	// real TCP addresses).
	EarlyDetection *bool
}

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
	// Watch is the address others hold a TCP connection to, so that they
	// see this node's crash at once (early crash detection).
	Watch string `json:"x,omitempty"`
}

// Equal reports whether two metas are the same.
func (m Meta) Equal(o Meta) bool {
	return m.Weight == o.Weight && m.Draining == o.Draining && m.Version == o.Version && m.HTTP == o.HTTP &&
		m.App == o.App && slices.Equal(m.Unhealthy, o.Unhealthy) && slices.Equal(m.Refuse, o.Refuse) && m.Watch == o.Watch
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

// MarshalText writes the state as its word ("alive", ...).
func (s State) MarshalText() ([]byte, error) {
	if s < StateAlive || s > StateLeft {
		return nil, fmt.Errorf("cluster: invalid member state %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads a state's word; another word is an error naming it.
func (s *State) UnmarshalText(b []byte) error {
	for st := StateAlive; st <= StateLeft; st++ {
		if st.String() == string(b) {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("cluster: member state %q is none of alive, suspect, dead, left", b)
}

// Member is one node as gossip sees it.
type Member struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"` // gossip host:port
	State State  `json:"state"`
	Meta  Meta   `json:"meta"`
}
