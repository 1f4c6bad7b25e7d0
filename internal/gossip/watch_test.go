package gossip

import (
	"fmt"
	"io"
	"log"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor/cluster"
)

// watchConns counts the watch connections a node holds.
func watchConns(n *node) int {
	n.m.watch.mu.Lock()
	defer n.m.watch.mu.Unlock()
	return len(n.m.watch.conns)
}

// setConfirm replaces a node's confirming dial.
func setConfirm(n *node, f func(addr string, timeout time.Duration) (bool, error)) {
	n.m.watch.mu.Lock()
	n.m.watch.confirm = f
	n.m.watch.mu.Unlock()
}

// eventIndex is the index of the first event matching after index from,
// or -1.
func (l *eventLog) index(from int, f func(Event) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := max(from, 0); i < len(l.events); i++ {
		if f(l.events[i]) {
			return i
		}
	}
	return -1
}

func is(kind EventKind, member string) func(Event) bool {
	return func(e Event) bool { return e.Kind == kind && e.Member.Name == member }
}

// A member declared dead early because its gossip port refused the
// confirming dial, while memberlist still has it alive (a firewall that
// REJECTs, a listener briefly gone), comes back as soon as it is heard
// alive, and Send to it works meanwhile; a member that really died still
// goes for good.
func TestFalseEarlyDeathIsRestored(t *testing.T) {
	var self atomic.Pointer[Membership]
	sendErr := make(chan error, 1)
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", Watch: true, OnEvent: func(e Event) {
		if e.Kind == MemberDied && e.Member.Name == "b" {
			// what the ownership machine does: a progress beat to it
			err := self.Load().Send("b", []byte("beat"))
			select {
			case sendErr <- err:
			default:
			}
		}
	}})
	self.Store(a.m)
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Watch: true, Seeds: []string{a.m.Addr()}})
	c := start(t, Config{Name: "c", BindAddr: "127.0.0.1:0", Watch: true, Seeds: []string{a.m.Addr()}})
	for _, n := range []*node{a, b, c} {
		eventually(t, 5*time.Second, n.m.Name()+" sees a,b,c", func() bool { return sees(n.m, "a", "b", "c") })
	}
	eventually(t, 5*time.Second, "a watches b and c", func() bool { return watchConns(a) == 2 })

	// b's gossip port refuses a's confirming dials (b itself is fine).
	var refusals atomic.Int64
	setConfirm(a, func(addr string, timeout time.Duration) (bool, error) {
		if addr == b.m.Addr() {
			refusals.Add(1)
			return true, nil
		}
		return dialRefused(addr, timeout)
	})
	a.m.ResetWatchConns()
	eventually(t, 3*time.Second, "a declares b dead early", func() bool { return a.log.has(MemberDied, "b") })
	died := a.log.index(0, is(MemberDied, "b"))
	if got := a.m.EarlyDeaths(); got != 1 {
		t.Fatalf("a's early deaths = %d, want 1 (b only: c's port answers)", got)
	}
	if err := <-sendErr; err != nil {
		t.Errorf("Send to b right after its early death: %v (memberlist still has it alive)", err)
	} else {
		eventually(t, 3*time.Second, "b gets a's beat", func() bool {
			_, _, ok := b.log.find(func(e Event) bool {
				return e.Kind == MessageReceived && e.Member.Name == "a" && string(e.Payload) == "beat"
			})
			return ok
		})
	}
	t0 := time.Now()
	eventually(t, 5*time.Second, "b back in a's table with a MemberJoined", func() bool {
		return a.log.index(died+1, is(MemberJoined, "b")) >= 0 && sees(a.m, "a", "b", "c")
	})
	t.Logf("b restored %v after its early death was seen (refused confirmations: %d)", time.Since(t0), refusals.Load())
	if err := a.m.Send("b", []byte("beat 2")); err != nil {
		t.Fatalf("Send to b after its return: %v", err)
	}
	eventually(t, 3*time.Second, "b learns that a declared it dead", func() bool {
		_, _, ok := b.log.find(func(e Event) bool { return e.Kind == SelfDeclaredDead && e.Accuser == "a" })
		return ok
	})
	if b.m.EarlyDeaths() != 0 || c.m.EarlyDeaths() != 0 {
		t.Fatalf("early deaths b=%d c=%d, want 0: a is alive", b.m.EarlyDeaths(), c.m.EarlyDeaths())
	}

	// A real crash still goes for good.
	eventually(t, 5*time.Second, "a watches b and c again", func() bool { return watchConns(a) == 2 })
	_ = c.m.Shutdown()
	eventually(t, 5*time.Second, "a sees c die", func() bool { return a.log.has(MemberDied, "c") })
	gone := a.log.index(0, is(MemberDied, "c"))
	// past memberlist's own verdict (≈1.2-1.4 s) and then some
	never(t, 3*time.Second, "a brought the crashed c back", func() bool {
		_, ok := a.m.member("c")
		return ok || a.log.index(gone+1, is(MemberJoined, "c")) >= 0
	})
	if err := a.m.Send("c", []byte("x")); err == nil {
		t.Fatal("Send to the crashed c: want an error")
	}
	if n := earlyDeadLen(a.m); n != 0 || a.m.EarlyRestores() != 1 {
		t.Fatalf("a: %d members still early-dead, %d restored; want 0 and 1 (b)", n, a.m.EarlyRestores())
	}
}

func earlyDeadLen(m *Membership) int {
	m.memMu.Lock()
	defer m.memMu.Unlock()
	return len(m.earlyDead)
}

// The early-dead set is bounded in size and in time: beyond maxEarlyDead
// the oldest return to the table, and an entry whose lifetime ends while
// memberlist has not reported it gone returns too (memberlist holds it
// alive), each with a MemberJoined.
func TestEarlyDeadSetIsBounded(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0"})
	if got := a.m.earlyDeadLifetime(3); got != 10500*time.Millisecond {
		t.Errorf("lifetime for 3 members = %v, want 10.5s (2 × (3 + 6×3) × 250ms)", got)
	}
	// Fake members at an address that answers no ping.
	names := make([]string, maxEarlyDead+3)
	a.m.memMu.Lock()
	for i := range names {
		names[i] = fmt.Sprintf("x%03d", i)
		a.m.members[names[i]] = cluster.Member{Name: names[i], Addr: "127.0.0.1:1", State: cluster.StateAlive}
	}
	a.m.memMu.Unlock()
	for _, n := range names {
		if _, ok := a.m.declareEarlyDead(n); !ok {
			t.Fatalf("declareEarlyDead(%s): not a member", n)
		}
	}
	if got := earlyDeadLen(a.m); got != maxEarlyDead {
		t.Fatalf("early-dead set holds %d, want %d", got, maxEarlyDead)
	}
	for _, n := range names[:3] { // the oldest
		if _, ok := a.m.member(n); !ok {
			t.Fatalf("%s, pushed out of the full set, is not back in the table", n)
		}
		eventually(t, 2*time.Second, n+"'s MemberJoined", func() bool { return a.log.index(0, is(MemberJoined, n)) >= 0 })
	}
	// The lifetime of one entry ends.
	last := names[len(names)-1]
	a.m.memMu.Lock()
	e := a.m.earlyDead[last]
	e.until = time.Now()
	a.m.earlyDead[last] = e
	a.m.memMu.Unlock()
	eventually(t, 3*time.Second, last+" back at the end of its lifetime", func() bool {
		_, ok := a.m.member(last)
		return ok && a.log.index(0, is(MemberJoined, last)) >= 0
	})
	if got := earlyDeadLen(a.m); got != maxEarlyDead-1 {
		t.Fatalf("early-dead set holds %d, want %d", got, maxEarlyDead-1)
	}
}

// A DropTransport's ResetWatchConns (the chaos refuse fault's hook) resets
// the early-detection connections of the Membership that uses it; they
// are dialed again.
func TestDropTransportResetsWatchConns(t *testing.T) {
	tr := func() *DropTransport {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0,
			Logger: log.New(io.Discard, "", 0)})
		if err != nil {
			t.Fatal(err)
		}
		return NewDropTransport(nt)
	}
	a := start(t, Config{Name: "a", Transport: tr(), Watch: true, WatchHost: "127.0.0.1"})
	b := start(t, Config{Name: "b", Transport: tr(), Watch: true, WatchHost: "127.0.0.1", Seeds: []string{a.m.Addr()}})
	eventually(t, 5*time.Second, "a and b watch each other", func() bool { return watchConns(a) == 1 && watchConns(b) == 1 })
	b.tr.ResetWatchConns()
	eventually(t, 5*time.Second, "the watch connection dialed again", func() bool {
		return watchConns(a) == 1 && watchConns(b) == 1 && a.m.watch.redials() > 0
	})
}
