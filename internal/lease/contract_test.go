package lease

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// TestStoreContract holds MemStore and DynamoStore (on DynamoDB Local, AWS's
// own engine) to the same cases, so that tests of the shells on MemStore
// say something about the real table.
func TestStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		for _, c := range contractCases {
			t.Run(c.name, func(t *testing.T) { c.run(t, NewMemStore()) })
		}
	})
	t.Run("dynamodb-local", func(t *testing.T) {
		t.Parallel()
		env := localaws.StartT(t, "", localaws.DynamoDBLocal)
		client := env.DynamoDBClient()
		var n atomic.Int64
		for _, c := range contractCases {
			t.Run(c.name, func(t *testing.T) {
				s := NewDynamoStore(client, fmt.Sprintf("contract-%d", n.Add(1)))
				if err := s.EnsureTable(context.Background()); err != nil {
					t.Fatal(err)
				}
				c.run(t, s)
			})
		}
	})
}

var contractCases = []struct {
	name string
	run  func(t *testing.T, s Store)
}{
	{"CreateGetList", contractCreateGetList},
	{"TakeFreeThenFenced", contractTakeFreeThenFenced},
	{"RenewCheckpointRelease", contractRenewCheckpointRelease},
	{"StaleWritesAreLost", contractStaleWritesAreLost},
	{"TakeOwnKeepsSwitches", contractTakeOwnKeepsSwitches},
	{"DeleteConditional", contractDeleteConditional},
	{"TakeResumesAndSaysWhereItRuns", contractTakeResumesAndIdentity},
}

func contractCreateGetList(t *testing.T, s Store) {
	ctx := context.Background()
	l := Lease{Key: "shardId-000000000002", Owner: "ignored", Counter: 9, ParentShardIDs: []string{"p2", "p1", "p1"}, StartingHashKey: "0", EndingHashKey: "99"}
	mustNil(t, s.Create(ctx, l), "create")
	if err := s.Create(ctx, l); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	mustNil(t, s.Create(ctx, Lease{Key: "shardId-000000000001", Checkpoint: Checkpoint{SequenceNumber: CheckpointLatest}}), "create 1")
	got, err := s.Get(ctx, l.Key)
	mustNil(t, err, "get")
	want := Lease{Key: l.Key, Checkpoint: Checkpoint{SequenceNumber: CheckpointTrimHorizon}, ParentShardIDs: []string{"p1", "p2"}, StartingHashKey: "0", EndingHashKey: "99"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("row %+v, want %+v (free, counter 0, sets sorted)", got, want)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	all, err := s.List(ctx)
	mustNil(t, err, "list")
	if len(all) != 2 {
		t.Fatalf("list %d rows", len(all))
	}
}

func contractTakeFreeThenFenced(t *testing.T, s Store) {
	ctx := context.Background()
	mustNil(t, s.Create(ctx, Lease{Key: "k"}), "create")
	seen, _ := s.Get(ctx, "k")
	a, err := s.Take(ctx, seen, "a", TakeOptions{})
	mustNil(t, err, "take")
	if a.Owner != "a" || a.Counter != 1 || a.OwnerSwitchesSinceCheckpoint != 1 {
		t.Fatalf("taken %+v", a)
	}
	if _, err := s.Take(ctx, seen, "b", TakeOptions{}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("take with a stale view: %v, want ErrLeaseLost", err)
	}
	b, err := s.Take(ctx, a, "b", TakeOptions{})
	mustNil(t, err, "take from a")
	if b.Owner != "b" || b.Counter != 2 || b.OwnerSwitchesSinceCheckpoint != 2 {
		t.Fatalf("taken from a %+v", b)
	}
	if _, err := s.Renew(ctx, a); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew by the old owner: %v", err)
	}
}

func contractRenewCheckpointRelease(t *testing.T, s Store) {
	ctx := context.Background()
	mustNil(t, s.Create(ctx, Lease{Key: "k"}), "create")
	seen, _ := s.Get(ctx, "k")
	h, err := s.Take(ctx, seen, "a", TakeOptions{})
	mustNil(t, err, "take")
	h, err = s.Renew(ctx, h)
	mustNil(t, err, "renew")
	if h.Counter != 2 || h.Owner != "a" {
		t.Fatalf("renewed %+v", h)
	}
	cp := Checkpoint{SequenceNumber: "49590338271490256608559692538361571095921575989136588898", SubSequenceNumber: 3}
	h, err = s.Checkpoint(ctx, h, cp, nil)
	mustNil(t, err, "checkpoint")
	if h.Counter != 3 || h.Checkpoint != cp || h.OwnerSwitchesSinceCheckpoint != 0 {
		t.Fatalf("checkpointed %+v", h)
	}
	h, err = s.Checkpoint(ctx, h, Checkpoint{SequenceNumber: CheckpointShardEnd}, []string{"c2", "c1"})
	mustNil(t, err, "shard end")
	if !reflect.DeepEqual(h.ChildShardIDs, []string{"c1", "c2"}) {
		t.Fatalf("children %v", h.ChildShardIDs)
	}
	mustNil(t, s.Release(ctx, h), "release")
	got, _ := s.Get(ctx, "k")
	if got.Owner != "" || got.Counter != 5 || !got.Checkpoint.IsShardEnd() {
		t.Fatalf("released %+v", got)
	}
	if err := s.Release(ctx, h); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("second release: %v", err)
	}
}

func contractStaleWritesAreLost(t *testing.T, s Store) {
	ctx := context.Background()
	mustNil(t, s.Create(ctx, Lease{Key: "k"}), "create")
	seen, _ := s.Get(ctx, "k")
	h, _ := s.Take(ctx, seen, "a", TakeOptions{})
	newer, err := s.Renew(ctx, h)
	mustNil(t, err, "renew")
	for name, err := range map[string]error{
		"renew":      func() error { _, err := s.Renew(ctx, h); return err }(),
		"checkpoint": func() error { _, err := s.Checkpoint(ctx, h, Checkpoint{SequenceNumber: "1"}, nil); return err }(),
		"release":    s.Release(ctx, h),
	} {
		if !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("%s at a stale counter: %v, want ErrLeaseLost", name, err)
		}
	}
	if got, _ := s.Get(ctx, "k"); got.Counter != newer.Counter {
		t.Fatalf("a refused write changed the row: %+v", got)
	}
	if _, err := s.Renew(ctx, Lease{Key: "missing", Owner: "a", Counter: 1}); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew of a missing row: %v", err)
	}
}

func contractTakeOwnKeepsSwitches(t *testing.T, s Store) {
	ctx := context.Background()
	mustNil(t, s.Create(ctx, Lease{Key: "k"}), "create")
	seen, _ := s.Get(ctx, "k")
	h, _ := s.Take(ctx, seen, "a", TakeOptions{})
	again, err := s.Take(ctx, h, "a", TakeOptions{})
	mustNil(t, err, "take own")
	if again.Counter != 2 || again.OwnerSwitchesSinceCheckpoint != 1 {
		t.Fatalf("taken again by its owner %+v, want counter 2 and no new switch", again)
	}
}

func contractDeleteConditional(t *testing.T, s Store) {
	ctx := context.Background()
	mustNil(t, s.Create(ctx, Lease{Key: "k"}), "create")
	seen, _ := s.Get(ctx, "k")
	h, _ := s.Take(ctx, seen, "a", TakeOptions{})
	if err := s.Delete(ctx, seen); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("delete at a stale counter: %v", err)
	}
	mustNil(t, s.Delete(ctx, h), "delete")
	if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.Delete(ctx, h); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("delete of a missing row: %v", err)
	}
}

func mustNil(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func contractTakeResumesAndIdentity(t *testing.T, s Store) {
	ctx := context.Background()
	mustNil(t, s.Create(ctx, Lease{Key: "k"}), "create")
	seen, _ := s.Get(ctx, "k")
	idA := Identity{Address: "10.0.0.1:7946", Host: "host-a/boot-1", PID: 4242}
	a, err := s.Take(ctx, seen, "a", TakeOptions{Identity: idA})
	mustNil(t, err, "take")
	if a.Holder != idA {
		t.Fatalf("holder %+v, want %+v", a.Holder, idA)
	}
	cp := Checkpoint{SequenceNumber: "49590338271490256608559692538361571095921575989136588898", SubSequenceNumber: 2}
	b, err := s.Take(ctx, a, "b", TakeOptions{Resume: &cp})
	mustNil(t, err, "take with resume")
	if b.Checkpoint != cp || b.Owner != "b" || b.Counter != 2 || b.Holder != (Identity{}) {
		t.Fatalf("taken with resume %+v, want checkpoint %+v and no identity of a left", b, cp)
	}
	got, _ := s.Get(ctx, "k")
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("read back %+v, want %+v", got, b)
	}
	b2, err := s.Take(ctx, b, "b", TakeOptions{Identity: idA})
	mustNil(t, err, "take own")
	mustNil(t, s.Release(ctx, b2), "release")
	if got, _ := s.Get(ctx, "k"); got.Holder != (Identity{}) || got.Owner != "" {
		t.Fatalf("released %+v still says where its owner ran", got)
	}
}
