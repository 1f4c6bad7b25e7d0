package engine

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/internal/ownership"
)

// sendGossip records sends and broadcasts; a send blocks while gate is
// held, and fails for the members in down.
type sendGossip struct {
	mu         sync.Mutex
	gate       sync.RWMutex
	down       map[string]bool
	sent       map[string][]ownership.Message
	broadcasts []ownership.Message
	inFlight   map[string]int
	maxFlight  int
	entered    chan struct{} // a send began
	done       chan struct{} // a send or broadcast ended
}

func newSendGossip() *sendGossip {
	return &sendGossip{down: map[string]bool{}, sent: map[string][]ownership.Message{}, inFlight: map[string]int{}, entered: make(chan struct{}, 100), done: make(chan struct{}, 100)}
}

func (g *sendGossip) Members() []cluster.Member     { return nil }
func (g *sendGossip) UpdateMeta(cluster.Meta) error { return nil }

func (g *sendGossip) Send(to string, b []byte) error {
	defer func() { g.done <- struct{}{} }()
	g.mu.Lock()
	g.inFlight[to]++
	g.maxFlight = max(g.maxFlight, g.inFlight[to])
	g.mu.Unlock()
	g.entered <- struct{}{}
	g.gate.RLock()
	g.gate.RUnlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight[to]--
	if g.down[to] {
		return errors.New("connection refused")
	}
	var m ownership.Message
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	g.sent[to] = append(g.sent[to], m)
	return nil
}

func (g *sendGossip) Broadcast(b []byte) {
	defer func() { g.done <- struct{}{} }()
	var m ownership.Message
	_ = json.Unmarshal(b, &m)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.broadcasts = append(g.broadcasts, m)
}

// wait waits for n sends or broadcasts to end.
func (g *sendGossip) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.done:
		case <-time.After(10 * time.Second):
			t.Fatal("a send did not happen")
		}
	}
}

func hb(beats ...ownership.Beat) ownership.Message {
	return ownership.Message{App: "app", Type: ownership.MsgHeartbeat, Leases: beats}
}

// Heartbeats to one member go one at a time, in order; those queued while
// one is under way merge, the newest beat of each shard winning. Before,
// each flush was a goroutine and a connection of its own, and beats to
// one member overtook each other.
func TestSendQueueKeepsTheOrderPerDestination(t *testing.T) {
	g := newSendGossip()
	var failed []string
	var fmu sync.Mutex
	q := newSendQueue(g.Send, g.Broadcast, func(string, int) {}, func(typ string) { fmu.Lock(); failed = append(failed, typ); fmu.Unlock() })
	g.gate.Lock() // the first send hangs
	q.send("b", hb(ownership.Beat{Shard: "s1", Counter: 1, Seq: "100"}))
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first send did not begin")
	}
	q.send("b", hb(ownership.Beat{Shard: "s1", Counter: 1, Seq: "200"}, ownership.Beat{Shard: "s2", Counter: 4, Seq: "7"}))
	q.send("b", hb(ownership.Beat{Shard: "s1", Counter: 1, Seq: "300"}))
	q.send("b", ownership.Message{App: "app", Type: ownership.MsgReleased, Shard: "s3", Counter: 9})
	q.send("b", hb(ownership.Beat{Shard: "s2", Counter: 5, Seq: "8"}))
	g.gate.Unlock()
	g.wait(t, 4)
	g.mu.Lock()
	defer g.mu.Unlock()
	got := g.sent["b"]
	want := []ownership.Message{
		hb(ownership.Beat{Shard: "s1", Counter: 1, Seq: "100"}),
		hb(ownership.Beat{Shard: "s1", Counter: 1, Seq: "300"}, ownership.Beat{Shard: "s2", Counter: 4, Seq: "7"}),
		{App: "app", Type: ownership.MsgReleased, Shard: "s3", Counter: 9},
		hb(ownership.Beat{Shard: "s2", Counter: 5, Seq: "8"}),
	}
	if len(got) != len(want) {
		t.Fatalf("sent %+v, want %+v", got, want)
	}
	for i := range want {
		a, _ := json.Marshal(got[i])
		b, _ := json.Marshal(want[i])
		if string(a) != string(b) {
			t.Errorf("message %d: %s, want %s", i, a, b)
		}
	}
	if g.maxFlight != 1 {
		t.Errorf("%d sends to one member at once, want 1", g.maxFlight)
	}
	if len(failed) > 0 || len(g.broadcasts) > 0 {
		t.Errorf("failures %v, broadcasts %v", failed, g.broadcasts)
	}
}

// A heartbeat whose direct send fails is dropped and counted, never
// broadcast (it is meant for one member); a release falls back to a
// broadcast (it carries its application: strangers refuse it).
func TestFailedSendsHeartbeatDroppedReleaseBroadcast(t *testing.T) {
	g := newSendGossip()
	g.down["b"] = true
	var failed []string
	var fmu sync.Mutex
	q := newSendQueue(g.Send, g.Broadcast, func(string, int) {}, func(typ string) { fmu.Lock(); failed = append(failed, typ); fmu.Unlock() })
	q.send("b", hb(ownership.Beat{Shard: "s1", Counter: 1, Seq: "100"}))
	q.send("b", ownership.Message{App: "app", Type: ownership.MsgReleased, Shard: "s1", Counter: 2})
	q.send("c", hb(ownership.Beat{Shard: "s2", Counter: 1, Seq: "100"}))
	g.wait(t, 4) // three sends and one broadcast
	g.mu.Lock()
	defer g.mu.Unlock()
	fmu.Lock()
	defer fmu.Unlock()
	if len(failed) != 2 || failed[0] != ownership.MsgHeartbeat || failed[1] != ownership.MsgReleased {
		t.Fatalf("failures counted %v, want hb then released", failed)
	}
	if len(g.broadcasts) != 1 || g.broadcasts[0].Type != ownership.MsgReleased || g.broadcasts[0].App != "app" {
		t.Fatalf("broadcasts %+v, want only the release, with its application", g.broadcasts)
	}
}

// The coordinator counts the gossip messages the machine refuses, and
// those it cannot decode, in kinactor_gossip_refused_total{reason}.
func TestCoordinatorCountsRefusedMessages(t *testing.T) {
	e := startShell(t, 1, funcProps(), nil, true)
	e.waitRunning(t, 1, 10*time.Second)
	msg := func(from string, m ownership.Message) MembershipChanged {
		b, _ := json.Marshal(m)
		return MembershipChanged{Event: gossip.Event{Kind: gossip.MessageReceived, Member: cluster.Member{Name: from}, Payload: b}}
	}
	rel := ownership.Message{App: "app", Type: ownership.MsgReleased, Shard: "shardId-000000000000", Counter: 500}
	other := rel
	other.App = "another-app"
	e.sys.Root.Send(e.coord, msg("a-stranger", rel))
	e.sys.Root.Send(e.coord, msg("a-stranger", other))
	e.sys.Root.Send(e.coord, msg("a-stranger", other))
	e.sys.Root.Send(e.coord, MembershipChanged{Event: gossip.Event{Kind: gossip.MessageReceived, Member: cluster.Member{Name: "x"}, Payload: []byte("{not json")}})
	e.status(t) // the mailbox is in order: the messages were handled
	m := e.deps.Metrics.GossipRefused
	for reason, want := range map[string]float64{ownership.RefusedStranger: 1, ownership.RefusedApp: 2, ownership.RefusedMalformed: 1} {
		if got := testutil.ToFloat64(m.WithLabelValues(reason)); got != want {
			t.Errorf("refused{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if l, err := e.store.Get(context.Background(), "shardId-000000000000"); err != nil || l.Owner != "me" {
		t.Fatalf("row %+v (%v): the refused release changed something", l, err)
	}
}
