package ownership

import (
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
)

func TestMultiStreamKeySpace(t *testing.T) {
	const a, b = "111122223333:orders:1700000000", "111122223333:clicks:1700000001"
	k := KeySpace{Multi: true, Active: map[string]bool{a: true}}
	for key, want := range map[string]bool{
		a + ":shardId-000000000000": true,
		b + ":shardId-000000000000": false, // not consumed now
		"shardId-000000000000":      false, // a single-stream key
		"":                          false,
	} {
		if k.Ours(key) != want {
			t.Errorf("Ours(%q) = %v, want %v", key, !want, want)
		}
	}
	if !k.Valid(b+":shardId-1") || k.Valid("shardId-1") {
		t.Error("Valid: a multi-stream machine accepts every multi-stream key and no plain one")
	}
	single := KeySpace{}
	if !single.Ours("shardId-1") || single.Ours(a+":shardId-1") || single.Valid(a+":shardId-1") {
		t.Error("single-stream key space")
	}
}

// A multi-stream machine takes only the rows of the streams it consumes,
// never deletes the others', releases a running shard of a stream that
// left the set (gracefully, to nobody), reads the table at once when a
// stream joins it, and creates new rows at their stream's initial position.
func TestMultiStreamMachine(t *testing.T) {
	const sa, sb, sc = "111122223333:a:1", "111122223333:b:2", "111122223333:c:3"
	cfg := testConfig("me", false)
	cfg.MultiStream, cfg.Streams = true, []string{sa, sb}
	n := &x{t: t, m: New(cfg), now: t0}
	n.step(Started{})
	row := func(sid string) lease.Lease {
		return lease.Lease{Key: sid + ":shardId-000000000000", Counter: 1, Checkpoint: lease.Checkpoint{SequenceNumber: "TRIM_HORIZON"}}
	}
	ls := []lease.Lease{row(sa), row(sb), row(sc)}
	listing := []Shard{{ID: sa + ":shardId-000000000000"}, {ID: sb + ":shardId-000000000000"}}
	var took []lease.Lease
	for i := range 3 {
		effs := n.sync(SyncDone{Leases: ls, Listed: true, Shards: listing})
		if wr, ok := find[WriteRows](effs); ok && len(wr.Delete) > 0 {
			t.Fatalf("listing %d deleted %v", i, wr.Delete)
		}
		if takes(effs)[row(sc).Key] != "" {
			t.Fatal("took a row of a stream not consumed")
		}
		took = append(took, n.takeAll(effs)...)
		n.now = n.now.Add(10 * time.Second)
	}
	if len(took) != 2 {
		t.Fatalf("took %v, want the rows of a and b", took)
	}
	effs := n.step(StreamsChanged{Streams: []string{sa}})
	var h Handoff
	for _, e := range effs {
		if x, ok := e.(Handoff); ok {
			h = x
		}
	}
	if h.Key != row(sb).Key || h.To != "" || h.Reason != ReasonStreamRemoved {
		t.Fatalf("after b left the set: handoff %+v, want %s released to nobody for %q (effects %v)", h, row(sb).Key, ReasonStreamRemoved, effs)
	}
	if hs := handoffs(effs); len(hs) != 1 {
		t.Fatalf("handoffs %v, want only b's", hs)
	}
	effs = n.step(StreamsChanged{Streams: []string{sa, sc}})
	if _, ok := find[Sync](effs); !ok {
		t.Fatalf("a stream joined the set and no read followed: %v", effs)
	}
	if takes(effs)[row(sc).Key] == "" {
		t.Fatalf("c's known row not taken when c joined the set: %v", effs)
	}
	effs = n.sync(SyncDone{Leases: ls, Listed: true, Shards: []Shard{
		{ID: sa + ":shardId-000000000000"}, {ID: sc + ":shardId-000000000000"},
		{ID: sc + ":shardId-000000000001", Initial: lease.CheckpointLatest},
	}})
	wr, ok := find[WriteRows](effs)
	if !ok || len(wr.Create) != 1 || wr.Create[0].Key != sc+":shardId-000000000001" || wr.Create[0].Checkpoint.SequenceNumber != lease.CheckpointLatest {
		t.Fatalf("new row of c: %+v, want one at LATEST", wr)
	}
	// A message naming a plain shard id is refused by a multi-stream machine.
	if got := n.m.refusal(MessageReceived{From: "me", Msg: Message{App: app, Type: MsgReleased, Shard: "shardId-000000000000"}}); got != RefusedKey {
		t.Fatalf("refusal of a plain key: %q, want %q", got, RefusedKey)
	}
}
