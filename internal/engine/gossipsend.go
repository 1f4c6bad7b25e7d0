package engine

import (
	"encoding/json"
	"sync"

	"github.com/kinactor/kinactor/internal/ownership"
)

// sendQueue carries out the ownership machine's direct sends (Send) off
// the coordinator's mailbox, one at a time per destination and in order:
// each send is a TCP connection of its own, and concurrent sends to one
// member arrive in any order (the machine drops a late heartbeat, but a
// late beat is then a lost one). Heartbeats queued for a destination while
// a send to it is under way merge into one message, the newest beat of
// each shard winning; other messages keep their place. One goroutine runs
// per destination with something to send, and ends when nothing is left.
//
// A failed send of a heartbeat is dropped: it is meant for one member (its
// successors and heir), and the next flush carries the news again. A
// failed send of a release falls back to a broadcast: it carries its
// application (Message.App), so members of other applications on the same
// seeds refuse it. Either way failed is called with the message type.
type sendQueue struct {
	direct    func(to string, payload []byte) error // Gossip.Send
	broadcast func(payload []byte)                  // Gossip.Broadcast
	sent      func(typ string, bytes int)           // payload bytes of a message sent
	failed    func(typ string)                      // a direct send failed

	mu      sync.Mutex
	pending map[string][]ownership.Message // destination → not yet sent; present while its goroutine runs
}

func newSendQueue(direct func(string, []byte) error, broadcast func([]byte), sent func(string, int), failed func(string)) *sendQueue {
	return &sendQueue{direct: direct, broadcast: broadcast, sent: sent, failed: failed, pending: map[string][]ownership.Message{}}
}

// send queues msg for to.
func (q *sendQueue) send(to string, msg ownership.Message) {
	q.mu.Lock()
	list, running := q.pending[to]
	if n := len(list); n > 0 && msg.Type == ownership.MsgHeartbeat && list[n-1].Type == ownership.MsgHeartbeat {
		list[n-1] = mergeBeats(list[n-1], msg)
	} else {
		list = append(list, msg)
	}
	q.pending[to] = list
	q.mu.Unlock()
	if !running {
		go q.drain(to)
	}
}

// drain sends what is queued for to, in order, until nothing is left.
func (q *sendQueue) drain(to string) {
	for {
		q.mu.Lock()
		list := q.pending[to]
		if len(list) == 0 {
			delete(q.pending, to)
			q.mu.Unlock()
			return
		}
		msg := list[0]
		list[0] = ownership.Message{}
		q.pending[to] = list[1:]
		q.mu.Unlock()
		q.deliver(to, msg)
	}
}

func (q *sendQueue) deliver(to string, msg ownership.Message) {
	b, err := json.Marshal(msg)
	if err != nil {
		return
	}
	q.sent(msg.Type, len(b))
	if err := q.direct(to, b); err != nil {
		q.failed(msg.Type)
		if msg.Type != ownership.MsgHeartbeat {
			q.broadcast(b)
		}
	}
}

// mergeBeats returns heartbeat a updated by the later heartbeat b: b's
// beat of a shard replaces a's, in a's order, then b's other shards.
func mergeBeats(a, b ownership.Message) ownership.Message {
	idx := make(map[string]int, len(a.Leases))
	out := a
	out.Leases = append([]ownership.Beat(nil), a.Leases...)
	for i, l := range out.Leases {
		idx[l.Shard] = i
	}
	for _, l := range b.Leases {
		if i, ok := idx[l.Shard]; ok {
			out.Leases[i] = l
			continue
		}
		idx[l.Shard] = len(out.Leases)
		out.Leases = append(out.Leases, l)
	}
	out.Draining = a.Draining || b.Draining
	out.At = b.At
	return out
}
