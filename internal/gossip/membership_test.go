package gossip

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor/cluster"
)

// testLogger discards memberlist's lines unless KINACTOR_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("KINACTOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// eventLog records a member's events for polling.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	at     []time.Time
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	l.at = append(l.at, time.Now())
}

// find returns the first event matching, and when it arrived.
func (l *eventLog) find(f func(Event) bool) (Event, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.events {
		if f(e) {
			return e, l.at[i], true
		}
	}
	return Event{}, time.Time{}, false
}

func (l *eventLog) has(kind EventKind, member string) bool {
	_, _, ok := l.find(func(e Event) bool { return e.Kind == kind && e.Member.Name == member })
	return ok
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// never checks that cond stays false for the whole window.
func never(t *testing.T, window time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("unexpected: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type node struct {
	m   *Membership
	log *eventLog
	tr  *DropTransport
}

func start(t *testing.T, cfg Config) *node {
	t.Helper()
	n := &node{log: &eventLog{}}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	prev := cfg.OnEvent
	cfg.OnEvent = func(e Event) {
		n.log.add(e)
		if prev != nil {
			prev(e)
		}
	}
	if dt, ok := cfg.Transport.(*DropTransport); ok {
		n.tr = dt
	}
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	n.m = m
	return n
}

// aliveNames lists the names of the members a node sees alive.
func aliveNames(m *Membership) []string {
	var out []string
	for _, mem := range m.Members() {
		if mem.State == cluster.StateAlive {
			out = append(out, mem.Name)
		}
	}
	sort.Strings(out)
	return out
}

func sees(m *Membership, names ...string) bool {
	sort.Strings(names)
	return strings.Join(aliveNames(m), ",") == strings.Join(names, ",")
}

func memberByName(m *Membership, name string) (cluster.Member, bool) {
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem, true
		}
	}
	return cluster.Member{}, false
}

func TestRealClusterJoinMetaMessagesLeaveCrash(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", Meta: cluster.Meta{Weight: 2, HTTP: "127.0.0.1:8001"}})
	if strings.HasSuffix(a.m.Addr(), ":0") {
		t.Fatalf("Addr() = %s, want the picked port", a.m.Addr())
	}
	seeds := []string{a.m.Addr()}
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Seeds: seeds, Meta: cluster.Meta{Weight: 1, HTTP: "127.0.0.1:8002"}})
	c := start(t, Config{Name: "c", BindAddr: "127.0.0.1:0", Seeds: seeds, Meta: cluster.Meta{Weight: 3, HTTP: "127.0.0.1:8003"}})
	all := []*node{a, b, c}
	for _, n := range all {
		eventually(t, 5*time.Second, n.m.Name()+" sees a,b,c alive", func() bool { return sees(n.m, "a", "b", "c") })
	}

	// Meta is visible to the others.
	mem, _ := memberByName(c.m, "a")
	if mem.Meta.Weight != 2 || mem.Meta.HTTP != "127.0.0.1:8001" || mem.Addr != a.m.Addr() {
		t.Fatalf("c sees a as %+v", mem)
	}
	if !a.log.has(MemberJoined, "b") || !a.log.has(MemberJoined, "c") {
		t.Fatalf("a lacks join events: %+v", a.log.events)
	}

	// UpdateMeta reaches the others as MemberUpdated.
	if err := b.m.UpdateMeta(cluster.Meta{Weight: 1, HTTP: "127.0.0.1:8002", Draining: true}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, c} {
		eventually(t, 3*time.Second, n.m.Name()+" gets b's draining update", func() bool {
			_, _, ok := n.log.find(func(e Event) bool {
				return e.Kind == MemberUpdated && e.Member.Name == "b" && e.Member.Meta.Draining
			})
			mem, _ := memberByName(n.m, "b")
			return ok && mem.Meta.Draining
		})
	}
	live := 0
	for _, m := range a.m.Members() {
		if !m.Meta.Draining {
			live++
		}
	}
	if live != 2 {
		t.Fatalf("members not draining: %d, want 2 (b drains)", live)
	}

	// Send reaches one member.
	if err := a.m.Send("c", []byte("hello c")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "c receives a's message", func() bool {
		_, _, ok := c.log.find(func(e Event) bool {
			return e.Kind == MessageReceived && e.Member.Name == "a" && string(e.Payload) == "hello c"
		})
		return ok
	})
	if err := a.m.Send("nobody", []byte("x")); err == nil {
		t.Fatal("Send to an unknown member: want an error")
	}

	// Broadcast reaches all others.
	if err := c.m.Broadcast([]byte("to all")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b} {
		eventually(t, 3*time.Second, n.m.Name()+" receives the broadcast", func() bool {
			_, _, ok := n.log.find(func(e Event) bool {
				return e.Kind == MessageReceived && e.Member.Name == "c" && string(e.Payload) == "to all"
			})
			return ok
		})
	}

	// b stops draining (a node says it drains only on its way out: a
	// leave is told from a death by it).
	if err := b.m.UpdateMeta(cluster.Meta{Weight: 1, HTTP: "127.0.0.1:8002"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, c} {
		eventually(t, 3*time.Second, n.m.Name()+" sees b no longer draining", func() bool {
			mem, _ := memberByName(n.m, "b")
			return !mem.Meta.Draining
		})
	}

	// Crash: Shutdown without leave; both survivors see MemberDied (each
	// gets the other's confirmation of the suspicion, so the suspicion
	// timeout is the minimum, 3×250ms).
	t1 := time.Now()
	if err := b.m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, c} {
		eventually(t, 6*time.Second, n.m.Name()+" sees b die", func() bool { return n.log.has(MemberDied, "b") })
		_, at, _ := n.log.find(func(e Event) bool { return e.Kind == MemberDied && e.Member.Name == "b" })
		t.Logf("death of b detected by %s %v after Shutdown", n.m.Name(), at.Sub(t1))
		if d := at.Sub(t1); d > 3*time.Second {
			t.Errorf("death detection took %v, want about 1.2-1.5s", d)
		}
	}
	if err := b.m.Leave(time.Second); err != nil { // Leave after Shutdown: no panic
		t.Fatal(err)
	}
	if err := b.m.Shutdown(); err != nil { // idempotent
		t.Fatal(err)
	}

	// Graceful leave: the survivor sees MemberLeft quickly.
	t0 := time.Now()
	if err := c.m.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	leaveReturned := time.Since(t0)
	if err := c.m.Leave(time.Second); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := c.m.Shutdown(); err != nil { // and safe after Leave
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "a sees c leave", func() bool { return a.log.has(MemberLeft, "c") || a.log.has(MemberDied, "c") })
	_, at, _ := a.log.find(func(e Event) bool { return e.Kind == MemberLeft && e.Member.Name == "c" })
	t.Logf("leave of c seen by a after %v (Leave returned after %v)", at.Sub(t0), leaveReturned)
	if a.log.has(MemberDied, "c") {
		t.Fatal("a reported c dead, not left")
	}
	eventually(t, time.Second, "a alone", func() bool { return sees(a.m, "a") })
}

func TestSecretKey(t *testing.T) {
	if _, err := Start(Config{Name: "x", BindAddr: "127.0.0.1:0", SecretKey: make([]byte, 10), Logger: testLogger()}); err == nil ||
		!strings.Contains(err.Error(), "10 bytes") {
		t.Fatalf("10-byte key: err = %v, want one naming the length", err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{8}, 32)
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", SecretKey: key})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", SecretKey: key, Seeds: []string{a.m.Addr()}})
	eventually(t, 5*time.Second, "a and b joined", func() bool { return sees(a.m, "a", "b") && sees(b.m, "a", "b") })
	c := start(t, Config{Name: "c", BindAddr: "127.0.0.1:0", SecretKey: other, Seeds: []string{a.m.Addr()}, RejoinInterval: 300 * time.Millisecond})
	never(t, 1500*time.Millisecond, "a member with another key joined", func() bool {
		return len(c.m.Members()) != 1 || len(a.m.Members()) != 2
	})
}

func TestLabelKeepsClustersApart(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", Label: "blue"})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Label: "green", Seeds: []string{a.m.Addr()}, RejoinInterval: 300 * time.Millisecond})
	_ = start(t, Config{Name: "c", BindAddr: "127.0.0.1:0", Label: "blue", Seeds: []string{a.m.Addr()}})
	eventually(t, 5*time.Second, "a and c (same label) joined", func() bool { return sees(a.m, "a", "c") })
	never(t, 1500*time.Millisecond, "clusters with different labels merged", func() bool {
		return len(b.m.Members()) != 1 || len(a.m.Members()) != 2
	})
}

// mockCluster starts members on a MockNetwork, each behind a DropTransport
// and named like its transport. All transports are made before any member
// starts (MockNetwork is not safe for concurrent NewTransport). Seeds are
// the members at seedIdx.
func mockCluster(t *testing.T, names []string, seedIdx []int, tweak func(*Config)) []*node {
	t.Helper()
	var network memberlist.MockNetwork
	trs := make([]*DropTransport, len(names))
	addrs := make([]string, len(names))
	for i, name := range names {
		mt := network.NewTransport(name)
		ip, port, err := mt.FinalAdvertiseAddr("", 0)
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = net.JoinHostPort(ip.String(), strconv.Itoa(port))
		trs[i] = NewDropTransport(mt)
	}
	var seeds []string
	for _, i := range seedIdx {
		seeds = append(seeds, addrs[i])
	}
	nodes := make([]*node, len(names))
	for i, name := range names {
		cfg := Config{Name: name, Seeds: seeds, Transport: trs[i]}
		if tweak != nil {
			tweak(&cfg)
		}
		nodes[i] = start(t, cfg)
		if nodes[i].m.Addr() != addrs[i] {
			t.Fatalf("%s: Addr() = %s, want %s", name, nodes[i].m.Addr(), addrs[i])
		}
	}
	return nodes
}

func TestPartitionAndHeal(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	ns := mockCluster(t, names, []int{0, 2}, func(c *Config) { c.RejoinInterval = 500 * time.Millisecond })
	for _, n := range ns {
		eventually(t, 5*time.Second, n.m.Name()+" sees all 4", func() bool { return sees(n.m, names...) })
	}
	left, right := ns[:2], ns[2:]
	addrsOf := func(side []*node) []string {
		var out []string
		for _, n := range side {
			out = append(out, n.m.Addr())
		}
		return out
	}
	t0 := time.Now()
	for _, n := range left {
		n.tr.Block(addrsOf(right)...)
	}
	for _, n := range right {
		n.tr.Block(addrsOf(left)...)
	}
	check := func(side, other []*node) {
		for _, n := range side {
			for _, o := range other {
				eventually(t, 8*time.Second, n.m.Name()+" sees "+o.m.Name()+" die", func() bool {
					return n.log.has(MemberDied, o.m.Name())
				})
			}
		}
	}
	check(left, right)
	check(right, left)
	t.Logf("partition: both sides saw the other die after %v", time.Since(t0))
	eventually(t, 2*time.Second, "each side sees only itself", func() bool {
		return sees(ns[0].m, "a", "b") && sees(ns[1].m, "a", "b") && sees(ns[2].m, "c", "d") && sees(ns[3].m, "c", "d")
	})

	t1 := time.Now()
	for _, n := range ns {
		n.tr.UnblockAll()
	}
	for _, n := range ns {
		eventually(t, 8*time.Second, n.m.Name()+" sees all 4 after heal", func() bool {
			if sees(n.m, names...) {
				return true
			}
			if time.Since(t1) > 7900*time.Millisecond {
				for _, o := range ns {
					t.Logf("%s sees %v", o.m.Name(), o.m.Members())
				}
			}
			return false
		})
	}
	t.Logf("heal: all 4 alive everywhere after %v", time.Since(t1))
}

func TestOnEventMayCallMembers(t *testing.T) {
	var self atomic.Pointer[Membership]
	var calls atomic.Int64
	var network memberlist.MockNetwork
	ta := NewDropTransport(network.NewTransport("a"))
	tb := NewDropTransport(network.NewTransport("b"))
	tc := NewDropTransport(network.NewTransport("c"))
	a := start(t, Config{Name: "a", Transport: ta, OnEvent: func(e Event) {
		if m := self.Load(); m != nil {
			_ = m.Members() // would deadlock if called under memberlist's lock
			calls.Add(1)
		}
	}})
	self.Store(a.m)
	b := start(t, Config{Name: "b", Transport: tb, Seeds: []string{a.m.Addr()}})
	c := start(t, Config{Name: "c", Transport: tc, Seeds: []string{a.m.Addr()}})
	eventually(t, 5*time.Second, "a sees 3 and handled events", func() bool {
		return sees(a.m, "a", "b", "c") && calls.Load() >= 2
	})
	if err := b.m.UpdateMeta(cluster.Meta{Draining: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "a handles b's update", func() bool { return a.log.has(MemberUpdated, "b") })
	// Crash c on the mock network: Shutdown on a DropTransport keeps
	// draining, so the others do not hang.
	if err := c.m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a sees c die", func() bool { return a.log.has(MemberDied, "c") })
	eventually(t, 5*time.Second, "b sees c die", func() bool { return b.log.has(MemberDied, "c") })
}

func TestLogWriterLevels(t *testing.T) {
	var buf bytes.Buffer
	w := &logWriter{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	_, _ = w.Write([]byte("[DEBUG] memberlist: noisy\n"))
	_, _ = w.Write([]byte("[WARN] memberlist: careful\n"))
	_, _ = w.Write([]byte("[ERR] memberlist: broken\n"))
	out := buf.String()
	if strings.Contains(out, "noisy") || !strings.Contains(out, "level=WARN msg=\"memberlist: careful\"") ||
		!strings.Contains(out, "level=ERROR msg=\"memberlist: broken\"") {
		t.Fatalf("log routing:\n%s", out)
	}
}

// A crashed member (its sockets closed, its gossip port refusing) is
// declared dead by early detection, ahead of gossip's probes.
func TestEarlyCrashDetection(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", Watch: true})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Watch: true, Seeds: []string{a.m.Addr()}})
	c := start(t, Config{Name: "c", BindAddr: "127.0.0.1:0", Watch: true, Seeds: []string{a.m.Addr()}})
	for _, n := range []*node{a, b, c} {
		eventually(t, 5*time.Second, n.m.Name()+" sees a,b,c", func() bool { return sees(n.m, "a", "b", "c") })
	}
	for _, n := range []*node{a, c} { // the watch connections are up
		eventually(t, 5*time.Second, n.m.Name()+" watches b", func() bool {
			mem, _ := n.m.member("b")
			return mem.Meta.Watch != ""
		})
	}
	// let the watch connections be dialed
	eventually(t, 5*time.Second, "watch connections up", func() bool {
		a.m.watch.mu.Lock()
		na := len(a.m.watch.conns)
		a.m.watch.mu.Unlock()
		return na >= 2
	})
	t0 := time.Now()
	_ = b.m.Shutdown() // a crash: no leave, the sockets close
	for _, n := range []*node{a, c} {
		eventually(t, 5*time.Second, n.m.Name()+" sees b die", func() bool { return n.log.has(MemberDied, "b") })
		_, at, _ := n.log.find(func(e Event) bool { return e.Kind == MemberDied && e.Member.Name == "b" })
		t.Logf("%s saw b die %v after the crash (early deaths %d)", n.m.Name(), at.Sub(t0), n.m.EarlyDeaths())
		if n.m.EarlyDeaths() != 1 {
			t.Errorf("%s: early deaths %d, want 1: b was found by gossip, not early", n.m.Name(), n.m.EarlyDeaths())
		}
	}
	if sees(a.m, "b") {
		t.Fatal("b still a member of a")
	}
}

// A watch connection that ends while the member's gossip port still
// answers (a network blip, a proxy restarting) declares nobody dead, and
// the connection is dialed again.
func TestEarlyDetectionNeedsARefusal(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", Watch: true})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Watch: true, Seeds: []string{a.m.Addr()}})
	watching := func(n *node) int {
		n.m.watch.mu.Lock()
		defer n.m.watch.mu.Unlock()
		return len(n.m.watch.conns)
	}
	eventually(t, 5*time.Second, "a watches b", func() bool { return watching(a) == 1 && watching(b) == 1 })
	a.m.watch.mu.Lock()
	for c := range a.m.watch.conns {
		c.Close() // both ends see the connection end
	}
	a.m.watch.mu.Unlock()
	eventually(t, 5*time.Second, "the watch connection dialed again", func() bool {
		return watching(a) == 1 && watching(b) == 1 && a.m.watch.redials() > 0
	})
	if a.m.EarlyDeaths() != 0 || b.m.EarlyDeaths() != 0 {
		t.Fatalf("early deaths a=%d b=%d, want 0: both are alive", a.m.EarlyDeaths(), b.m.EarlyDeaths())
	}
	if !sees(a.m, "a", "b") || !sees(b.m, "a", "b") {
		t.Fatal("a member was dropped")
	}
}

// TestHealWithoutSeeds: two members that met without seeds (nothing for
// the seed rejoin to dial) are partitioned until each declares the other
// dead, then healed. memberlist alone never merges them again (neither
// probes or gossips with a dead member for long, and an alive message at
// the incarnation declared dead is stale); the rejoin loop's dials of the
// recently dead do. The old code, which dialled only seeds, failed this.
func TestHealWithoutSeeds(t *testing.T) {
	ns := mockCluster(t, []string{"a", "b"}, nil, func(c *Config) { c.RejoinInterval = 300 * time.Millisecond })
	// a's transport listens once its memberlist asked for its channels,
	// which happens in a goroutine: a join before that is refused.
	eventually(t, 5*time.Second, "b joined a", func() bool {
		_, err := ns[1].m.ml.Load().Join([]string{ns[0].m.Addr()})
		return err == nil
	})
	for _, n := range ns {
		eventually(t, 5*time.Second, n.m.Name()+" sees a and b", func() bool { return sees(n.m, "a", "b") })
	}
	ns[0].tr.Block(ns[1].m.Addr())
	ns[1].tr.Block(ns[0].m.Addr())
	eventually(t, 8*time.Second, "each saw the other die", func() bool {
		return ns[0].log.has(MemberDied, "b") && ns[1].log.has(MemberDied, "a")
	})
	// The partition lasts long enough for memberlist to stop retransmitting
	// the dead messages (a few gossip rounds), which would otherwise reach
	// the dead member and make it refute.
	never(t, 2*time.Second, "a member seen alive across the partition", func() bool {
		return len(ns[0].m.Members()) != 1 || len(ns[1].m.Members()) != 1
	})
	t1 := time.Now()
	ns[0].tr.UnblockAll()
	ns[1].tr.UnblockAll()
	for _, n := range ns {
		eventually(t, 8*time.Second, n.m.Name()+" sees a and b after heal", func() bool { return sees(n.m, "a", "b") })
	}
	t.Logf("heal without seeds: %v", time.Since(t1))
}

func TestRejoinTargets(t *testing.T) {
	now := time.Unix(1000, 0)
	dead := map[string]deathSeen{
		"x": {at: now.Add(-time.Second), addr: "h:4"},
		"y": {at: now.Add(-rejoinDeadWindow - time.Second), addr: "h:5"}, // too old
		"z": {at: now.Add(-time.Second), addr: "h:2"},                    // a seed: dialled as one
		"w": {at: now.Add(-time.Second), addr: "h:3"},                    // live again at that address
		"v": {at: now.Add(-time.Second), addr: "h:9"},
		"u": {at: now.Add(-time.Second), addr: "h:9"}, // same address once
		"s": {at: now.Add(-time.Second), addr: "h:1"}, // self
	}
	seeds, deadAddrs := rejoinTargets([]string{"h:1", "h:2", "h:2", "h:3", ""}, "h:1", map[string]bool{"h:3": true}, dead, now)
	if got, want := strings.Join(seeds, ","), "h:2"; got != want {
		t.Errorf("seeds = %q, want %q", got, want)
	}
	if got, want := strings.Join(deadAddrs, ","), "h:4,h:9"; got != want {
		t.Errorf("dead = %q, want %q", got, want)
	}
}
