// Package gossip owns cluster membership by gossip (hashicorp/memberlist):
// joining and re-joining seeds, node meta, membership events delivered in
// order off memberlist's locks, user messages (reliable sends and
// broadcasts), early crash detection (watch.go: a TCP connection per pair
// of members, a death confirmed by a refused gossip port), and a
// traffic-dropping transport for partition tests. It proposes who is
// alive; the fenced lease table decides who owns what.
//
// Rules:
//
//   - An early death is undone when the member is heard alive
//     (earlydead.go): a member declared dead early on a refused
//     confirmation, which memberlist still holds alive, returns to the
//     table with a MemberJoined as soon as a probe, a ping, a message or
//     its watch connection shows it alive, and Send reaches it meanwhile.
//     Only memberlist's own verdict (NotifyLeave) makes it gone for good.
//     The early-dead set is bounded in size and lifetime.
//   - The watch port speaks only to members that prove the cluster's key
//     and label (watchauth.go: a nonce, HMAC-SHA256 both ways; without a
//     SecretKey the label alone, so no trust beyond the label), and only
//     to names in our table. Its handshake has 2 s, at most 64 accepted
//     connections are unauthenticated at once, authenticated ones are one
//     per member; only the end of an authenticated connection is a
//     suspicion (a stranger makes us dial nobody).
//   - Every user message is deliverable or refused at the call
//     (limits.go): Broadcast refuses a payload over MaxBroadcast, computed
//     from memberlist's packet overheads for our key and label, Send one
//     over MaxSend, both with an error wrapping ErrTooLarge. Broadcasts
//     are retransmitted, so a receiver may get one several times.
//   - A node learns that the others declared it dead as soon as news of
//     it can reach it, with a SelfDeclaredDead event through OnEvent
//     (selfdead.go): when memberlist refutes a dead message about us, or
//     when a member that declared us dead sees us alive again and tells
//     us so (memberlist drops most such news as stale, silently).
//
// ResetWatchConns is a fault-injection hook (chaos tests), not for
// production use.
//
// This package must not import the engine, the root package or any AWS
// client.
package gossip

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor/cluster"
)

// Config configures a Membership. Zero timings take the defaults below,
// which are much faster than memberlist's LAN defaults (death is detected
// in ≈1.2-1.4 s instead of 5-8 s).
type Config struct {
	Name          string   // unique node name (required); a restart must use a new name
	BindAddr      string   // "host:port" for gossip TCP+UDP; port 0 = pick a free one; default "0.0.0.0:7946"
	AdvertiseAddr string   // optional "host:port"
	Seeds         []string // host:port of members to join; unreachable seeds are not fatal (first node)
	SecretKey     []byte   // optional: 16, 24 or 32 bytes (AES-128/192/256)
	Label         string   // optional cluster label; keeps clusters apart
	Meta          cluster.Meta

	RejoinInterval time.Duration // default 5s: re-join seeds not currently seen alive (heals partitions; also when alone)
	ProbeInterval  time.Duration // default 250ms
	ProbeTimeout   time.Duration // default 125ms
	SuspicionMult  int           // default 3
	GossipInterval time.Duration // default 100ms (memberlist LAN: 200ms)

	Logger *slog.Logger // memberlist's log lines routed here ([DEBUG] at Debug, [ERR] at Error); default slog.Default()

	// OnEvent is called for every event, in order, from one goroutine of
	// the Membership's own (never under memberlist's lock, so it may call
	// Members). It may block briefly; a slow OnEvent delays later events
	// but never gossip. Besides the member events and messages it gets
	// SelfDeclaredDead when the others declared this node dead.
	OnEvent func(Event)

	// Transport replaces memberlist's UDP/TCP transport (tests:
	// MockNetwork, DropTransport). BindAddr is then ignored.
	Transport memberlist.NodeAwareTransport

	// Watch turns early crash detection on (watch.go): a watch listener on
	// WatchHost (default: BindAddr's host), gossiped in the meta.
	Watch     bool
	WatchHost string
}

// Defaults.
const (
	DefaultRejoinInterval = 5 * time.Second
	DefaultProbeInterval  = 250 * time.Millisecond
	DefaultProbeTimeout   = 125 * time.Millisecond
	DefaultSuspicionMult  = 3
	DefaultGossipInterval = 100 * time.Millisecond
	DefaultBindAddr       = "0.0.0.0:7946"

	defaultLeaveTimeout = 2 * time.Second
	updateMetaTimeout   = time.Second
)

func (c Config) withDefaults() Config {
	if c.BindAddr == "" {
		c.BindAddr = DefaultBindAddr
	}
	if c.RejoinInterval <= 0 {
		c.RejoinInterval = DefaultRejoinInterval
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.SuspicionMult <= 0 {
		c.SuspicionMult = DefaultSuspicionMult
	}
	if c.GossipInterval <= 0 {
		c.GossipInterval = DefaultGossipInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Membership is this node's view of the cluster, kept by memberlist gossip.
type Membership struct {
	cfg          Config
	log          *slog.Logger
	ml           atomic.Pointer[memberlist.Memberlist] // set once memberlist.Create returned
	bq           *memberlist.TransmitLimitedQueue
	nodes        atomic.Int64 // len(members), for broadcast retransmits
	maxBroadcast int          // largest framed broadcast (limits.go)
	addr         string       // advertised host:port, fixed at Start

	metaMu sync.Mutex
	meta   []byte

	// members mirrors memberlist's live (alive or suspect) nodes, copied
	// in its callbacks while it holds its lock, so reading it is race-free
	// (the *Node that memberlist's Members returns points into its own
	// state and is written under its lock), less the members declared dead
	// early, which wait in earlyDead (earlydead.go) until memberlist
	// reports them gone or they are heard alive.
	memMu     sync.Mutex
	members   map[string]cluster.Member
	earlyDead map[string]earlyEntry
	earlyGen  uint64 // numbers the early deaths

	declaredDead map[string]deathSeen // members we declared dead (selfdead.go)

	qmu    sync.Mutex
	queue  []Event
	signal chan struct{}

	lifeMu  sync.Mutex
	stopped bool
	done    chan struct{}

	watch     *watcher     // nil without early detection
	watchAddr string       // gossiped in the meta, "" without early detection
	early     atomic.Int64 // members declared dead early
	restored  atomic.Int64 // of those, members heard alive again
	selfDead  atomic.Int64 // declarations of our death refuted (selfdead.go)
}

// Start creates the memberlist, joins the seeds (a failed join is logged,
// not fatal: the first node has no one to join), and starts the rejoin loop
// and the event pump.
func Start(cfg Config) (*Membership, error) {
	cfg = cfg.withDefaults()
	if cfg.Name == "" {
		return nil, errors.New("cluster: Config.Name is required")
	}
	switch len(cfg.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("cluster: SecretKey is %d bytes; it must be 16, 24 or 32 bytes (AES-128/192/256)", len(cfg.SecretKey))
	}
	meta, err := cfg.Meta.Encode()
	if err != nil {
		return nil, err
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
	} else {
		host, port, err := splitHostPort(cfg.BindAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster: BindAddr: %w", err)
		}
		mc.BindAddr, mc.BindPort = host, port
	}
	if cfg.AdvertiseAddr != "" {
		host, port, err := splitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster: AdvertiseAddr: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = host, port
	}
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = append([]byte(nil), cfg.SecretKey...)
	}
	mc.Label = cfg.Label
	lw := &logWriter{l: cfg.Logger}
	mc.Logger = log.New(lw, "", 0)

	m := &Membership{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "memberlist", "node", cfg.Name),
		meta:    meta,
		members: make(map[string]cluster.Member),

		earlyDead:    make(map[string]earlyEntry),
		declaredDead: make(map[string]deathSeen),
		signal:       make(chan struct{}, 1),
		done:         make(chan struct{}),
		maxBroadcast: gossipMsgLimit(mc.UDPBufferSize, mc.Label, len(mc.SecretKey) > 0, mc.ProtocolVersion),
	}
	lw.notice = m.noticeLog
	m.bq = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(m.nodes.Load()) },
		RetransmitMult: mc.RetransmitMult,
	}
	d := &delegate{m: m}
	mc.Delegate = d
	mc.Events = d
	mc.Ping = d

	if cfg.Watch {
		host := cfg.WatchHost
		if host == "" {
			host, _, _ = net.SplitHostPort(cfg.BindAddr)
		}
		if m.watch, err = newWatcher(m, host); err != nil {
			return nil, fmt.Errorf("cluster: early detection: %w", err)
		}
	}
	go m.pump()
	ml, err := memberlist.Create(mc)
	if err != nil {
		m.stop()
		return nil, fmt.Errorf("cluster: starting memberlist: %w", err)
	}
	m.ml.Store(ml)
	if dt, ok := cfg.Transport.(*DropTransport); ok {
		// memberlist asks for the transport's channels from goroutines
		// that may not have run yet; its listeners exist now, so a peer's
		// stream or packet waits for them instead of being refused as if
		// this node were not started (which made a join right after Start
		// fail, and the joiner wait for its rejoin loop).
		dt.listening.Store(true)
	}
	m.addr = ml.LocalNode().Address()
	if m.watch != nil {
		m.watchAddr = m.watch.addr(m.addr)
		meta := cfg.Meta
		meta.Watch = m.watchAddr
		if b, err := meta.Encode(); err == nil {
			m.metaMu.Lock()
			m.meta = b
			m.metaMu.Unlock()
			_ = ml.UpdateNode(0)
		}
	}
	if seeds := m.seedsToJoin(); len(seeds) > 0 {
		if n, err := ml.Join(seeds); err != nil {
			m.log.Warn("joining seeds", "seeds", seeds, "joined", n, "err", err)
		}
	}
	if dt, ok := cfg.Transport.(*DropTransport); ok && m.watch != nil {
		dt.setWatchReset(m.ResetWatchConns)
	}
	go m.rejoinLoop()
	return m, nil
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", s)
	}
	return host, port, nil
}

// Name is this node's name.
func (m *Membership) Name() string { return m.cfg.Name }

// Addr is the gossip "host:port" actually in use (the advertised address;
// after BindAddr port 0, the port picked).
func (m *Membership) Addr() string { return m.addr }

// Members returns every member memberlist knows, alive and suspect,
// ourselves included, sorted by name, less the members declared dead early
// (earlydead.go) until they are heard alive again. Safe to call at any
// time, including from OnEvent.
//
// State is StateAlive for all of them: memberlist v0.7.0 reports no
// suspect transitions (no callback, and it never fills Node.State), so a
// suspect member is listed as alive until it is declared dead.
func (m *Membership) Members() []cluster.Member {
	m.memMu.Lock()
	out := make([]cluster.Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, mem)
	}
	m.memMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// UpdateMeta gossips new meta for this node (waits up to 1s for the
// update to be sent).
func (m *Membership) UpdateMeta(meta cluster.Meta) error {
	meta.Watch = m.watchAddr // the membership's own: kept whatever the caller says
	b, err := meta.Encode()
	if err != nil {
		return err
	}
	m.metaMu.Lock()
	m.meta = b
	m.metaMu.Unlock()
	if err := m.ml.Load().UpdateNode(updateMetaTimeout); err != nil {
		return fmt.Errorf("cluster: updating meta: %w", err)
	}
	return nil
}

// Send delivers payload to one member by name over a reliable (TCP)
// stream. The receiver gets a MessageReceived event naming us. A member
// declared dead early that memberlist has not reported gone is still
// addressed (at its last known address): it may well be alive. A payload
// over MaxSend (20 MiB less 64 bytes and our name) is refused with an
// error wrapping ErrTooLarge (memberlist's receiver would drop it).
func (m *Membership) Send(to string, payload []byte) error {
	// Address the member from our own copy of the table: the *Node values
	// memberlist hands out are changed under its lock, so reading them
	// here would race.
	if len(payload) > m.MaxSend() {
		return m.tooLarge("send", len(payload), m.MaxSend())
	}
	return m.sendFrame(to, m.frame(payload))
}

// sendFrame sends a framed message to a member over a reliable stream.
func (m *Membership) sendFrame(to string, frame []byte) error {
	mem, ok := m.addressable(to)
	if !ok {
		return fmt.Errorf("cluster: unknown member %q", to)
	}
	ml := m.ml.Load()
	if ml == nil {
		return errors.New("cluster: membership not started")
	}
	host, portStr, err := net.SplitHostPort(mem.Addr)
	if err != nil {
		return fmt.Errorf("cluster: member %q has a bad address %q: %w", to, mem.Addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fmt.Errorf("cluster: member %q has a bad port %q: %w", to, portStr, err)
	}
	node := &memberlist.Node{Name: to, Addr: net.ParseIP(host), Port: uint16(port)}
	if err := ml.SendReliable(node, frame); err != nil {
		return fmt.Errorf("cluster: sending to %s: %w", to, err)
	}
	return nil
}

// Broadcast gossips payload to all members, best effort: it is queued and
// piggybacked on gossip packets to random members, RetransmitMult·log(N+1)
// times in all, so a member may receive the same broadcast several times
// (receivers must be idempotent) or, under loss, not at all; we do not
// receive our own broadcast. A payload over MaxBroadcast (about 1.3 KB,
// less with a label and a key: limits.go) would never fit a gossip packet
// and is refused with an error wrapping ErrTooLarge; use Send for those.
func (m *Membership) Broadcast(payload []byte) error {
	msg := m.frame(payload)
	if len(msg) > m.maxBroadcast {
		return m.tooLarge("broadcast", len(payload), m.MaxBroadcast())
	}
	m.bq.QueueBroadcast(userBroadcast(msg))
	return nil
}

// Leave leaves the cluster gracefully (others see MemberLeft), waiting at
// most timeout (≤0: 2s) for the leave to be gossiped, then shuts down. It
// first gossips that this node drains, if it has not said so yet (half the
// timeout at most). It is idempotent and safe after Shutdown.
func (m *Membership) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = defaultLeaveTimeout
	}
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.stopped {
		return nil
	}
	// Say that we drain before we go, unless we already did: the others
	// tell a leave from a death by it (memberlist reports both alike).
	m.metaMu.Lock()
	meta, _ := cluster.DecodeMeta(m.meta)
	m.metaMu.Unlock()
	if !meta.Draining {
		meta.Draining = true
		if b, err := meta.Encode(); err == nil {
			m.metaMu.Lock()
			m.meta = b
			m.metaMu.Unlock()
			_ = m.ml.Load().UpdateNode(timeout / 2)
		}
	}
	lerr := m.ml.Load().Leave(timeout)
	serr := m.ml.Load().Shutdown()
	m.stop()
	if lerr != nil {
		return fmt.Errorf("cluster: leave: %w", lerr)
	}
	return serr
}

// Shutdown stops gossip without leaving: the others will declare this
// node dead (how a crash looks). Idempotent.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.stopped {
		return nil
	}
	err := m.ml.Load().Shutdown()
	m.stop()
	return err
}

// stop ends the pump, the rejoin loop and early detection (pending events
// are dropped).
func (m *Membership) stop() {
	m.stopped = true
	close(m.done)
	if m.watch != nil {
		m.watch.close()
	}
}

// EarlyDeaths counts the members this node declared dead by early
// detection, ahead of gossip.
func (m *Membership) EarlyDeaths() int64 { return m.early.Load() }

// ResetWatchConns closes every early-detection connection this node holds
// (dialed and accepted), with a TCP reset, as a firewall that REJECTs would
// reset established connections. It is a fault-injection hook (chaos
// tests): the peers see their connection end and confirm the suspicion by
// dialing this node's gossip port; the connections are dialed again. A
// no-op without early detection.
func (m *Membership) ResetWatchConns() {
	if m.watch != nil {
		m.watch.reset()
	}
}

// member returns a live member by name.
func (m *Membership) member(name string) (cluster.Member, bool) {
	m.memMu.Lock()
	defer m.memMu.Unlock()
	mem, ok := m.members[name]
	return mem, ok
}

// push queues an event; called from memberlist's callbacks, so it never
// blocks (the queue is unbounded).
func (m *Membership) push(e Event) {
	m.qmu.Lock()
	m.queue = append(m.queue, e)
	m.qmu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// pump delivers queued events to OnEvent, in order, until stopped.
func (m *Membership) pump() {
	for {
		select {
		case <-m.done:
			return
		case <-m.signal:
		}
		for {
			m.qmu.Lock()
			batch := m.queue
			m.queue = nil
			m.qmu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, e := range batch {
				select {
				case <-m.done:
					return
				default:
				}
				if m.cfg.OnEvent != nil {
					m.cfg.OnEvent(e)
				}
			}
		}
	}
}

func (m *Membership) toMember(n *memberlist.Node) cluster.Member {
	meta, err := cluster.DecodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("bad node meta; using zero meta", "member", n.Name, "err", err)
	}
	return cluster.Member{Name: n.Name, Addr: n.Address(), State: cluster.StateAlive, Meta: meta}
}

// leftOrDead tells a graceful leave from a death by what the node said of
// itself: a node that leaves gossips that it drains first (its meta, and
// its release messages, say so), a node that dies says nothing. memberlist
// itself reports both alike through NotifyLeave. A node whose draining meta
// has not reached us yet when it leaves is taken for dead; both mean
// "gone" to the ownership machine, so the difference is only in the logs.
func leftOrDead(mem cluster.Member) (EventKind, cluster.State) {
	if mem.Meta.Draining {
		return MemberLeft, cluster.StateLeft
	}
	return MemberDied, cluster.StateDead
}

// frame prefixes a user message with our name (uvarint length + name). A
// name is never empty, so a frame never starts with a zero byte: that marks
// the membership's own control messages (selfdead.go).
func (m *Membership) frame(payload []byte) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(m.cfg.Name)+len(payload))
	b = binary.AppendUvarint(b, uint64(len(m.cfg.Name)))
	b = append(b, m.cfg.Name...)
	return append(b, payload...)
}

func unframe(b []byte) (from string, payload []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || uint64(len(b)-k) < n {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}

// delegate implements memberlist.Delegate and memberlist.EventDelegate.
// Its methods run on memberlist's goroutines, some under its node lock:
// they only copy data and queue it.
type delegate struct{ m *Membership }

func (d *delegate) NodeMeta(limit int) []byte {
	d.m.metaMu.Lock()
	defer d.m.metaMu.Unlock()
	if len(d.m.meta) > limit {
		d.m.log.Error("node meta over memberlist's limit; not sent", "bytes", len(d.m.meta), "limit", limit)
		return nil
	}
	return append([]byte(nil), d.m.meta...)
}

func (d *delegate) NotifyMsg(b []byte) {
	if kind, from, ok := unframeControl(b); ok {
		d.m.heardAlive(from, "a message from it")
		d.m.control(kind, from)
		return
	}
	from, payload, ok := unframe(b)
	if !ok {
		d.m.log.Warn("malformed user message dropped", "bytes", len(b))
		return
	}
	d.m.heardAlive(from, "a message from it")
	d.m.push(Event{Kind: MessageReceived, Member: cluster.Member{Name: from}, Payload: bytes.Clone(payload)})
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.bq.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte            { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.m.memberAlive(d.m.toMember(n), MemberJoined)
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	mem := d.m.toMember(n)
	kind, st := leftOrDead(mem)
	mem.State = st
	d.m.memberGone(mem, kind)
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	d.m.memberAlive(d.m.toMember(n), MemberUpdated)
}

// AckPayload implements memberlist.PingDelegate.
func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete implements memberlist.PingDelegate: one of
// memberlist's probes got its ack, proof that the member is alive.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	d.m.heardAlive(other.Name, "memberlist's probe acked")
}

// memberAlive records mem as live and queues its event, both under memMu
// so that the events' order matches the table's. An update of a member
// missing from the table (declared dead early) is its return: MemberJoined.
func (m *Membership) memberAlive(mem cluster.Member, kind EventKind) {
	m.memMu.Lock()
	defer m.memMu.Unlock()
	if _, ok := m.members[mem.Name]; !ok && kind == MemberUpdated {
		kind = MemberJoined
	}
	delete(m.earlyDead, mem.Name)
	m.members[mem.Name] = mem
	m.nodes.Store(int64(len(m.members)))
	if m.watch != nil {
		m.watch.watch(mem)
	}
	m.sawReturnLocked(mem.Name)
	m.push(Event{Kind: kind, Member: mem})
}

// memberGone removes mem (memberlist reported it dead or left, the end of
// any early death too) and queues its event, under memMu.
func (m *Membership) memberGone(mem cluster.Member, kind EventKind) {
	m.memMu.Lock()
	defer m.memMu.Unlock()
	delete(m.members, mem.Name)
	delete(m.earlyDead, mem.Name)
	m.nodes.Store(int64(len(m.members)))
	if kind == MemberDied {
		m.sawDeathLocked(mem)
	}
	m.push(Event{Kind: kind, Member: mem})
}

// userBroadcast is a user message in the TransmitLimitedQueue.
type userBroadcast []byte

func (b userBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b userBroadcast) Message() []byte                       { return b }
func (b userBroadcast) Finished()                             {}

// logWriter routes memberlist's log lines ("[DEBUG] memberlist: ...") to
// slog at the level their prefix names, and shows each [WARN] line (its
// prefix removed) to notice, if set, whatever the logger's level
// (selfdead.go).
type logWriter struct {
	l      *slog.Logger
	notice func(line string)
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for _, pl := range []struct {
		prefix string
		level  slog.Level
	}{
		{"[DEBUG]", slog.LevelDebug},
		{"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelWarn},
		{"[ERR]", slog.LevelError},
		{"[ERROR]", slog.LevelError},
	} {
		if len(line) >= len(pl.prefix) && line[:len(pl.prefix)] == pl.prefix {
			level = pl.level
			line = string(bytes.TrimSpace([]byte(line[len(pl.prefix):])))
			break
		}
	}
	if w.notice != nil && level == slog.LevelWarn {
		w.notice(line)
	}
	ctx := context.Background()
	if w.l.Enabled(ctx, level) {
		w.l.Log(ctx, level, line)
	}
	return len(p), nil
}
