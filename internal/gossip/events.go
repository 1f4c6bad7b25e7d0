package gossip

import (
	"fmt"

	"github.com/kinactor/kinactor/cluster"
)

// EventKind says what happened to a member.
type EventKind int

// Event kinds.
const (
	MemberJoined    EventKind = iota + 1 // a new member is alive
	MemberUpdated                        // its meta changed
	MemberLeft                           // it left gracefully
	MemberDied                           // gossip declared it dead
	MessageReceived                      // a user message (Send or Broadcast) arrived

	// SelfDeclaredDead: another member declared this node dead while it
	// is alive (selfdead.go). The others may already have acted on our
	// death (taken our shards). Member is this node, Accuser the member
	// that declared us dead when known. One episode may bring several.
	SelfDeclaredDead
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
	case SelfDeclaredDead:
		return "self-declared-dead"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one membership change or message. Events are delivered in the
// order memberlist reports them, from a goroutine of the Membership's own,
// never from inside memberlist's callbacks.
type Event struct {
	Kind    EventKind
	Member  cluster.Member // for member events; for messages, the sender when known
	Payload []byte         // for MessageReceived
	Accuser string         // for SelfDeclaredDead: who declared us dead ("" when unknown)
}
