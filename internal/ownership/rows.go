package ownership

import (
	"cmp"
	"slices"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
)

// NewRows returns the lease rows to create for the listed shards that have
// none in the table (have). A closed shard whose descendants (through the
// listing, at any depth) already have a row is skipped: it was read to its
// end and its row deleted once its children moved on, and a new row would
// read it again from the start. Rows of shards without a listed or known
// parent start at initial; children start at TRIM_HORIZON, so nothing after
// a reshard is lost. The rows come in listing order.
func NewRows(shards []Shard, have map[string]lease.Lease, initial string) []lease.Lease {
	listed := make(map[string]bool, len(shards))
	children := map[string][]string{}
	for _, s := range shards {
		listed[s.ID] = true
		for _, p := range s.Parents {
			children[p] = append(children[p], s.ID)
		}
	}
	// rowBelow: some descendant has a row. Shard lineage is a DAG (merges
	// join two branches), so memoize; a shard's own row does not count.
	memo := map[string]bool{}
	var rowBelow func(id string) bool
	rowBelow = func(id string) bool {
		if v, ok := memo[id]; ok {
			return v
		}
		memo[id] = false // cycle guard for a malformed listing
		found := false
		for _, c := range children[id] {
			if _, ok := have[c]; ok || rowBelow(c) {
				found = true
				break
			}
		}
		memo[id] = found
		return found
	}
	var out []lease.Lease
	for _, s := range shards {
		if _, ok := have[s.ID]; ok {
			continue
		}
		if s.Closed && rowBelow(s.ID) {
			continue // finished and cleaned up: its descendants carry on
		}
		cp := initial
		if s.Initial != "" {
			cp = s.Initial
		}
		for _, p := range s.Parents {
			if _, ok := have[p]; listed[p] || ok {
				cp = lease.CheckpointTrimHorizon // a child: read it all
			}
		}
		out = append(out, lease.Lease{
			Key: s.ID, Checkpoint: lease.Checkpoint{SequenceNumber: cp},
			ParentShardIDs: slices.Clone(s.Parents), StartingHashKey: s.StartingHashKey, EndingHashKey: s.EndingHashKey,
		})
	}
	return out
}

// FinishedParents returns the rows that can be deleted: shards read to
// SHARD_END, with children recorded, every one of which has a row whose
// checkpoint is past its start (a sequence number or SHARD_END).
func FinishedParents(leases []lease.Lease) []lease.Lease {
	byKey := make(map[string]lease.Lease, len(leases))
	for _, l := range leases {
		byKey[l.Key] = l
	}
	var out []lease.Lease
	for _, l := range leases {
		if !l.Checkpoint.IsShardEnd() || len(l.ChildShardIDs) == 0 || l.Owner != "" {
			continue
		}
		done := true
		for _, c := range l.ChildShardIDs {
			cl, ok := byKey[c]
			if !ok || (cl.Checkpoint.IsSentinel() && !cl.Checkpoint.IsShardEnd()) {
				done = false
				break
			}
		}
		if done {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b lease.Lease) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// GarbageRows returns the rows whose shard the listing no longer shows for
// the second listing in a row (past the stream's retention: nothing is left
// to read), updating misses, the count of listings in a row that missed
// each row. Rows that are not ours (another stream's rows in a shared
// table, those of a stream removed from the set) are never garbage. An empty listing deletes nothing: it says more about the
// listing than about the rows.
func GarbageRows(leases []lease.Lease, shards []Shard, misses map[string]int, ours func(key string) bool) []lease.Lease {
	if len(shards) == 0 {
		return nil
	}
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[s.ID] = true
	}
	seen := make(map[string]bool, len(leases))
	var out []lease.Lease
	for _, l := range leases {
		seen[l.Key] = true
		if !ours(l.Key) || listed[l.Key] {
			delete(misses, l.Key)
			continue
		}
		misses[l.Key]++
		if misses[l.Key] >= 2 {
			out = append(out, l)
		}
	}
	for k := range misses {
		if !seen[k] {
			delete(misses, k)
		}
	}
	slices.SortFunc(out, func(a, b lease.Lease) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// SettleLost updates the leases this node lost to a fenced write from a
// read of the table and the members' latest join times. A lost lease is
// not taken back by judging its owner dead: in a partition each side sees
// the other dead, and they would take it back and forth. The mark ends,
// and a later death of the owner is acted on at once instead of after
// expiry, when the lease is free or ours again; when it has moved on from
// the node that took it (released or taken since: the loss is history); or
// when that node joined our view again after the loss (the partition that
// made it take the lease has healed).
func SettleLost(lost map[string]lostLease, leases []lease.Lease, me string, joined map[string]time.Time) {
	for _, l := range leases {
		m, ok := lost[l.Key]
		if !ok {
			continue
		}
		if l.Owner == "" || l.Owner == me || (m.To != "" && m.To != l.Owner) {
			delete(lost, l.Key)
			continue
		}
		m.To = l.Owner
		if joined[m.To].After(m.At) {
			delete(lost, l.Key)
			continue
		}
		lost[l.Key] = m
	}
}
