package ownership

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/multistream"
)

// IsForeignKey reports whether a lease key is not a shard id of a
// single-stream application: a Java KCL multi-stream key
// ("account:stream:epoch:shardId"). Such rows are never eligible and
// never deleted by a single-stream machine.
func IsForeignKey(key string) bool { return strings.Contains(key, ":") || key == "" }

// KeySpace says which lease keys are this application's shards. A
// single-stream application's keys are shard ids; a multi-stream one's
// are multi-stream keys of the streams it consumes now (Active, by
// stream id account:name:epoch). Rows of other keys (another stream's, a
// stream removed from the set) are never eligible and never deleted.
type KeySpace struct {
	Multi  bool
	Active map[string]bool
}

// Ours reports whether key is one of the application's shards now.
func (k KeySpace) Ours(key string) bool {
	if !k.Multi {
		return !IsForeignKey(key)
	}
	id, _, ok := multistream.ParseKey(key)
	return ok && k.Active[id.String()]
}

// Valid reports whether key has the form of the application's keys,
// whatever its stream: gossip naming anything else is refused.
func (k KeySpace) Valid(key string) bool {
	if !k.Multi {
		return IsShardID(key)
	}
	return multistream.IsKey(key)
}

// IsShardID reports whether key can be a shard id of this stream: not a
// foreign key, and of the form Kinesis gives shard ids (1 to 128 of
// A-Z, a-z, 0-9, '_', '.', '-'). Gossip messages naming anything else are
// refused.
func IsShardID(key string) bool { return multistream.IsShardID(key) }

// candidate is a member that may own shards, with what it gossips.
type candidate struct {
	name    string
	weight  int
	unheal  bool
	refuses map[string]bool
}

// candidates returns the members that may own shards: alive, of this
// application, not draining; with their health marks (this node's own as
// effective after HealthSettle).
func (m *Machine) candidates() []candidate {
	if !m.cfg.Clustered {
		return []candidate{{name: m.cfg.Me, weight: 1}}
	}
	out := make([]candidate, 0, len(m.members))
	for name, mi := range m.members {
		meta := mi.m.Meta
		if name == m.cfg.Me {
			if m.stopping {
				continue
			}
			meta = m.health.effective
		}
		if meta.Draining || m.draining[name] || mi.m.State == cluster.StateDead || mi.m.State == cluster.StateLeft {
			continue
		}
		c := candidate{name: name, weight: meta.Weight, unheal: len(meta.Unhealthy) > 0}
		if len(meta.Refuse) > 0 {
			c.refuses = make(map[string]bool, len(meta.Refuse))
			for _, k := range meta.Refuse {
				c.refuses[k] = true
			}
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b candidate) int { return cmp.Compare(a.name, b.name) })
	return out
}

// healthy filters out unhealthy candidates, unless all of them are (an
// outage everywhere moves nothing).
func healthy(cs []candidate) []candidate {
	var out []candidate
	for _, c := range cs {
		if !c.unheal {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return cs
	}
	return out
}

// ensureAssignment recomputes the assignment when its inputs changed and
// then marks every shard for evaluation.
func (m *Machine) ensureAssignment() {
	if !m.assignDirty && m.assign != nil {
		return
	}
	m.assignDirty = false
	m.cands = healthy(m.candidates())
	cs := m.cands
	keys := make([]string, 0, len(m.eligible))
	for k := range m.eligible {
		keys = append(keys, k)
	}
	cands := make([]Candidate, len(cs))
	for i, c := range cs {
		cands[i] = Candidate{Name: c.name, Weight: c.weight}
	}
	var a map[string]string
	if m.cfg.LoadAware && len(cands) > 0 {
		slices.Sort(keys)
		rebalance := m.rebalanceDue()
		if rebalance {
			m.lastRebalance = m.now
		}
		a = m.loadAssign(keys, cands, m.cfg.Me, rebalance)
	} else {
		a = Assign(keys, cands)
	}
	if a == nil {
		a = map[string]string{}
	}
	// Refused shards go to the best-scoring candidate that does not refuse
	// them; if every candidate does, the refusals are ignored.
	refusing := false
	for _, c := range cs {
		if len(c.refuses) > 0 {
			refusing = true
			break
		}
	}
	if refusing {
		byName := make(map[string]candidate, len(cs))
		for _, c := range cs {
			byName[c.name] = c
		}
		for _, k := range keys {
			if !byName[a[k]].refuses[k] {
				continue
			}
			best, bestScore := "", 0.0
			for _, c := range cs {
				if c.refuses[k] {
					continue
				}
				if s := Score(k, c.name, c.weight); best == "" || s > bestScore {
					best, bestScore = c.name, s
				}
			}
			if best != "" {
				a[k] = best
			}
		}
	}
	m.assign = a
	m.assignments++
	m.heirsStale = true
	for k := range m.eligible {
		m.dirty[k] = true
	}
	for k := range m.run {
		m.dirty[k] = true
	}
}

// rendezvous orders the candidates for key by score, best first, leaving
// out the names in skip.
func rendezvous(key string, cs []candidate, skip ...string) []string {
	type scored struct {
		name  string
		score float64
	}
	list := make([]scored, 0, len(cs))
	for _, c := range cs {
		if slices.Contains(skip, c.name) || c.refuses[key] {
			continue
		}
		list = append(list, scored{c.name, Score(key, c.name, c.weight)})
	}
	slices.SortFunc(list, func(a, b scored) int {
		if a.score != b.score {
			return cmp.Compare(b.score, a.score)
		}
		return cmp.Compare(a.name, b.name)
	})
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = s.name
	}
	return out
}

// successors returns the nodes that would take key from holder if it
// stopped renewing it: the healthy candidates in rendezvous order without
// the holder. The first of them takes a lease of a live holder after
// LeaseExpiry, the next after 2·LeaseExpiry, and so on; they are the ones
// holder sends its heartbeats to.
func (m *Machine) successors(key, holder string) []string {
	m.ensureAssignment()
	return rendezvous(key, m.cands, holder)
}

// heir is who would take key at once if this node died now: its owner in
// the assignment over the healthy candidates without this node. With the
// load bound that need not be the first successor (a full successor
// passes the shard on), so the heir gets this node's heartbeats too.
func (m *Machine) heir(key string) string {
	m.ensureAssignment()
	if m.heirsStale || m.heirs == nil {
		m.heirsStale = false
		cands := make([]Candidate, 0, len(m.cands))
		for _, c := range m.cands {
			if c.name != m.cfg.Me {
				cands = append(cands, Candidate{Name: c.name, Weight: c.weight})
			}
		}
		keys := make([]string, 0, len(m.eligible))
		for k := range m.eligible {
			keys = append(keys, k)
		}
		if m.cfg.LoadAware && len(cands) > 0 {
			slices.Sort(keys)
			m.heirs = m.loadAssign(keys, cands, "", false)
		} else {
			m.heirs = Assign(keys, cands)
		}
	}
	return m.heirs[key]
}

// plan evaluates the shards whose inputs changed.
func (m *Machine) plan(now time.Time, out *effects) {
	if len(m.leases) == 0 && len(m.run) == 0 {
		// Nothing to plan: forget what was marked (rows since deleted)
		// and the assignment of shards that are no more.
		clear(m.dirty)
		if len(m.assign) > 0 || len(m.heirs) > 0 {
			m.assign, m.heirs = nil, nil
		}
		return
	}
	m.ensureAssignment()
	if len(m.dirty) == 0 {
		return
	}
	keys := make([]string, 0, len(m.dirty))
	for k := range m.dirty {
		keys = append(keys, k)
	}
	if len(keys) > 64 {
		// A map keeps its size once grown, and ranging over it costs that
		// size even when empty: start afresh after a full evaluation.
		m.dirty = make(map[string]bool)
	} else {
		clear(m.dirty)
	}
	slices.Sort(keys) // effects in shard order: deterministic
	for _, k := range keys {
		m.evaluate(now, k, out)
	}
}

// evaluate decides what to do about one shard: hand off a running one
// assigned elsewhere, or take a lease this node may take now (or note when
// it may).
func (m *Machine) evaluate(now time.Time, key string, out *effects) {
	l, known := m.leases[key]
	eligible := known && m.eligible[key]
	assignee := m.assign[key]
	if r := m.run[key]; r != nil {
		if !m.keys.Ours(key) && !r.releasing && !m.stopping {
			// Its stream left the set: release it gracefully, to nobody.
			r.releasing = true
			out.add(Handoff{Key: key, Reason: ReasonStreamRemoved})
			return
		}
		if eligible && assignee != "" && assignee != m.cfg.Me && !r.releasing && !m.stopping {
			r.releasing = true
			h := Handoff{Key: key, To: assignee}
			if p, ok := m.pending[key]; ok && p.to == assignee {
				h.Reason = "load"
			}
			out.add(h)
		}
		return
	}
	if !eligible || m.taking[key] || m.stopping {
		return
	}
	if _, refused := m.refused[key]; refused && !(assignee == m.cfg.Me && slices.Contains(m.health.effective.Refuse, key)) {
		// Refused here: not taken, unless the refusal is in force and the
		// shard is still ours (every candidate refuses it: someone must try).
		return
	}
	if at, ok := m.retryAt[key]; ok && now.Before(at) {
		return // the tick looks again at retryAt
	}
	if c, ok := m.raced[key]; ok {
		if c == l.Counter {
			return // our copy is what lost the race: a read or gossip brings a fresher one
		}
		delete(m.raced, key)
	}
	holder := l.Owner
	take := func(reason string, unowned time.Duration) {
		m.taking[key] = true
		m.tried[key] = l.Counter
		t := Take{Lease: l, Reason: reason, UnownedFor: unowned}
		if p, known := m.progress[key]; holder != m.cfg.Me {
			if cp, ok := Resume(l, p, known); ok {
				t.Resume = &cp
			}
		}
		out.add(t)
		out.note(-4, "taking lease", "shard", key, "reason", reason, "owner", l.Owner, "counter", l.Counter)
	}
	// behind: position of this node among the takers of last resort, and
	// how long the lease has stood still; ok false when this node is not
	// among them or the lease is not observed.
	behind := func(list []string) (int, time.Duration, bool) {
		pos := slices.Index(list, m.cfg.Me)
		if pos < 0 {
			return 0, 0, false
		}
		still, ok := m.expiry.still(key, holder, l.Counter, now)
		return pos, still, ok
	}
	// confirmed: the standstill was observed recently (within half a
	// LeaseExpiry: a live holder writes every third of one). Reads of the table
	// are rare (see Config.FollowerSyncInterval) and heartbeats reach only
	// the holder's first successors, so a standstill seen only in an old
	// copy of the row is confirmed by a read before the take: the read
	// costs what a take that lost its race would have (it reads too), and
	// writes nothing.
	//
	// mayRead false: the standstill waits for the next read this node
	// makes anyway (see the expiry case below) instead of asking for one.
	confirmed := func(mayRead bool) bool {
		if ago, ok := m.expiry.seenAgo(key, now); ok && ago >= m.cfg.LeaseExpiry/2 {
			m.confirm[key] = true // looked at again once read
			if mayRead {
				out.note(-4, "confirming a standstill by a read before taking", "shard", key, "seen_ago", ago)
				m.requestSync(now, out)
			}
			return false
		}
		return true
	}
	// wait asks to be woken when a standstill of need is reached.
	wait := func(need, still time.Duration) {
		m.expiry.wake(key, now.Add(need-still))
	}
	if holder != "" && holder != m.cfg.Me && !m.isGone(holder) && !m.inView(holder) {
		m.prove(now, key, holder, l.Holder, out)
	}
	switch {
	case holder == m.cfg.Me:
		take(TakeOwn, 0)
	case holder == "" || m.isGone(holder):
		reason := TakeReleased
		if holder == "" && l.Counter == 0 {
			reason = TakeFree
		} else if holder != "" {
			reason = TakeDeadOwner
		}
		lost := holder != "" && m.lostTo(key, holder)
		if assignee == m.cfg.Me && !lost {
			var unowned time.Duration
			if holder != "" {
				unowned = now.Sub(m.gone[holder])
			}
			take(reason, unowned)
			return
		}
		// The assignee should take it at once; if it does not (it cannot
		// write, or it refuses), the others follow one LeaseExpiry apart.
		// A lease lost to a fenced write comes back only by expiry.
		list := append([]string{assignee}, rendezvous(key, m.cands, assignee, holder)...)
		pos, still, ok := behind(list)
		if !ok || (pos == 0 && !lost) {
			return
		}
		need := time.Duration(max(pos, 1)) * m.cfg.LeaseExpiry
		if still >= need {
			if confirmed(true) {
				take(reason, still)
			}
			return
		}
		wait(need, still)
	default:
		// Held by a live member (or one gossip never saw): taken only once
		// its counter stood still for LeaseExpiry, by its successors in turn.
		takers := []string{m.cfg.Me} // a single node takes whatever expires
		if m.cfg.Clustered {
			takers = m.successors(key, holder)
		}
		pos, still, ok := behind(takers)
		if !ok {
			return
		}
		need := time.Duration(pos+1) * m.cfg.LeaseExpiry
		if still >= need {
			// Only the successors that get the holder's heartbeats ask
			// for a read to confirm a standstill. The others see the row
			// only in reads, so at every (pos+1) LeaseExpiry past their
			// last one their copy showed a standstill that was not there,
			// and asking for a read each time doubled the reads of a
			// 10-node cluster (167 scans an hour instead of 90). They are
			// the third line (the holder and its first two successors have
			// all failed to move the shard on) and act on their next read.
			if confirmed(!m.cfg.Clustered || pos < beatSuccessors) {
				take(TakeExpired, still)
			}
			return
		}
		wait(need, still)
	}
}

// inView: the member is in the gossip view (without gossip, only this node).
func (m *Machine) inView(name string) bool {
	if !m.cfg.Clustered {
		return name == m.cfg.Me
	}
	_, ok := m.members[name]
	return ok
}

// A proof of death that failed is tried again after a backoff per owner:
// ProofRetryBase after the first failure, doubling with each failure in a
// row, at most ProofRetryCap. A restarted node's first proof often comes
// too early (the old process not yet reaped or not yet gone); the cap
// keeps an owner that is truly alive, out of reach of the view (a
// partition), from costing more than a proof every few seconds.
const (
	ProofRetryBase = 100 * time.Millisecond
	ProofRetryCap  = 5 * time.Second
)

var proofRetry = backoff.Policy{Base: ProofRetryBase, Cap: ProofRetryCap}

// proofState is what the machine keeps of the proofs of death of an
// owner outside the view.
type proofState struct {
	asking bool      // a ProveDead is under way
	failed int       // proofs in a row that did not prove it dead
	at     time.Time // when the last of them answered
}

// retryAt is when the next proof may be asked for.
func (p proofState) retryAt() time.Time {
	if p.failed == 0 {
		return time.Time{}
	}
	return p.at.Add(proofRetry.Ceiling(p.failed))
}

func (m *Machine) onProof(now time.Time, e ProofDone, out *effects) {
	if e.Dead {
		delete(m.proofs, e.Owner)
		m.provenDead(now, e.Owner, e.How, out)
		return
	}
	p, ok := m.proofs[e.Owner]
	if !ok {
		return // forgotten meanwhile (no row names it any more)
	}
	p.asking = false
	p.failed++
	p.at = now
	m.proofs[e.Owner] = p
	next := p.retryAt()
	for k, l := range m.leases {
		if l.Owner == e.Owner {
			m.expiry.wake(k, next)
		}
	}
}

// prove tries to prove dead the owner of key, who is outside the gossip
// view: a restart gives a node a new name, so an owner nobody sees is
// usually gone, but only a proof lets its leases go before they expire.
// Another member now at its gossip address proves it (two processes cannot
// bind one port; the view says so without a call); the shell checks the
// rest (ProveDead). Without a proof, expiry as before.
func (m *Machine) prove(now time.Time, key, owner string, id lease.Identity, out *effects) {
	if id == (lease.Identity{}) {
		return // a row another library wrote: no identity, expiry only
	}
	if id.Address != "" {
		for name, mi := range m.members {
			if name != owner && mi.m.Addr == id.Address {
				delete(m.proofs, owner)
				m.provenDead(now, owner, "another member, "+name+", has its gossip address "+id.Address, out)
				return
			}
		}
	}
	p := m.proofs[owner]
	if p.asking {
		return
	}
	if next := p.retryAt(); now.Before(next) {
		m.expiry.wake(key, next)
		return
	}
	p.asking = true
	m.proofs[owner] = p
	out.add(ProveDead{Owner: owner, Identity: id})
}

// provenDead acts on a proof that owner is dead: it is gone, as if gossip
// had seen it die.
func (m *Machine) provenDead(now time.Time, owner, how string, out *effects) {
	if _, ok := m.gone[owner]; ok {
		return
	}
	m.gone[owner] = now
	out.note(0, "lease owner proven dead", "owner", owner, "how", how)
	for k, l := range m.leases {
		if l.Owner == owner {
			m.dirty[k] = true
		}
	}
}

// isGone: gossip saw the member leave or die and it is not back.
func (m *Machine) isGone(name string) bool {
	if _, ok := m.gone[name]; !ok {
		return false
	}
	_, inView := m.members[name]
	return !inView
}

// lostTo: this node lost key to a fenced write and owner took it.
func (m *Machine) lostTo(key, owner string) bool {
	ll, ok := m.lost[key]
	return ok && (ll.To == "" || ll.To == owner)
}

func sortedKeys[V any](mp map[string]V) []string {
	out := make([]string, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
