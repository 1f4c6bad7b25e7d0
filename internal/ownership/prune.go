package ownership

import (
	"container/heap"
	"time"
)

// Every map in the machine is bounded by what the table and the view hold
// (rows, live members), plus members that left recently: worker names are
// unique per process, so every restart anywhere brings new names, and
// finished shards leave their rows. What is kept of a row goes with the
// row (pruneRows, after each read of the table, and dropLease); what is
// kept of a member that left goes once no row names it and it has been
// out of the view for memberTTL (pruneMembers, on the tick).

// memberTTL is how long a member that left the view is remembered (gone,
// joinedAt) once no row in this node's copy of the table names it as
// owner: max(2·LeaseExpiry, 2·max(SyncInterval, FollowerSyncInterval),
// 2·SyncTimeout). While a row names it, it is kept, however long: gone
// makes its leases dead-owner takes (the assignee at once, the others one
// LeaseExpiry apart), and its proof state paces the proofs of death. Once
// no row names it, only a stale read can bring such a row back (one in
// flight, at most SyncTimeout old); and joinedAt ends a lost-lease mark at
// the next read (SettleLost) when the taker rejoined after the loss: two
// sync intervals let at least one read see it.
func (m *Machine) memberTTL() time.Duration {
	c := m.cfg
	return max(2*c.LeaseExpiry, 2*max(c.SyncInterval, c.FollowerSyncInterval), 2*c.SyncTimeout)
}

// pruneRows forgets what the machine keeps of rows the table no longer has
// (finished parents, garbage rows deleted), after a read that began at
// from: a key not in the machine's copy of the table, and neither running
// nor being taken here. Progress heard after the read began is kept (the
// row may be newer than the read).
func (m *Machine) pruneRows(from time.Time) {
	gone := func(k string) bool {
		if _, ok := m.leases[k]; ok {
			return false
		}
		return m.run[k] == nil && !m.taking[k]
	}
	for k := range m.heardAt {
		if _, ok := m.leases[k]; !ok {
			delete(m.heardAt, k)
		}
	}
	pruneKeys(m.retryAt, gone)
	pruneKeys(m.raced, gone)
	pruneKeys(m.failures, gone)
	pruneKeys(m.lost, gone)
	pruneKeys(m.unlisted, gone)
	pruneKeys(m.refusedFor, gone)
	pruneKeys(m.refused, gone) // published with the next meta
	m.pruneLoad(gone)
	for k, p := range m.progress {
		if gone(k) && !p.at.After(from) {
			delete(m.progress, k)
		}
	}
}

func pruneKeys[V any](mp map[string]V, gone func(string) bool) {
	for k := range mp {
		if gone(k) {
			delete(mp, k)
		}
	}
}

// pruneMembers forgets members that left the view memberTTL ago and that
// no row names (gone, joinedAt), owners no row names (proof state), and
// compacts the expiry heap.
func (m *Machine) pruneMembers(now time.Time) {
	ttl := m.memberTTL()
	owners := make(map[string]bool, len(m.members))
	for _, l := range m.leases {
		if l.Owner != "" {
			owners[l.Owner] = true
		}
	}
	for name, at := range m.gone {
		if !m.inView(name) && !owners[name] && now.Sub(at) >= ttl {
			delete(m.gone, name)
		}
	}
	for name, at := range m.joinedAt {
		if _, gone := m.gone[name]; !gone && !m.inView(name) && now.Sub(at) >= ttl {
			delete(m.joinedAt, name)
		}
	}
	for name, p := range m.proofs {
		if !owners[name] && !p.asking {
			delete(m.proofs, name)
		}
	}
	for name := range m.draining {
		if !m.inView(name) {
			delete(m.draining, name)
		}
	}
	m.expiry.compact()
}

// compact drops the heap's superseded deadlines (forgotten keys, earlier
// deadlines asked for since) when they are most of it.
func (t *expiryTracker) compact() {
	if len(t.due) <= 2*len(t.live)+16 {
		return
	}
	kept := t.due[:0]
	for _, d := range t.due {
		if t.live[d.key].seq == d.seq {
			kept = append(kept, d)
		}
	}
	clear(t.due[len(kept):])
	t.due = kept
	heap.Init(&t.due)
}

// Sizes returns the size of every map (and heap) the machine keeps, by
// name: for status, metrics, and the chaos churn fault's report. Each is
// bounded by the rows and live members, plus members that left in the
// last memberTTL.
func (m *Machine) Sizes() map[string]int {
	return map[string]int{
		"leases":           len(m.leases),
		"loads":            len(m.loads),
		"pendingMoves":     len(m.pending),
		"movedAt":          len(m.movedAt),
		"heardAt":          len(m.heardAt),
		"confirm":          len(m.confirm),
		"eligible":         len(m.eligible),
		"expiry":           len(m.expiry.obs),
		"expiryLive":       len(m.expiry.live),
		"expiryDue":        len(m.expiry.due),
		"members":          len(m.members),
		"gone":             len(m.gone),
		"proofs":           len(m.proofs),
		"joinedAt":         len(m.joinedAt),
		"draining":         len(m.draining),
		"run":              len(m.run),
		"stalled":          len(m.stalled),
		"taking":           len(m.taking),
		"retryAt":          len(m.retryAt),
		"raced":            len(m.raced),
		"tried":            len(m.tried),
		"failures":         len(m.failures),
		"lost":             len(m.lost),
		"refused":          len(m.refused),
		"refusedFor":       len(m.refusedFor),
		"assign":           len(m.assign),
		"heirs":            len(m.heirs),
		"dirty":            len(m.dirty),
		"unlisted":         len(m.unlisted),
		"beats":            len(m.beats),
		"acked":            len(m.acked),
		"progress":         len(m.progress),
		"health.failing":   len(m.health.failing),
		"health.bad":       len(m.health.bad),
		"health.probing":   len(m.health.probing),
		"health.nextProbe": len(m.health.nextProbe),
	}
}
