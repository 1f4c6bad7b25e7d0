package ownership

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/seqnum"
	"github.com/kinactor/kinactor/internal/shardfsm"
)

// ---- syncs ----------------------------------------------------------------

// leader reports whether this node discovers shards: the lowest-named
// candidate that is healthy on Kinesis and DynamoDB (the lowest-named
// candidate when none is), or the only node without a cluster.
func (m *Machine) leader() bool {
	if !m.cfg.Clustered {
		return true
	}
	all := m.candidates()
	if len(all) == 0 {
		return false
	}
	first := ""
	for _, c := range all {
		meta := m.metaOf(c.name)
		if slices.Contains(meta.Unhealthy, ServiceKinesis) || slices.Contains(meta.Unhealthy, ServiceDynamoDB) {
			continue
		}
		first = c.name
		break
	}
	if first == "" {
		first = all[0].name
	}
	return first == m.cfg.Me
}

func (m *Machine) metaOf(name string) cluster.Meta {
	if name == m.cfg.Me {
		return m.health.effective
	}
	if mi := m.members[name]; mi != nil {
		return mi.m.Meta
	}
	return cluster.Meta{}
}

// requestSync reads the table now, or after the read in flight.
func (m *Machine) requestSync(now time.Time, out *effects) {
	if m.stopping {
		return
	}
	if m.syncing {
		m.resync = true
		return
	}
	m.syncing, m.listOnly = true, false
	m.lastSync, m.readFrom = now, now
	m.syncSeq++
	out.add(Sync{List: m.leader(), Seq: m.syncSeq})
}

func (m *Machine) syncInterval() time.Duration {
	if m.leader() || len(m.leases) == 0 {
		return m.cfg.SyncInterval
	}
	others := 1
	if m.cfg.Clustered {
		others = max(1, len(m.cands)-1)
	}
	return max(m.cfg.FollowerSyncInterval, m.cfg.SyncInterval) * time.Duration(others)
}

// periodicSync is the read (or, on the discovering node between its
// reads, the listing) due when nothing happened.
func (m *Machine) periodicSync(now time.Time, out *effects) {
	if m.stopping {
		return
	}
	if !m.leader() || len(m.leases) == 0 || !now.Before(m.nextRead) {
		m.requestSync(now, out)
		return
	}
	m.syncing, m.listOnly = true, true
	m.lastSync = now
	m.syncSeq++
	out.add(Sync{List: true, ListOnly: true, Seq: m.syncSeq})
}

// onListed handles a listing without a read: the table is read at once
// when the listing shows a shard that has no row here (rows to create) or
// one of our rows whose shard it no longer shows (a row to delete).
func (m *Machine) onListed(now time.Time, e SyncDone, out *effects) {
	m.syncing = false
	m.nextSync = now.Add(m.syncInterval())
	read := m.resync
	m.resync = false
	if e.ListErr != nil {
		m.opFailed(now, ServiceKinesis)
		out.note(4, "listing shards failed, will retry", "err", e.ListErr)
	} else {
		m.opOK(now, ServiceKinesis)
		if len(e.Shards) > 0 {
			if len(NewRows(e.Shards, m.leases, m.cfg.InitialCheckpoint)) > 0 {
				read = true
			}
			listed := make(map[string]bool, len(e.Shards))
			for _, s := range e.Shards {
				listed[s.ID] = true
			}
			for k := range m.leases {
				if !listed[k] && m.keys.Ours(k) {
					read = true
					break
				}
			}
			if !read {
				// Finished parents whose children all moved on: their rows
				// go at once, not at the next periodic read.
				rows := make([]lease.Lease, 0, len(m.leases))
				for _, l := range m.leases {
					rows = append(rows, l)
				}
				read = len(FinishedParents(rows)) > 0
			}
		}
	}
	if read {
		m.requestSync(now, out)
	}
}

func (m *Machine) onSync(now time.Time, e SyncDone, out *effects) {
	if !m.syncing || e.Seq != m.syncSeq {
		return // given up on (SyncTimeout): a newer read is under way
	}
	if e.Unread {
		m.onListed(now, e, out)
		return
	}
	if e.ReadErr != nil {
		m.syncing = false
		m.syncFails++
		m.opFailed(now, ServiceDynamoDB)
		m.nextSync = now.Add(m.cfg.SyncBackoff.Delay(m.syncFails, m.rng))
		out.note(4, "reading the lease table failed, will retry", "err", e.ReadErr)
		if e.Listed && e.ListErr != nil {
			m.opFailed(now, ServiceKinesis)
		}
		m.resync = false
		return
	}
	m.syncFails = 0
	m.opOK(now, ServiceDynamoDB)
	m.applyRows(now, m.readFrom, e.Leases)
	for k := range m.confirm {
		m.dirty[k] = true // a standstill to confirm: the read is in
	}
	clear(m.confirm)
	out.note(-4, "lease table read", "rows", len(e.Leases), "listed", e.Listed, "resync", m.resync)
	m.nextSync = now.Add(m.syncInterval())
	if m.leader() {
		m.nextRead = now.Add(m.cfg.LeaderReadInterval)
	}
	if e.Listed {
		if e.ListErr != nil {
			m.opFailed(now, ServiceKinesis)
			out.note(4, "listing shards failed, will retry", "err", e.ListErr)
		} else {
			m.opOK(now, ServiceKinesis)
			have := make(map[string]lease.Lease, len(e.Leases))
			for _, l := range e.Leases {
				have[l.Key] = l
			}
			create := NewRows(e.Shards, have, m.cfg.InitialCheckpoint)
			del := FinishedParents(e.Leases)
			for _, g := range GarbageRows(e.Leases, e.Shards, m.unlisted, m.keys.Ours) {
				if !slices.ContainsFunc(del, func(l lease.Lease) bool { return l.Key == g.Key }) {
					out.note(0, "deleting the row of a shard the stream no longer lists", "shard", g.Key, "checkpoint", g.Checkpoint.SequenceNumber)
					del = append(del, g)
				}
			}
			if len(create)+len(del) > 0 && !m.stopping {
				m.lastSync = now
				out.add(WriteRows{Seq: m.syncSeq, Create: create, Delete: del})
				return // still syncing: read again once written
			}
		}
	}
	m.syncing = false
	if m.resync {
		m.resync = false
		m.requestSync(now, out)
	}
}

func (m *Machine) onRows(now time.Time, e RowsDone, out *effects) {
	if !m.syncing || e.Seq != m.syncSeq {
		return
	}
	m.syncing = false
	if e.Err != nil {
		m.opFailed(now, ServiceDynamoDB)
		out.note(4, "writing lease rows failed, will retry", "err", e.Err)
	} else {
		m.opOK(now, ServiceDynamoDB)
	}
	if e.Changed {
		if m.cfg.Clustered {
			out.add(Broadcast{Msg: Message{App: m.cfg.App, Type: MsgShards}})
		}
		m.resync = false
		m.requestSync(now, out)
		return
	}
	if m.resync {
		m.resync = false
		m.requestSync(now, out)
	}
}

// applyRows replaces the machine's copy of the table with a read of it
// that began at from. What this node heard after from (a release or a
// heartbeat by gossip, a write of its own) may be newer than the read: a
// row with a lower counter than that does not override it.
func (m *Machine) applyRows(now, from time.Time, rows []lease.Lease) {
	seen := make(map[string]bool, len(rows))
	for _, l := range rows {
		seen[l.Key] = true
		old, had := m.leases[l.Key]
		heardSince := m.heardAt[l.Key].After(from)
		if had && old.Counter > l.Counter && heardSince {
			continue // the read is older than what we heard since it began
		}
		// Nothing heard of the row since the read began: the read is the
		// authority, even with a lower counter than we heard before it
		// (a row deleted and created again, or a wrong word by gossip).
		m.setLease(now, l, had, old, !heardSince)
	}
	for k := range m.leases {
		if !seen[k] && !m.heardAt[k].After(from) {
			m.dropLease(k)
		}
	}
	if len(m.heardAt) > 0 {
		for k, at := range m.heardAt {
			if !at.After(from) {
				delete(m.heardAt, k)
			}
		}
	}
	SettleLost(m.lost, rows, m.cfg.Me, m.joinedAt)
	m.pruneRows(from)
}

// heard records news of a row that did not come from a read of the table.
func (m *Machine) heard(now time.Time, l lease.Lease) {
	old, had := m.leases[l.Key]
	m.heardAt[l.Key] = now
	m.setLease(now, l, had, old, false)
}

// setLease stores a row and marks what it changes. authority: l comes
// from a read of the table that began after the last news of the row by
// gossip or our own writes, so the expiry tracker takes it even when its
// counter is lower than the one it holds.
func (m *Machine) setLease(now time.Time, l lease.Lease, had bool, old lease.Lease, authority bool) {
	m.leases[l.Key] = l
	el := m.keys.Ours(l.Key) && !l.Checkpoint.IsShardEnd()
	if el != m.eligible[l.Key] {
		m.assignDirty = true
		if el {
			m.eligible[l.Key] = true
		} else {
			delete(m.eligible, l.Key)
		}
	}
	if l.Checkpoint.IsShardEnd() {
		delete(m.progress, l.Key) // finished: nothing to resume
	}
	if had {
		m.sawOwner(now, l.Key, old.Owner, l.Owner)
	}
	if m.expiry.observe(l.Key, l.Owner, l.Counter, now, authority) || !had || old.Owner != l.Owner || old.Counter != l.Counter {
		m.dirty[l.Key] = true
	}
}

func (m *Machine) dropLease(k string) {
	delete(m.leases, k)
	delete(m.heardAt, k)
	if m.eligible[k] {
		delete(m.eligible, k)
		m.assignDirty = true
	}
	m.expiry.forget(k)
	m.dirty[k] = true
}

// ---- ticks ----------------------------------------------------------------

func (m *Machine) onTick(now time.Time, out *effects) {
	m.expiry.dueBy(now, func(k string) { m.dirty[k] = true })
	for k, at := range m.retryAt {
		if !now.Before(at) {
			delete(m.retryAt, k)
			m.dirty[k] = true
		}
	}
	m.updateHealth(now, out)
	m.settle(now)
	m.probe(now, out)
	m.onTickLoad(now)
	if m.syncing && now.Sub(m.lastSync) >= m.cfg.SyncTimeout {
		// A hung call (a blackholed route): give up on it, count it as a
		// failure, and read again; its late answer is ignored.
		service := ServiceDynamoDB
		if m.listOnly {
			service = ServiceKinesis
		}
		out.note(4, "reading the lease table got no answer; giving up on it", "after", now.Sub(m.lastSync), "service", service)
		m.syncing, m.resync = false, false
		m.opFailed(now, service)
		m.nextSync = now
	}
	if !m.syncing && !now.Before(m.nextSync) {
		m.periodicSync(now, out)
	}
	if now.Sub(m.lastFlush) >= m.cfg.HeartbeatInterval {
		m.flushBeats(now, out)
	}
	if now.Sub(m.lastPrune) >= m.memberTTL()/4 {
		m.lastPrune = now
		m.pruneMembers(now)
	}
}

// ---- the view and gossip ----------------------------------------------------

func (m *Machine) onView(now time.Time, e ViewChanged, out *effects) {
	if !m.cfg.Clustered {
		return
	}
	next := make(map[string]*memberInfo, len(e.Members))
	for _, mem := range e.Members {
		if mem.Name != m.cfg.Me && mem.Meta.App != m.cfg.App {
			continue // another application on the same seeds: not ours
		}
		next[mem.Name] = &memberInfo{m: mem}
	}
	if _, ok := next[m.cfg.Me]; !ok {
		next[m.cfg.Me] = &memberInfo{m: cluster.Member{Name: m.cfg.Me, Meta: m.health.effective}}
	}
	if !sameView(m.members, next) {
		m.assignDirty = true
	}
	m.members = next
	for name := range m.draining {
		if _, ok := next[name]; !ok {
			delete(m.draining, name) // planned without it anyway
		}
	}
	for _, name := range e.Joined {
		delete(m.gone, name)
		delete(m.proofs, name)
		m.joinedAt[name] = now
		delete(m.draining, name)
	}
	for _, name := range e.Gone {
		if _, back := next[name]; back {
			continue
		}
		m.gone[name] = now
		delete(m.draining, name)
		for k, l := range m.leases {
			if l.Owner == name {
				m.dirty[k] = true
			}
		}
		out.note(0, "member gone", "member", name)
	}
	if len(e.Joined)+len(e.Gone) > 0 {
		m.requestSync(now, out)
	}
	if len(e.Joined) > 0 {
		// A newcomer may now be among our shards' successors: it gets
		// their counters and progress at once, not at the next change.
		for _, k := range sortedKeys(m.run) {
			if l, ok := m.leases[k]; ok && l.Owner == m.cfg.Me {
				m.queueBeat(l)
			}
		}
		m.flushBeats(now, out)
	}
}

func sameView(a, b map[string]*memberInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.m.State != y.m.State || !x.m.Meta.Equal(y.m.Meta) {
			return false
		}
	}
	return true
}

func (m *Machine) onMessage(now time.Time, e MessageReceived, out *effects) {
	if !m.cfg.Clustered || e.From == m.cfg.Me {
		return
	}
	g := e.Msg
	if reason := m.refusal(e); reason != "" {
		out.add(Refused{From: e.From, Type: g.Type, Reason: reason})
		return
	}
	if g.Draining && !m.draining[e.From] {
		m.draining[e.From] = true
		m.assignDirty = true
	}
	switch g.Type {
	case MsgReleased:
		l, ok := m.leases[g.Shard]
		if ok && l.Counter > g.Counter {
			return
		}
		// Unknown yet (the first read is still under way): keep what we
		// heard; the read, older than the release, does not override it.
		l.Key, l.Owner, l.Counter = g.Shard, "", g.Counter
		m.heard(now, l)
		if m.cfg.LoadAware && g.To != "" {
			m.pending[g.Shard] = pendingMove{to: g.To, at: now}
			m.movedAt[g.Shard] = now
			m.assignDirty = true
		}
	case MsgLoad:
		m.hearLoad(e.From, g.Loads)
	case MsgShards:
		m.requestSync(now, out)
	case MsgHeartbeat:
		for _, b := range g.Leases {
			old, ok := m.leases[b.Shard]
			if !ok {
				// Not read yet (a node that just started): the progress is
				// kept all the same; Resume holds it to the row once read.
				m.hearProgress(now, e.From, b)
				continue
			}
			if b.Counter < old.Counter {
				continue
			}
			if b.Counter > old.Counter || old.Owner != e.From {
				l := old
				l.Owner, l.Counter = e.From, b.Counter
				m.heard(now, l)
			}
			m.hearProgress(now, e.From, b)
		}
	}
}

// refusal says why a gossip message must not be used ("" when it may): it
// is for another application (every stream has a shardId-000000000003,
// and nodes of other applications may share the seeds and label), its
// sender is not a member of this application in the view, its type is
// unknown, or it names a key that is not a shard id of this stream. A
// message is refused whole: its sender is not to be trusted with the rest.
func (m *Machine) refusal(e MessageReceived) string {
	g := e.Msg
	if g.App != m.cfg.App {
		return RefusedApp
	}
	if _, ok := m.members[e.From]; !ok {
		return RefusedStranger
	}
	switch g.Type {
	case MsgReleased:
		if !m.keys.Valid(g.Shard) {
			return RefusedKey
		}
	case MsgHeartbeat:
		for _, b := range g.Leases {
			if !m.keys.Valid(b.Shard) {
				return RefusedKey
			}
		}
	case MsgLoad:
		for _, w := range g.Loads {
			if !m.keys.Valid(w.Shard) {
				return RefusedKey
			}
		}
	case MsgShards:
	default:
		return RefusedType
	}
	return ""
}

// hearProgress keeps what a holder said its processor acknowledged, for
// the counter it said it holds; a position that is not a sequence number
// is doubtful and dropped. The store never goes backwards: news is ordered
// by counter, then (from the same sender) by position. A late or repeated
// beat (each flush travels on its own connection, so beats overtake each
// other) is dropped; news from a sender other than the one stored
// replaces it only with a higher counter (a new holder), never an equal
// or lower one.
func (m *Machine) hearProgress(now time.Time, from string, b Beat) {
	if b.Seq == "" || !seqnum.Valid(b.Seq) || b.Sub < 0 {
		return
	}
	if l, ok := m.leases[b.Shard]; ok && l.Checkpoint.IsShardEnd() {
		return // finished: nothing to resume
	}
	cp := lease.Checkpoint{SequenceNumber: b.Seq, SubSequenceNumber: b.Sub}
	if p, ok := m.progress[b.Shard]; ok && !newerProgress(p, from, b.Counter, cp) {
		return // older news, or a repeat
	}
	m.progress[b.Shard] = heardProgress{from: from, counter: b.Counter, cp: cp, at: now}
}

// newerProgress reports whether from's news of cp at counter is later than
// p: a higher counter, or the same sender at the same counter with a later
// position.
func newerProgress(p heardProgress, from string, counter int64, cp lease.Checkpoint) bool {
	if counter != p.counter {
		return counter > p.counter
	}
	return from == p.from && cp.Compare(p.cp) > 0
}

// Resume returns where a take of l (read as held by l.Owner at l.Counter)
// resumes the shard: the position l.Owner said its processor acknowledged
// while holding the lease at exactly that counter, when it is later than
// the row's checkpoint. A take is conditional on that counter, so the
// position cannot be stale: the holder wrote nothing since (the counter
// would have moved), every checkpoint it wrote is a position it
// acknowledged before, and what it acknowledged its processor had done.
// Anything doubtful (another counter, another sender, no such news) loses
// to the table: ok is false and the row's checkpoint stands.
func Resume(l lease.Lease, heard heardProgress, known bool) (lease.Checkpoint, bool) {
	if !known || l.Owner == "" || heard.from != l.Owner || heard.counter != l.Counter {
		return lease.Checkpoint{}, false
	}
	if !l.Checkpoint.IsSentinel() && heard.cp.Compare(l.Checkpoint) <= 0 {
		return lease.Checkpoint{}, false
	}
	if l.Checkpoint.IsShardEnd() {
		return lease.Checkpoint{}, false
	}
	return heard.cp, true
}

// queueBeat remembers a lease this node holds at l.Counter, with what its
// processor acknowledged, for its first two successors (who take it by
// expiry) and its heir (who takes it at once if this node dies).
func (m *Machine) queueBeat(l lease.Lease) {
	if !m.cfg.Clustered {
		return
	}
	beat := Beat{Shard: l.Key, Counter: l.Counter}
	if cp, ok := m.acked[l.Key]; ok && !cp.IsSentinel() {
		beat.Seq, beat.Sub = cp.SequenceNumber, cp.SubSequenceNumber
	}
	dests := firstN(m.successors(l.Key, m.cfg.Me), beatSuccessors)
	if h := m.heir(l.Key); h != "" && !slices.Contains(dests, h) {
		dests = append(dests, h)
	}
	for _, to := range dests {
		b := m.beats[to]
		if b == nil {
			b = map[string]Beat{}
			m.beats[to] = b
		}
		b[l.Key] = beat
	}
}

// beatSuccessors is how many of a holder's successors get its heartbeats.
const beatSuccessors = 2

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// flushBeats sends the queued heartbeats, one message per destination.
func (m *Machine) flushBeats(now time.Time, out *effects) {
	m.lastFlush = now
	if len(m.beats) == 0 {
		return
	}
	for _, to := range sortedKeys(m.beats) {
		msg := Message{App: m.cfg.App, Type: MsgHeartbeat}
		for _, k := range sortedKeys(m.beats[to]) {
			msg.Leases = append(msg.Leases, m.beats[to][k])
		}
		out.add(Send{To: to, Msg: msg})
	}
	m.beats = map[string]map[string]Beat{} // the inner maps may be large: start afresh
}

// ---- takes and shard actors ---------------------------------------------------

func (m *Machine) onTake(now time.Time, e TakeDone, out *effects) {
	delete(m.taking, e.Key)
	defer delete(m.tried, e.Key)
	m.dirty[e.Key] = true // look at it again: with a fresh row, or after the backoff
	if e.Err != nil {
		if e.LostRace || errors.Is(e.Err, lease.ErrLeaseLost) {
			m.opOK(now, ServiceDynamoDB)
			m.raced[e.Key] = m.tried[e.Key] // not again with that row: wait for a fresher one
			out.note(0, "lease moved before we could take it", "shard", e.Key)
		} else {
			m.opFailed(now, ServiceDynamoDB)
			m.failures[e.Key]++
			m.retryAt[e.Key] = now.Add(m.cfg.TakeBackoff.Delay(m.failures[e.Key], m.rng))
			out.note(4, "taking lease failed, will retry", "shard", e.Key, "err", e.Err)
		}
		m.requestSync(now, out)
		return
	}
	m.opOK(now, ServiceDynamoDB)
	delete(m.lost, e.Key)
	delete(m.retryAt, e.Key)
	delete(m.progress, e.Key)
	m.heard(now, e.Lease)
	m.run[e.Key] = &running{}
	out.add(Spawn{Lease: e.Lease})
	m.queueBeat(e.Lease)
	if m.stopping {
		m.run[e.Key].releasing = true
		out.add(Handoff{Key: e.Key}) // taken while stopping: give it back the normal way
	}
}

func (m *Machine) onShardAcked(now time.Time, e ShardAcked, out *effects) {
	if _, ok := m.run[e.Key]; !ok {
		return
	}
	m.acked[e.Key] = e.Checkpoint
	if l, ok := m.leases[e.Key]; ok && l.Owner == m.cfg.Me {
		m.queueBeat(l)
	}
}

func (m *Machine) onShardWrote(now time.Time, e ShardWrote, out *effects) {
	m.opOK(now, ServiceDynamoDB)
	m.heard(now, e.Lease)
	m.queueBeat(e.Lease)
}

func (m *Machine) onShardHealth(now time.Time, e ShardHealth, out *effects) {
	if m.run[e.Key] == nil {
		return
	}
	if !e.Stalled {
		delete(m.stalled, e.Key)
		return
	}
	cause := e.Cause
	if cause == "" {
		cause = ServiceProcessor
	}
	m.stalled[e.Key] = cause
}

// unrun forgets a shard that no longer runs here.
func (m *Machine) unrun(key string) {
	delete(m.run, key)
	delete(m.stalled, key)
	delete(m.acked, key)
}

func (m *Machine) onFinished(now time.Time, e ShardFinished, out *effects) {
	m.unrun(e.Key)
	m.dirty[e.Key] = true
	l, known := m.leases[e.Key]
	released := func() {
		if !known {
			return
		}
		nl := l
		nl.Owner, nl.Counter = "", e.Counter
		m.heard(now, nl)
	}
	switch e.Outcome {
	case shardfsm.Released:
		delete(m.failures, e.Key)
		released()
		if p, ok := m.pending[e.Key]; ok && m.cfg.Clustered && m.cfg.LoadAware {
			p.at = now // the new owner has LeaseExpiry from now to take it
			m.pending[e.Key] = p
			// A move for load: everyone hears who the new owner is, so
			// that all agree on it at once.
			for _, c := range m.candidates() {
				if c.name != m.cfg.Me {
					out.add(Send{To: c.name, Msg: Message{App: m.cfg.App, Type: MsgReleased, Shard: e.Key, Counter: e.Counter, Draining: m.stopping, To: p.to}})
				}
			}
		} else if to := m.assign[e.Key]; m.cfg.Clustered && to != "" && to != m.cfg.Me {
			// Tell the new owner at once, so it need not wait for a read.
			out.add(Send{To: to, Msg: Message{App: m.cfg.App, Type: MsgReleased, Shard: e.Key, Counter: e.Counter, Draining: m.stopping}})
		}
	case shardfsm.ShardEnd:
		delete(m.failures, e.Key)
		if known {
			nl := l
			nl.Owner, nl.Counter = "", e.Counter
			nl.Checkpoint = lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd}
			m.heard(now, nl)
		}
		// Children become eligible now; the discovering node creates their
		// rows, and everyone reads the table.
		if m.cfg.Clustered {
			out.add(Broadcast{Msg: Message{App: m.cfg.App, Type: MsgShards}})
		}
		m.requestSync(now, out)
	case shardfsm.LeaseLost:
		m.lost[e.Key] = lostLease{At: now} // who took it shows at the next read
		m.dropLease(e.Key)
		m.requestSync(now, out)
	case shardfsm.Fenced:
		// Lease writes failed until the lease could have expired: the lease
		// may still be ours (the service comes back) or already another's.
		m.markBad(now, ServiceDynamoDB)
		m.requestSync(now, out)
	case shardfsm.Unreadable:
		released()
		m.refused[e.Key] = now.Add(m.cfg.RefusalTTL)
		delete(m.refusedFor, e.Key)
		out.note(8, "shard cannot be read here; refusing it", "shard", e.Key, "cause", e.Cause)
	case shardfsm.Failed:
		released()
		m.refused[e.Key] = time.Time{} // for good: the failure policy said stop
		delete(m.refusedFor, e.Key)
	}
}

func (m *Machine) onCrashed(now time.Time, e ShardCrashed, out *effects) {
	if _, ok := m.run[e.Key]; !ok {
		return
	}
	m.unrun(e.Key)
	n := m.failures[e.Key]
	m.failures[e.Key] = n + 1
	if n > 0 {
		m.retryAt[e.Key] = now.Add(m.cfg.CrashBackoff.Delay(n, m.rng))
	}
	m.dirty[e.Key] = true
	out.note(4, "shard actor crashed; taking its lease again", "shard", e.Key, "crashes", n+1)
}

// ---- stopping ----------------------------------------------------------------

func (m *Machine) onStopAll(now time.Time, out *effects) {
	if m.stopping {
		return
	}
	m.stopping = true
	m.assignDirty = true
	for _, k := range sortedKeys(m.run) {
		r := m.run[k]
		if !r.releasing {
			r.releasing = true
			out.add(Handoff{Key: k})
		}
	}
	m.publish(now, out)
}

func (m *Machine) maybeStopDone(out *effects) {
	if m.stopping && !m.stopDone && len(m.run) == 0 && len(m.taking) == 0 {
		m.stopDone = true
		out.add(StopDone{})
	}
}

func (m *Machine) finishStop(out *effects) {
	if m.stopDone {
		return
	}
	m.stopDone = true
	out.add(StopDone{Left: sortedKeys(m.run)})
}

// onStreams makes streams the set of streams consumed (multi-stream):
// the rows of a stream that left it are no longer eligible (never taken,
// never deleted) and a shard of it running here is released; those of a
// stream that joined it are, and a read of the table (with a listing on
// the discovering node) follows at once.
func (m *Machine) onStreams(now time.Time, e StreamsChanged, out *effects) {
	if !m.cfg.MultiStream {
		return
	}
	next := make(map[string]bool, len(e.Streams))
	for _, s := range e.Streams {
		next[s] = true
	}
	added := false
	for s := range next {
		if !m.keys.Active[s] {
			added = true
		}
	}
	if !added && len(next) == len(m.keys.Active) {
		return
	}
	m.keys.Active = next
	for k, l := range m.leases {
		if el := m.keys.Ours(k) && !l.Checkpoint.IsShardEnd(); el {
			m.eligible[k] = true
		} else {
			delete(m.eligible, k)
		}
		m.dirty[k] = true
	}
	for k := range m.run {
		m.dirty[k] = true
	}
	m.assignDirty = true
	out.note(0, "streams consumed", "streams", strings.Join(e.Streams, ","))
	if added {
		m.requestSync(now, out)
	}
}
