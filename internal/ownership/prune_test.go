package ownership

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/shardfsm"
)

// perRow names the maps Sizes reports that are kept per row of the table
// (or per shard running here); the others are kept per member, or per
// service.
var perRow = []string{
	"leases", "heardAt", "eligible", "expiry", "expiryLive", "run", "stalled", "taking", "retryAt",
	"raced", "tried", "failures", "lost", "refused", "refusedFor", "assign", "heirs", "dirty",
	"unlisted", "acked", "progress",
}

// serve answers every read with table and every row write with success,
// and every take with a lost race; it returns the takes.
func (n *x) serve(table []lease.Lease, effs []Effect) []Take {
	n.t.Helper()
	var tks []Take
	for len(effs) > 0 {
		e := effs[0]
		effs = effs[1:]
		switch e := e.(type) {
		case Sync:
			effs = append(effs, n.step(SyncDone{Seq: e.Seq, Leases: table})...)
		case WriteRows:
			effs = append(effs, n.step(RowsDone{Seq: e.Seq})...)
		case Take:
			tks = append(tks, e)
			effs = append(effs, n.step(TakeDone{Key: e.Lease.Key, Reason: e.Reason, Err: lease.ErrLeaseLost, LostRace: true})...)
		case ProveDead:
			effs = append(effs, n.step(ProofDone{Owner: e.Owner})...)
		}
	}
	return tks
}

// checkSizes fails when a map is larger than bound, naming it.
func checkSizes(t *testing.T, when string, sizes map[string]int, bound func(name string) int) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(sizes)) {
		if sizes[name] > bound(name) {
			t.Errorf("%s: %s holds %d entries, want at most %d (all: %v)", when, name, sizes[name], bound(name), sizes)
		}
	}
}

// 20,000 members join, talk and die, one every 250 ms, and the table has
// no rows: before, gone and joinedAt held an entry per member that ever
// lived (worker names are unique per process), progress one per shard
// ever heard of. Every map now stays bounded by the rows (none) and live
// members (this node), plus the members gone in the last memberTTL.
func TestMapsStayBoundedUnderChurn(t *testing.T) {
	n := newX(t, "a", true)
	n.serve(nil, n.step(Started{}))
	ttl := n.m.memberTTL()
	window := int((ttl+ttl/4)/(250*time.Millisecond)) + 2 // members gone in the last memberTTL (and a prune interval)
	seq := fmt.Sprintf("%056d", 42)
	maxSeen := map[string]int{}
	for i := range 20000 {
		name := fmt.Sprintf("worker-%d", i)
		key := fmt.Sprintf("shardId-%012d", i)
		n.serve(nil, n.step(ViewChanged{Members: members("a", name), Joined: []string{name}}))
		n.serve(nil, n.step(MessageReceived{From: name, Msg: Message{App: app, Type: MsgHeartbeat, Draining: true, Leases: []Beat{{Shard: key, Counter: 3, Seq: seq}}}}))
		n.serve(nil, n.step(MessageReceived{From: name, Msg: Message{App: app, Type: MsgReleased, Shard: key, Counter: 4}}))
		n.serve(nil, n.step(MessageReceived{From: "stranger-" + name, Msg: Message{App: app, Type: MsgReleased, Shard: key, Counter: 4}}))
		n.now = n.now.Add(250 * time.Millisecond)
		n.serve(nil, n.step(Tick{}))
		n.serve(nil, n.step(ViewChanged{Members: members("a"), Gone: []string{name}}))
		for k, v := range n.m.Sizes() {
			maxSeen[k] = max(maxSeen[k], v)
		}
	}
	checkSizes(t, "during the churn", maxSeen, func(name string) int {
		switch name {
		case "gone", "joinedAt":
			return window + 1
		case "expiryDue":
			return 2*2 + 16 // compacted beyond twice the live deadlines (and a few)
		}
		return 3 // rows (none) + live members (a, and the one joined) + 1
	})
	n.serve(nil, n.tick(ttl+ttl/4+time.Second))
	checkSizes(t, "memberTTL after the last death", n.m.Sizes(), func(name string) int {
		switch name {
		case "members", "joinedAt", "health.failing", "health.bad", "health.probing", "health.nextProbe":
			return 1 + 2 // a, and its own services
		}
		return 0
	})
}

// Rows held, taken, lost, refused, raced, failed, listed and heard of, by
// members that live, die or are outside the view; then every row is
// deleted: every per-row map empties at the read that shows it, and the
// member maps keep only the live members once memberTTL has passed.
// Before, progress kept an entry per finished parent, failures, raced,
// refused and lost one per row ever deleted, proofAt one per owner ever
// proven, gone one per member ever dead.
func TestMapsEmptyWhenTheRowsAreDeleted(t *testing.T) {
	seq := func(i int) string { return fmt.Sprintf("%056d", i) }
	n := newX(t, "a", true)
	n.step(Started{})
	// b lives (its word counts) and c dies, both draining: every free row
	// is a's
	ms := withMeta(withMeta(members("a", "b", "c"), "b", cluster.Meta{Draining: true}), "c", cluster.Meta{Draining: true})
	n.step(ViewChanged{Members: ms, Joined: []string{"b", "c"}})
	var table []lease.Lease
	row := func(i int, owner string) lease.Lease {
		l := lease.Lease{Key: fmt.Sprintf("shardId-%012d", i), Owner: owner, Counter: 2, Checkpoint: lease.Checkpoint{SequenceNumber: seq(i)}}
		table = append(table, l)
		return l
	}
	for i := range 8 {
		row(i, "") // free: a takes them
	}
	for i := 8; i < 12; i++ {
		row(i, "b")
	}
	for i := 12; i < 14; i++ {
		row(i, "c")
	}
	for i := 14; i < 16; i++ {
		l := row(i, "old-1") // outside the view: proofs of death
		table[len(table)-1].Holder = lease.Identity{Address: "10.0.0.9:7946", Host: "h/boot/ns", PID: 99}
		_ = l
	}
	end := row(16, "")
	table[len(table)-1].Checkpoint = lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd}
	table = append(table, lease.Lease{Key: "111122223333:orders:1:shardId-000000000001", Owner: "other-app-node", Counter: 9})
	// b's heartbeats carry progress, also of the finished shard
	var beats []Beat
	for i := 8; i < 12; i++ {
		beats = append(beats, Beat{Shard: table[i].Key, Counter: 2, Seq: seq(100 + i)})
	}
	beats = append(beats, Beat{Shard: end.Key, Counter: 2, Seq: seq(500)})
	n.step(MessageReceived{From: "b", Msg: Message{App: app, Type: MsgHeartbeat, Leases: beats}})
	// the first read, with a listing that misses two rows
	var listed []Shard
	for _, l := range table[2:] {
		listed = append(listed, Shard{ID: l.Key})
	}
	effs := n.sync(SyncDone{Leases: table, Listed: true, Shards: listed})
	var tks []Take
	for _, e := range effs {
		switch e := e.(type) {
		case Take:
			tks = append(tks, e)
		case ProveDead:
			n.step(ProofDone{Owner: e.Owner}) // not proven: proofs kept
		}
	}
	if len(tks) < 8 {
		t.Fatalf("%d takes of the 8 free rows: %v", len(tks), effs)
	}
	ok := func(tk Take) lease.Lease {
		l := tk.Lease
		l.Owner, l.Counter = "a", l.Counter+1
		n.step(TakeDone{Key: l.Key, Reason: tk.Reason, Lease: l})
		return l
	}
	l0 := ok(tks[0])
	n.step(ShardAcked{Key: l0.Key, Checkpoint: lease.Checkpoint{SequenceNumber: seq(900)}})
	n.step(ShardHealth{Key: l0.Key, Stalled: true, Cause: ServiceKinesis}) // refused, for kinesis
	l1 := ok(tks[1])
	n.step(ShardFinished{Key: l1.Key, Outcome: shardfsm.LeaseLost}) // lost
	l2 := ok(tks[2])
	n.step(ShardFinished{Key: l2.Key, Outcome: shardfsm.Failed}) // refused for good
	l3 := ok(tks[3])
	n.serve(table, n.step(ShardCrashed{Key: l3.Key}))                                            // failures (its retake loses a race)
	n.step(TakeDone{Key: tks[4].Lease.Key, Reason: tks[4].Reason, Err: fmt.Errorf("throttled")}) // failures, retryAt
	for _, tk := range tks[5:] {
		n.step(TakeDone{Key: tk.Lease.Key, Reason: tk.Reason, Err: lease.ErrLeaseLost, LostRace: true}) // raced
	}
	n.serve(table, n.step(ViewChanged{Members: withMeta(members("a", "b"), "b", cluster.Meta{Draining: true}), Gone: []string{"c"}}))
	n.serve(table, n.tick(2*time.Second))
	before := n.m.Sizes()
	for _, name := range []string{"progress", "refused", "lost", "failures", "raced", "unlisted", "proofs", "gone", "run", "acked", "stalled"} {
		if before[name] == 0 {
			t.Errorf("%s is empty before the rows go: the test shows nothing of it (%v)", name, before)
		}
	}
	// every shard running here finishes; then every row is deleted
	for _, k := range n.m.Running() {
		n.serve(table, n.step(ShardFinished{Key: k, Outcome: shardfsm.Released, Counter: 9}))
	}
	if n.m.syncing { // a read begun while the rows were there
		n.serve(table, n.sync(SyncDone{Leases: table}))
	}
	n.now = n.now.Add(time.Millisecond)
	n.serve(nil, n.step(MessageReceived{From: "b", Msg: Message{App: app, Type: MsgShards}}))
	if n.m.syncing {
		t.Fatal("a read still in flight")
	}
	checkSizes(t, "after the read that shows no rows", n.m.Sizes(), func(name string) int {
		if slices.Contains(perRow, name) {
			return 0
		}
		return 1 << 30
	})
	n.serve(nil, n.tick(n.m.memberTTL()*5/4+time.Second))
	checkSizes(t, "memberTTL later", n.m.Sizes(), func(name string) int {
		switch name {
		case "members", "joinedAt":
			return 2 // a and b
		case "health.failing", "health.bad", "health.probing", "health.nextProbe":
			return 3
		}
		return 0
	})
}
