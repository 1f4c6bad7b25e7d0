package ownership

import (
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
)

// drive runs n for d in 250 ms ticks, answering every Sync: a listing
// with shards, a read with rows. It counts the reads and the listings.
func drive(n *x, d time.Duration, shards []Shard, ls []lease.Lease) (reads, lists int) {
	answer := func(effs []Effect) {
		for len(effs) > 0 {
			var next []Effect
			for _, e := range effs {
				s, ok := e.(Sync)
				if !ok {
					continue
				}
				done := SyncDone{Seq: s.Seq, Listed: s.List, Shards: shards}
				if s.ListOnly {
					done.Unread = true
					lists++
				} else {
					done.Leases = ls
					reads++
				}
				next = append(next, n.step(done)...)
			}
			effs = next
		}
	}
	for end := n.now.Add(d); n.now.Before(end); {
		n.now = n.now.Add(250 * time.Millisecond)
		answer(n.step(Tick{}))
	}
	return reads, lists
}

// The table's reads do not grow with the members: the discovering node
// lists every SyncInterval and reads every LeaderReadInterval; each other
// member reads every FollowerSyncInterval × (members − 1).
func TestReadsDoNotGrowWithMembers(t *testing.T) {
	ls := rows(12, "")
	var shards []Shard
	for _, l := range ls {
		shards = append(shards, Shard{ID: l.Key})
	}
	for _, size := range []int{3, 10} {
		var names []string
		for i := range size {
			names = append(names, string(rune('a'+i)))
		}
		total := 0
		for _, me := range names {
			n := newX(t, me, true)
			n.step(Started{})
			n.step(ViewChanged{Members: members(names...)})
			n.read(ls)
			// Settle, then count over an hour.
			drive(n, 10*time.Minute, shards, ls)
			reads, lists := drive(n, time.Hour, shards, ls)
			if me == "a" {
				// 3600/120 reads, 3600/10 listings (less the reads).
				if reads < 29 || reads > 31 || lists < 320 {
					t.Fatalf("%d members: the discovering node read %d times and listed %d times in an hour, want 30 and ~330", size, reads, lists)
				}
			} else if lists != 0 {
				t.Fatalf("%s listed", me)
			}
			total += reads
		}
		// 30 by the discovering node, 60 by the others together.
		if total < 80 || total > 95 { // each member reads a whole number of times in the hour
			t.Fatalf("%d members: %d reads of the table in an hour, want ~90 whatever the size", size, total)
		}
		t.Logf("%d members: %d reads an hour (%.1f per shard-hour)", size, total, float64(total)/12)
	}
}

// A listing that shows a shard without a row, or a row of ours without a
// shard, makes the discovering node read the table at once.
func TestListingShowingAChangeReads(t *testing.T) {
	ls := rows(2, "")
	cfg := testConfig("a", true)
	cfg.LeaseExpiry = time.Hour // no take falls due here: only the listing reads
	n := &x{t: t, m: New(cfg), now: t0}
	n.step(Started{})
	n.step(ViewChanged{Members: members("a", "b")})
	n.sync(SyncDone{Leases: ls, Listed: true, Shards: []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}}})
	n.now = n.now.Add(11 * time.Second)
	effs := n.step(Tick{})
	s := must[Sync](t, effs)
	if !s.ListOnly {
		t.Fatalf("periodic sync between reads: %+v, want a listing only", s)
	}
	// Unchanged: no read.
	effs = n.step(SyncDone{Seq: s.Seq, Listed: true, Unread: true, Shards: []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}}})
	if _, ok := find[Sync](effs); ok {
		t.Fatalf("an unchanged listing read the table: %v", effs)
	}
	for _, c := range []struct {
		name   string
		shards []Shard
	}{
		{"new shard", []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}, {ID: "shardId-000000000099"}}},
		{"shard gone", []Shard{{ID: ls[0].Key}}},
	} {
		n.now = n.now.Add(11 * time.Second)
		s := must[Sync](t, n.step(Tick{}))
		effs := n.step(SyncDone{Seq: s.Seq, Listed: true, Unread: true, Shards: c.shards})
		r := must[Sync](t, effs)
		if r.ListOnly || !r.List {
			t.Fatalf("%s: %+v, want a read with a listing", c.name, r)
		}
		n.step(SyncDone{Seq: r.Seq, Listed: true, Leases: ls, Shards: []Shard{{ID: ls[0].Key}, {ID: ls[1].Key}}})
	}
}

// A standstill known only from an old read is confirmed by a read before
// the take: unchanged, the lease is taken at once; renewed meanwhile, it
// is not (no write that would lose its race).
func TestStaleStandstillIsConfirmedByARead(t *testing.T) {
	for _, renewed := range []bool{false, true} {
		n := newX(t, "a", true)
		n.step(Started{})
		n.step(ViewChanged{Members: members("a", "b", "c")})
		ls := rows(6, "b")
		n.read(ls)
		// No heartbeat, no read: past LeaseExpiry (9 s) the first
		// successor's standstill is only what the first read showed.
		var effs []Effect
		for range 40 {
			n.now = n.now.Add(250 * time.Millisecond)
			effs = append(effs, n.step(Tick{})...)
			if _, ok := find[Sync](effs); ok {
				break
			}
		}
		if len(takes(effs)) != 0 {
			t.Fatalf("took on an old read: %v", takes(effs))
		}
		s := must[Sync](t, effs)
		again := rows(6, "b")
		if renewed {
			for i := range again {
				again[i].Counter++
			}
		}
		got := takes(n.step(SyncDone{Seq: s.Seq, Listed: s.List, Leases: again}))
		mine := 0
		for _, l := range ls {
			if n.m.successors(l.Key, "b")[0] == "a" {
				mine++
			}
		}
		switch {
		case renewed && len(got) != 0:
			t.Fatalf("took %v although the read shows them renewed", got)
		case !renewed && (len(got) != mine || mine == 0):
			t.Fatalf("took %d after the confirming read, want the %d a succeeds", len(got), mine)
		}
	}
}
