package gossip

import (
	"encoding/binary"
	"strings"
	"time"

	"github.com/kinactor/kinactor/cluster"
)

// Learning that the others declared us dead.
//
// When a member declares this node dead (its suspicion of us timed out: we
// were paused, partitioned, or our packets were lost), it drops us and may
// take what we own. memberlist on this node refutes what it hears of that
// with a higher incarnation and tells nobody: no delegate sees it
// (AliveDelegate and ConflictDelegate are not called, EventDelegate only
// hears of other nodes). Worse, it often hears nothing it would refute: it
// refutes the suspicion first (the suspect message comes before the dead
// one), which raises our incarnation, and then drops the dead message as
// stale without a word; a state exchange holding us dead at that old
// incarnation is dropped the same way. Rule: this node learns that it was
// declared dead as soon as either of these happens, and a
// SelfDeclaredDead event is delivered through OnEvent (in order with the
// member events, never under memberlist's lock):
//
//  1. memberlist refutes a dead message about us: it logs "[WARN]
//     memberlist: Refuting a dead message (from: X)" (state.go deadNode),
//     and our logWriter sees every line memberlist prints (Accuser X).
//  2. A member that declared us dead (memberlist reported us dead to it, or
//     its early detection did) sees us alive again (MemberJoined after its
//     MemberDied, same name: a restart takes a new name, so we were alive
//     all along): it tells us with a control message over a reliable
//     stream (Accuser: that member). This covers the stale cases above, a
//     pause, a one-way or a healed partition, once our alive message
//     reaches it.
//
// Suspect refutations ("Refuting a suspect message") are not counted: a
// suspicion (a slow ack) is not a death and nobody acted on it; the
// deaths behind them come by 2. Each accuser tells us once per death it
// saw, so one episode may bring several events: consumers must take them
// as idempotent. A member remembers at most maxDeclaredDead names it saw
// die (the oldest forgotten first). An upgrade of memberlist that changes
// the log line only loses path 1; the tests on real memberlists catch it.

const refuteDeadPrefix = "memberlist: Refuting a dead message (from: "

// Control messages start with a zero byte (a user frame never does: it
// starts with the length of a non-empty name), then their kind, then the
// sender's name (uvarint length + name).
const (
	controlMarker       = 0
	controlDeclaredDead = 1 // "I declared you dead, and you are alive"
)

// maxDeclaredDead bounds the names remembered as declared dead.
const maxDeclaredDead = 1024

// declaredDeadRetries bounds the attempts at telling a member it was
// declared dead, declaredDeadRetryPause apart.
const (
	declaredDeadRetries    = 3
	declaredDeadRetryPause = 500 * time.Millisecond
)

// selfDeathAccuser reads a memberlist log line (its level prefix removed)
// and reports whether memberlist refuted a dead message about self, and
// from whom ("" when unknown).
func selfDeathAccuser(line, self string) (accuser string, ok bool) {
	rest, found := strings.CutPrefix(line, refuteDeadPrefix)
	if !found {
		return "", false
	}
	from := strings.TrimSuffix(rest, ")")
	if from == self {
		from = ""
	}
	return from, true
}

// noticeLog is called with every [WARN] line of memberlist (prefix
// removed), under memberlist's locks: it only queues.
func (m *Membership) noticeLog(line string) {
	if accuser, ok := selfDeathAccuser(line, m.cfg.Name); ok {
		m.selfDeclaredDead(accuser, "memberlist refuted a dead message about us")
	}
}

// selfDeclaredDead counts and queues a SelfDeclaredDead event.
func (m *Membership) selfDeclaredDead(accuser, how string) {
	m.selfDead.Add(1)
	m.memMu.Lock()
	self, found := m.members[m.cfg.Name]
	m.memMu.Unlock()
	if !found {
		self.Name = m.cfg.Name
	}
	m.log.Warn("the others declared this node dead while it is alive", "accuser", accuser, "how", how)
	m.push(Event{Kind: SelfDeclaredDead, Member: self, Accuser: accuser})
}

// SelfDeclaredDeaths counts the times this node learnt that it had been
// declared dead (each also a SelfDeclaredDead event).
func (m *Membership) SelfDeclaredDeaths() int64 { return m.selfDead.Load() }

// deathSeen is what we keep of a member we declared dead: when, and the
// address it had (the rejoin loop dials it for a while: rejoin.go).
type deathSeen struct {
	at   time.Time
	addr string
}

// sawDeathLocked remembers that we declared mem dead; memMu is held.
func (m *Membership) sawDeathLocked(mem cluster.Member) {
	if mem.Name == m.cfg.Name {
		return
	}
	m.declaredDead[mem.Name] = deathSeen{at: time.Now(), addr: mem.Addr}
	for len(m.declaredDead) > maxDeclaredDead {
		oldest := ""
		for n, d := range m.declaredDead {
			if oldest == "" || d.at.Before(m.declaredDead[oldest].at) {
				oldest = n
			}
		}
		delete(m.declaredDead, oldest)
	}
}

// sawReturnLocked tells name, if we declared it dead, that we did (off
// memberlist's lock, in a goroutine); memMu is held.
func (m *Membership) sawReturnLocked(name string) {
	if _, ok := m.declaredDead[name]; !ok {
		return
	}
	delete(m.declaredDead, name)
	go m.tellDeclaredDead(name)
}

// tellDeclaredDead sends name the control message that we declared it
// dead, retrying a few times.
func (m *Membership) tellDeclaredDead(name string) {
	frame := []byte{controlMarker, controlDeclaredDead}
	frame = binary.AppendUvarint(frame, uint64(len(m.cfg.Name)))
	frame = append(frame, m.cfg.Name...)
	for i := 0; ; i++ {
		err := m.sendFrame(name, frame)
		if err == nil {
			return
		}
		if i+1 >= declaredDeadRetries {
			m.log.Debug("telling a member we declared it dead", "member", name, "err", err)
			return
		}
		select {
		case <-m.done:
			return
		case <-time.After(declaredDeadRetryPause):
		}
	}
}

// unframeControl parses a control message.
func unframeControl(b []byte) (kind byte, from string, ok bool) {
	if len(b) < 2 || b[0] != controlMarker {
		return 0, "", false
	}
	n, k := binary.Uvarint(b[2:])
	if k <= 0 || n == 0 || uint64(len(b)-2-k) != n {
		return 0, "", false
	}
	return b[1], string(b[2+k:]), true
}

// control handles a control message from a member.
func (m *Membership) control(kind byte, from string) {
	switch kind {
	case controlDeclaredDead:
		m.selfDeclaredDead(from, "it told us it had declared us dead")
	default:
		m.log.Debug("unknown control message dropped", "kind", kind, "from", from)
	}
}
