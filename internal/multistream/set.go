package multistream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/stream"
)

// Describer is the call that resolves a stream name to its ID.
type Describer interface {
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
}

// Resolve returns the ID of the stream named name: the account from its
// ARN, the epoch from its creation time.
func Resolve(ctx context.Context, api Describer, name string) (ID, error) {
	out, err := api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	if err != nil {
		return ID{}, fmt.Errorf("describing stream %q: %w", name, stream.Classify(err))
	}
	d := out.StreamDescriptionSummary
	if d == nil || d.StreamARN == nil || d.StreamCreationTimestamp == nil {
		return ID{}, fmt.Errorf("describing stream %q: the answer has no ARN or creation time", name)
	}
	a, err := arn.Parse(*d.StreamARN)
	if err != nil {
		return ID{}, fmt.Errorf("stream %q: ARN %q: %w", name, *d.StreamARN, err)
	}
	id := ID{Account: a.AccountID, Name: name, Epoch: d.StreamCreationTimestamp.Unix()}
	if _, err := ParseID(id.String()); err != nil {
		return ID{}, fmt.Errorf("stream %q: %w", name, err)
	}
	return id, nil
}

// Set reads the shards of several streams through one interface whose
// shard ids are multi-stream lease keys: ListShards lists every stream of
// the set (an error on any of them fails the listing, so that no row is
// judged gone from a partial one), Iterator routes a key to its stream,
// and the iterators it returns carry their stream, so GetRecords needs
// nothing else. Its methods are safe for concurrent use with Update.
type Set struct {
	api stream.API

	mu      sync.RWMutex
	clients map[string]*stream.Client // by ID.String()
	specs   map[string]Resolved
	order   []string
}

// NewSet returns an empty set reading through api.
func NewSet(api stream.API) *Set {
	return &Set{api: api, clients: map[string]*stream.Client{}}
}

// Update makes streams the set.
func (s *Set) Update(streams []Resolved) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]*stream.Client, len(streams))
	specs := make(map[string]Resolved, len(streams))
	order := make([]string, 0, len(streams))
	for _, r := range streams {
		k := r.ID.String()
		if _, dup := next[k]; dup {
			continue
		}
		c := s.clients[k]
		if c == nil {
			c = stream.NewClient(s.api, r.ID.Name, "")
		}
		next[k], specs[k] = c, r
		order = append(order, k)
	}
	slices.Sort(order)
	s.clients, s.specs, s.order = next, specs, order
}

// Resolved lists the set's streams, by id.
func (s *Set) Resolved() []Resolved {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Resolved, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, s.specs[k])
	}
	return out
}

// IDs lists the set's stream ids, sorted.
func (s *Set) IDs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.order)
}

func (s *Set) client(streamID string) (*stream.Client, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.clients[streamID]
	return c, ok
}

// ListShards lists the shards of every stream, their ids and parents as
// lease keys.
func (s *Set) ListShards(ctx context.Context) ([]stream.Shard, error) {
	var all []stream.Shard
	for _, sid := range s.IDs() {
		c, ok := s.client(sid)
		if !ok {
			continue // removed meanwhile
		}
		shards, err := c.ListShards(ctx)
		if err != nil {
			return nil, err // names the stream
		}
		for _, sh := range shards {
			all = append(all, keyed(sid, sh))
		}
	}
	return all, nil
}

// keyed turns the ids of a shard of stream sid into lease keys.
func keyed(sid string, sh stream.Shard) stream.Shard {
	k := func(id string) string {
		if id == "" {
			return ""
		}
		return sid + ":" + id
	}
	sh.ID = k(sh.ID)
	sh.ParentShardID = k(sh.ParentShardID)
	sh.AdjacentParentShardID = k(sh.AdjacentParentShardID)
	return sh
}

// iteratorSep separates the stream id from the server's iterator; neither
// a stream id nor a Kinesis iterator (base64) contains it.
const iteratorSep = "|"

// ErrNotInSet is returned for a key of a stream not in the set.
var ErrNotInSet = errors.New("multistream: the stream is not in the set")

// Iterator returns an iterator for the shard named by key.
func (s *Set) Iterator(ctx context.Context, key string, pos stream.Position) (string, error) {
	id, shard, ok := ParseKey(key)
	if !ok {
		return "", fmt.Errorf("multistream: %q is not a multi-stream lease key", key)
	}
	c, ok := s.client(id.String())
	if !ok {
		return "", fmt.Errorf("%w: shard %s of %s", ErrNotInSet, shard, id)
	}
	it, err := c.Iterator(ctx, shard, pos)
	if err != nil {
		return "", err
	}
	return id.String() + iteratorSep + it, nil
}

// GetRecords reads at an iterator this Set returned.
func (s *Set) GetRecords(ctx context.Context, iterator string, limit int32) (stream.Batch, error) {
	sid, it, ok := strings.Cut(iterator, iteratorSep)
	if !ok {
		return stream.Batch{}, errors.New("multistream: GetRecords: not an iterator of this set")
	}
	c, ok := s.client(sid)
	if !ok {
		// Removed from the set since: the server's iterator still works
		// (any client of the account reads it), so the shard can finish
		// its graceful release.
		c = stream.NewClient(s.api, "", "")
	}
	b, err := c.GetRecords(ctx, it, limit)
	if err != nil {
		return b, err
	}
	if b.NextIterator != "" {
		b.NextIterator = sid + iteratorSep + b.NextIterator
	}
	for i, ch := range b.ChildShards {
		b.ChildShards[i] = keyed(sid, ch)
	}
	return b, nil
}

// Spec is a stream of the set as configured: its name and the initial
// position of its new shards ("" for the application's default).
type Spec struct {
	Name            string
	InitialPosition string
}

// Resolved is a Spec with its ID.
type Resolved struct {
	Spec
	ID ID
}

// Resolver resolves names to IDs once each (a stream's ID never changes
// while it exists; a stream deleted and created again under its name is
// seen as another one only after Forget).
type Resolver struct {
	API Describer
	mu  sync.Mutex
	ids map[string]ID
}

// Resolve resolves each spec, in order; the first error is returned with
// the specs resolved so far.
func (r *Resolver) Resolve(ctx context.Context, specs []Spec) ([]Resolved, error) {
	out := make([]Resolved, 0, len(specs))
	for _, sp := range specs {
		r.mu.Lock()
		id, ok := r.ids[sp.Name]
		r.mu.Unlock()
		if !ok {
			var err error
			if id, err = Resolve(ctx, r.API, sp.Name); err != nil {
				return out, err
			}
			r.mu.Lock()
			if r.ids == nil {
				r.ids = map[string]ID{}
			}
			r.ids[sp.Name] = id
			r.mu.Unlock()
		}
		out = append(out, Resolved{Spec: sp, ID: id})
	}
	return out, nil
}

// Forget drops what is known of names not in keep.
func (r *Resolver) Forget(keep []Spec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := range r.ids {
		if !slices.ContainsFunc(keep, func(s Spec) bool { return s.Name == n }) {
			delete(r.ids, n)
		}
	}
}
