package lease

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemStore is an in-memory Store with the fencing semantics of DynamoStore:
// the same conditions on owner and counter, the same sentinel errors, the
// same rows as written (contract_test.go holds both to one set of cases,
// DynamoStore against DynamoDB Local). It is for fast tests of the actor
// shells; it is safe for concurrent use (SetFail included).
type MemStore struct {
	mu     sync.Mutex
	rows   map[string]Lease
	failFn func(op, key string) error
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{rows: map[string]Lease{}} }

// SetFail injects faults: f, when not nil, is called before every
// operation with its name (OpCreate, ..., "get", "list") and the key; a
// non-nil error is returned instead of doing it. It may be set while the
// store is in use.
func (s *MemStore) SetFail(f func(op, key string) error) {
	s.mu.Lock()
	s.failFn = f
	s.mu.Unlock()
}

func (s *MemStore) fail(op, key string) error {
	s.mu.Lock()
	f := s.failFn
	s.mu.Unlock()
	if f != nil {
		return f(op, key)
	}
	return nil
}

func clone(l Lease) Lease {
	l.ParentShardIDs = slices.Clone(l.ParentShardIDs)
	l.ChildShardIDs = slices.Clone(l.ChildShardIDs)
	return l
}

// EnsureTable does nothing: the table always exists.
func (s *MemStore) EnsureTable(context.Context) error { return nil }

// Create writes a new free row at counter 0.
func (s *MemStore) Create(ctx context.Context, l Lease) error {
	if err := checkKey(l.Key); err != nil {
		return err
	}
	if err := s.fail(OpCreate, l.Key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.rows[l.Key]; ok {
		return fmt.Errorf("%s %s: %w", OpCreate, l.Key, ErrExists)
	}
	row := Lease{Key: l.Key, Checkpoint: l.Checkpoint, ParentShardIDs: setOf(l.ParentShardIDs), ChildShardIDs: setOf(l.ChildShardIDs),
		StartingHashKey: l.StartingHashKey, EndingHashKey: l.EndingHashKey}
	if row.Checkpoint.SequenceNumber == "" {
		row.Checkpoint.SequenceNumber = CheckpointTrimHorizon
	}
	s.rows[l.Key] = row
	return nil
}

// setOf is how a string set reads back: distinct, sorted, nil when empty.
func setOf(ids []string) []string {
	var out []string
	for _, id := range ids {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Get returns one row.
func (s *MemStore) Get(ctx context.Context, key string) (Lease, error) {
	if err := s.fail("get", key); err != nil {
		return Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.rows[key]
	if !ok {
		return Lease{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	return clone(l), nil
}

// List returns every row, by key.
func (s *MemStore) List(ctx context.Context) ([]Lease, error) {
	if err := s.fail("list", ""); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Lease, 0, len(s.rows))
	for _, l := range s.rows {
		out = append(out, clone(l))
	}
	slices.SortFunc(out, func(a, b Lease) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	return out, nil
}

// Take makes owner the holder if the row's counter and owner are still seen's.
func (s *MemStore) Take(ctx context.Context, seen Lease, owner string, opts TakeOptions) (Lease, error) {
	if err := checkKey(seen.Key); err != nil {
		return Lease{}, err
	}
	if owner == "" {
		return Lease{}, fmt.Errorf("take %s: empty owner", seen.Key)
	}
	if err := s.fail(OpTake, seen.Key); err != nil {
		return Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.rows[seen.Key]
	if !ok || l.Counter != seen.Counter || l.Owner != seen.Owner {
		return Lease{}, fmt.Errorf("%s %s: %w", OpTake, seen.Key, ErrLeaseLost)
	}
	if opts.Resume != nil && opts.Resume.SequenceNumber == "" {
		return Lease{}, fmt.Errorf("take %s: empty resume sequence number", seen.Key)
	}
	if owner != l.Owner {
		l.OwnerSwitchesSinceCheckpoint++
	}
	l.Owner = owner
	l.Counter++
	l.Holder = opts.Identity
	if opts.Resume != nil {
		l.Checkpoint = *opts.Resume
	}
	s.rows[seen.Key] = l
	return clone(l), nil
}

// held checks the fencing condition: the row says owner = held.Owner and
// counter = held.Counter. Called with mu held.
func (s *MemStore) held(op string, held Lease) (Lease, error) {
	if err := checkHeld(op, held); err != nil {
		return Lease{}, err
	}
	l, ok := s.rows[held.Key]
	if !ok || l.Owner != held.Owner || l.Counter != held.Counter {
		return Lease{}, fmt.Errorf("%s %s: %w", op, held.Key, ErrLeaseLost)
	}
	return l, nil
}

// Renew increments the counter of a held lease.
func (s *MemStore) Renew(ctx context.Context, held Lease) (Lease, error) {
	if err := s.fail(OpRenew, held.Key); err != nil {
		return Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.held(OpRenew, held)
	if err != nil {
		return Lease{}, err
	}
	l.Counter++
	s.rows[held.Key] = l
	return clone(l), nil
}

// Checkpoint records cp (and children) on a held lease.
func (s *MemStore) Checkpoint(ctx context.Context, held Lease, cp Checkpoint, children []string) (Lease, error) {
	if cp.SequenceNumber == "" {
		return Lease{}, fmt.Errorf("checkpoint %s: empty sequence number", held.Key)
	}
	if err := s.fail(OpCheckpoint, held.Key); err != nil {
		return Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.held(OpCheckpoint, held)
	if err != nil {
		return Lease{}, err
	}
	l.Counter++
	l.Checkpoint = cp
	l.OwnerSwitchesSinceCheckpoint = 0
	if kids := setOf(children); kids != nil {
		l.ChildShardIDs = kids
	}
	s.rows[held.Key] = l
	return clone(l), nil
}

// Release removes the owner of a held lease and increments the counter.
func (s *MemStore) Release(ctx context.Context, held Lease) error {
	if err := s.fail(OpRelease, held.Key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.held(OpRelease, held)
	if err != nil {
		return err
	}
	l.Owner = ""
	l.Holder = Identity{}
	l.Counter++
	s.rows[held.Key] = l
	return nil
}

// Delete removes a row whose counter is still seen's.
func (s *MemStore) Delete(ctx context.Context, seen Lease) error {
	if err := checkKey(seen.Key); err != nil {
		return err
	}
	if err := s.fail(OpDelete, seen.Key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.rows[seen.Key]
	if !ok || l.Counter != seen.Counter {
		return fmt.Errorf("%s %s: %w", OpDelete, seen.Key, ErrLeaseLost)
	}
	delete(s.rows, seen.Key)
	return nil
}
