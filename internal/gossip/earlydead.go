package gossip

import (
	"math"
	"net"
	"time"

	"github.com/kinactor/kinactor/cluster"
)

// Early deaths that memberlist does not confirm.
//
// Early detection (watch.go) declares a member dead when its watch
// connection ends and its gossip port refuses a connection. A refusal is
// strong evidence but not proof: a firewall that REJECTs, or a listener
// briefly gone, refuses too while the process lives and memberlist keeps it
// alive. memberlist only reports a member again on a dead→alive change
// (NotifyJoin) or a meta change (NotifyUpdate), so a member we dropped
// ourselves would stay missing for ever. The rule:
//
//   - A member declared dead early leaves the table (Members, MemberDied or
//     MemberLeft as before) but is kept in an early-dead set, with its last
//     entry, until memberlist itself reports it gone (NotifyLeave: then it
//     is gone for good) or it is heard alive.
//   - Heard alive means: one of memberlist's own probes of it is acked
//     (PingDelegate), a ping of ours is acked (memberlist.Ping by name and
//     address, every ProbeInterval while it is in the set), a user message
//     from it arrives, it authenticates on our watch port, or memberlist
//     reports it joined or updated. It then returns to the table with a
//     MemberJoined event.
//   - Send keeps working meanwhile: it addresses an early-dead member from
//     its kept entry (so progress beats to it are not lost).
//   - The set is bounded: an entry lives at most earlyDeadLifetime (twice
//     the longest memberlist takes to declare a dead member dead, at least
//     10 s); if memberlist has still not reported it gone by then, it holds
//     the member alive and the member returns to the table (MemberJoined).
//     At most maxEarlyDead entries: beyond that the oldest returns to the
//     table the same way. Either way the table never disagrees with
//     memberlist for longer than the lifetime.
//
// None of this reads memberlist's *Node values outside its callbacks.

// maxEarlyDead bounds the early-dead set.
const maxEarlyDead = 256

// earlyEntry is a member declared dead early, as it was in the table.
type earlyEntry struct {
	mem   cluster.Member
	at    time.Time // when it was declared dead
	until time.Time // end of its lifetime in the set
	gen   uint64    // tells apart successive early deaths of one name
}

// earlyDeadLifetime is how long a member may stay in the early-dead set:
// twice the longest memberlist takes to declare a dead member of an
// n-member cluster dead (a probe round over every member, plus the longest
// suspicion timeout: SuspicionMaxTimeoutMult (6) × SuspicionMult ×
// ProbeInterval × max(1, log10 n)), at least 10 s.
func (m *Membership) earlyDeadLifetime(n int) time.Duration {
	scale := math.Max(1, math.Log10(float64(max(n, 1))))
	worst := time.Duration(float64(n)+6*float64(m.cfg.SuspicionMult)*scale) * m.cfg.ProbeInterval
	return max(10*time.Second, 2*worst)
}

// declareEarlyDead moves name from the table to the early-dead set and
// queues its death, unless it is no longer in the table (memberlist
// reported it gone first). It returns the event queued.
func (m *Membership) declareEarlyDead(name string) (Event, bool) {
	m.memMu.Lock()
	defer m.memMu.Unlock()
	mem, ok := m.members[name]
	if !ok {
		return Event{}, false
	}
	now := time.Now()
	m.earlyGen++
	e := earlyEntry{mem: mem, at: now, until: now.Add(m.earlyDeadLifetime(len(m.members))), gen: m.earlyGen}
	delete(m.members, name)
	m.nodes.Store(int64(len(m.members)))
	m.earlyDead[name] = e
	for len(m.earlyDead) > maxEarlyDead {
		oldest := ""
		for n, o := range m.earlyDead {
			if oldest == "" || o.gen < m.earlyDead[oldest].gen {
				oldest = n
			}
		}
		m.restoreLocked(oldest, "the early-dead set is full (memberlist has not reported it gone)")
	}
	kind, st := leftOrDead(mem)
	if kind == MemberDied {
		m.sawDeathLocked(mem)
	}
	mem.State = st
	ev := Event{Kind: kind, Member: mem}
	m.push(ev)
	if _, ok := m.earlyDead[name]; ok {
		go m.recheck(name, e.gen)
	}
	return ev, true
}

// heardAlive returns name to the table if it was declared dead early.
func (m *Membership) heardAlive(name, how string) {
	m.memMu.Lock()
	defer m.memMu.Unlock()
	m.restoreLocked(name, how)
}

// restoreLocked returns an early-dead member to the table and queues
// MemberJoined; memMu is held.
func (m *Membership) restoreLocked(name, how string) bool {
	e, ok := m.earlyDead[name]
	if !ok {
		return false
	}
	delete(m.earlyDead, name)
	m.members[name] = e.mem
	m.nodes.Store(int64(len(m.members)))
	m.restored.Add(1)
	m.log.Info("member declared dead early is alive: back", "member", name, "how", how, "after", time.Since(e.at))
	if m.watch != nil {
		m.watch.watch(e.mem)
	}
	m.sawReturnLocked(name)
	m.push(Event{Kind: MemberJoined, Member: e.mem})
	return true
}

// addressable returns a member that Send may address: a live one, or one
// declared dead early that memberlist has not reported gone.
func (m *Membership) addressable(name string) (cluster.Member, bool) {
	m.memMu.Lock()
	defer m.memMu.Unlock()
	if mem, ok := m.members[name]; ok {
		return mem, true
	}
	e, ok := m.earlyDead[name]
	return e.mem, ok
}

// recheck pings an early-dead member every ProbeInterval while it is in the
// set (this death of it: gen), and returns it to the table when a ping is
// acked or its lifetime ends.
func (m *Membership) recheck(name string, gen uint64) {
	t := time.NewTicker(m.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		m.memMu.Lock()
		e, ok := m.earlyDead[name]
		ok = ok && e.gen == gen
		if ok && time.Now().After(e.until) {
			m.restoreLocked(name, "memberlist still holds it alive at the end of its early-dead lifetime")
			ok = false
		}
		m.memMu.Unlock()
		if !ok {
			return
		}
		ml := m.ml.Load()
		addr, err := net.ResolveUDPAddr("udp", e.mem.Addr)
		if ml == nil || err != nil {
			continue
		}
		// Ping names the member: another process on a reused address
		// does not answer for it.
		if _, err := ml.Ping(name, addr); err == nil {
			m.memMu.Lock()
			if cur, ok := m.earlyDead[name]; ok && cur.gen == gen {
				m.restoreLocked(name, "our ping acked")
			}
			m.memMu.Unlock()
		}
	}
}

// EarlyRestores counts the members declared dead early by this node that
// were then heard alive and returned to the table.
func (m *Membership) EarlyRestores() int64 { return m.restored.Load() }
