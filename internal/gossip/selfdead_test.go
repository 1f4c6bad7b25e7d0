package gossip

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestSelfDeathAccuser(t *testing.T) {
	for _, tc := range []struct {
		line    string
		accuser string
		ok      bool
	}{
		{"memberlist: Refuting a dead message (from: b)", "b", true},
		{"memberlist: Refuting a dead message (from: a)", "", true},
		{"memberlist: Refuting a suspect message (from: a)", "", false}, // a state exchange holding us suspect (or dead)
		{"memberlist: Refuting a suspect message (from: b)", "", false}, // a prober's suspicion
		{"memberlist: Refuting an alive message for 'a' (127.0.0.1:1) meta:([] VS [])", "", false},
		{"memberlist: Marking b as failed, suspect timeout reached (0 peer confirmations)", "", false},
	} {
		accuser, ok := selfDeathAccuser(tc.line, "a")
		if ok != tc.ok || accuser != tc.accuser {
			t.Errorf("%q: (%q, %v), want (%q, %v)", tc.line, accuser, ok, tc.accuser, tc.ok)
		}
	}
}

// A dead message about us reaching memberlist (with an incarnation it
// must refute) is learnt at once through memberlist's log line: the line
// the hook reads is the one memberlist v0.7.0 prints.
func TestSelfDeclaredDeadFromADeadMessage(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0"})
	// memberlist's dead message: type 5, then msgpack of
	// {Incarnation, Node, From}.
	pkt := []byte{5, 0x83}
	pkt = append(pkt, 0xab)
	pkt = append(pkt, "Incarnation"...)
	pkt = append(pkt, 0xce, 0, 0x10, 0, 0) // 1<<20: above ours
	pkt = append(pkt, 0xa4)
	pkt = append(pkt, "Node"...)
	pkt = append(pkt, 0xa1, 'a')
	pkt = append(pkt, 0xa4)
	pkt = append(pkt, "From"...)
	pkt = append(pkt, 0xa1, 'x')
	conn, err := net.Dial("udp", a.m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "a learns it was declared dead", func() bool { return selfDeaths(a) > 0 })
	e, _, _ := a.log.find(func(e Event) bool { return e.Kind == SelfDeclaredDead })
	if e.Accuser != "x" || e.Member.Name != "a" {
		t.Fatalf("event %+v, want a declared dead by x", e)
	}
	if !sees(a.m, "a") {
		t.Fatal("a dropped itself")
	}
}

// loopbackTransport is memberlist's network transport on 127.0.0.1 (a
// free port) behind a DropTransport.
func loopbackTransport(t *testing.T) *DropTransport {
	t.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	return NewDropTransport(nt)
}

func selfDeaths(n *node) int {
	n.log.mu.Lock()
	defer n.log.mu.Unlock()
	k := 0
	for _, e := range n.log.events {
		if e.Kind == SelfDeclaredDead {
			k++
		}
	}
	return k
}

// A node cut off long enough that the others declare it dead learns it as
// soon as the partition heals (the rejoin's state exchange tells it).
func TestSelfDeclaredDeadAfterPartition(t *testing.T) {
	var ns []*node
	for i, name := range []string{"a", "b", "c"} {
		cfg := Config{Name: name, Transport: loopbackTransport(t), RejoinInterval: 300 * time.Millisecond}
		if i > 0 {
			cfg.Seeds = []string{ns[0].m.Addr()}
		}
		ns = append(ns, start(t, cfg))
	}
	a, b, c := ns[0], ns[1], ns[2]
	for _, n := range ns {
		eventually(t, 5*time.Second, n.m.Name()+" sees a,b,c", func() bool { return sees(n.m, "a", "b", "c") })
	}
	a.tr.Block(b.m.Addr(), c.m.Addr())
	b.tr.Block(a.m.Addr())
	c.tr.Block(a.m.Addr())
	for _, n := range []*node{b, c} {
		eventually(t, 8*time.Second, n.m.Name()+" declares a dead", func() bool { return n.log.has(MemberDied, "a") })
	}
	eventually(t, 8*time.Second, "a declares b and c dead", func() bool { return sees(a.m, "a") })
	if k := selfDeaths(a); k != 0 {
		t.Fatalf("a got %d SelfDeclaredDead while nothing reached it", k)
	}
	t0 := time.Now()
	for _, n := range ns {
		n.tr.UnblockAll()
	}
	eventually(t, 8*time.Second, "a learns it was declared dead", func() bool { return selfDeaths(a) > 0 })
	e, _, _ := a.log.find(func(e Event) bool { return e.Kind == SelfDeclaredDead })
	t.Logf("a learnt its death %v after the heal (accuser %q); self-deaths a=%d b=%d c=%d",
		time.Since(t0), e.Accuser, a.m.SelfDeclaredDeaths(), b.m.SelfDeclaredDeaths(), c.m.SelfDeclaredDeaths())
	if e.Member.Name != "a" {
		t.Fatalf("SelfDeclaredDead names %q, want a", e.Member.Name)
	}
	for _, n := range ns {
		eventually(t, 8*time.Second, n.m.Name()+" sees all 3 after the heal", func() bool { return sees(n.m, "a", "b", "c") })
	}
}

// muteTransport lets packets in but none out, and fails dials and incoming
// streams while muted: a node the others cannot hear (its acks are lost)
// though it hears them, as a one-way partition or a process whose sends
// stall.
type muteTransport struct {
	memberlist.NodeAwareTransport
	muted   atomic.Bool
	streams chan net.Conn
	done    chan struct{}
}

func newMuteTransport(t *testing.T) *muteTransport {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	mt := &muteTransport{NodeAwareTransport: nt, streams: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			select {
			case <-mt.done:
				return
			case c := <-nt.StreamCh():
				if mt.muted.Load() {
					c.Close()
					continue
				}
				select {
				case mt.streams <- c:
				case <-mt.done:
					c.Close()
					return
				}
			}
		}
	}()
	return mt
}

func (mt *muteTransport) StreamCh() <-chan net.Conn { return mt.streams }

func (mt *muteTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return mt.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (mt *muteTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if mt.muted.Load() {
		return time.Now(), nil
	}
	return mt.NodeAwareTransport.WriteToAddress(b, addr)
}

func (mt *muteTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return mt.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (mt *muteTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if mt.muted.Load() {
		return nil, errors.New("muted")
	}
	return mt.NodeAwareTransport.DialAddressTimeout(addr, timeout)
}

func (mt *muteTransport) Shutdown() error {
	select {
	case <-mt.done:
	default:
		close(mt.done)
	}
	return mt.NodeAwareTransport.Shutdown()
}

// A node that the others cannot hear (though it hears them) is declared
// dead; memberlist on it refutes the suspicion and then drops the dead
// message as stale, saying nothing. It learns its death as soon as it is
// heard again: the members that declared it dead tell it.
func TestSelfDeclaredDeadWhileUnheard(t *testing.T) {
	mt := newMuteTransport(t)
	a := start(t, Config{Name: "a", Transport: mt})
	seeds := []string{a.m.Addr()}
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Seeds: seeds, RejoinInterval: 300 * time.Millisecond})
	c := start(t, Config{Name: "c", BindAddr: "127.0.0.1:0", Seeds: seeds, RejoinInterval: 300 * time.Millisecond})
	for _, n := range []*node{a, b, c} {
		eventually(t, 5*time.Second, n.m.Name()+" sees a,b,c", func() bool { return sees(n.m, "a", "b", "c") })
	}
	mt.muted.Store(true)
	eventually(t, 8*time.Second, "b and c declare a dead", func() bool {
		return b.log.has(MemberDied, "a") && c.log.has(MemberDied, "a")
	})
	t0 := time.Now()
	mt.muted.Store(false)
	eventually(t, 5*time.Second, "a learns it was declared dead", func() bool { return selfDeaths(a) > 0 })
	e, _, _ := a.log.find(func(e Event) bool { return e.Kind == SelfDeclaredDead })
	if e.Accuser != "b" && e.Accuser != "c" {
		t.Fatalf("accuser %q, want b or c", e.Accuser)
	}
	t.Logf("a learnt its death from %s %v after it was heard again (%d events)", e.Accuser, time.Since(t0), a.m.SelfDeclaredDeaths())
	for _, n := range []*node{b, c} {
		eventually(t, 8*time.Second, n.m.Name()+" sees a again", func() bool { return sees(n.m, "a", "b", "c") })
	}
}
