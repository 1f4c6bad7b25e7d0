package clusterrun

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/putrecords"
)

// Producer writes records {"pk":"kK","n":N} round-robin over keys k0..k{K-1}
// at a rate, N counting from 1 per key, and counts per key what was
// written, so a verifier knows exactly what to expect in the ledgers.
//
// Per-key order holds: a PutRecords call carries at most one record per key
// (at most Keys records), and the records it reports as failed are resent,
// in order, before the next call (putrecords.Writer).
type Producer struct {
	kc     *kinesis.Client
	stream string
	keys   int
	rate   float64

	mu       sync.Mutex
	produced map[string]int // written successfully, per key
	// written[pk][n-1]: when the PutRecords call that wrote (pk, n)
	// began, in Unix ms (an upper bound on how long a record waited).
	written map[string][]int64
	total   int
	errs    int // failed calls (retried)
	lastErr error

	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// StartProducer starts writing rate records per second (keys ≥ 1) to
// stream until Stop.
func StartProducer(kc *kinesis.Client, stream string, keys int, rate float64) *Producer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Producer{kc: kc, stream: stream, keys: max(keys, 1), rate: rate,
		produced: map[string]int{}, written: map[string][]int64{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = p.run(ctx)
	}()
	return p
}

func (p *Producer) run(ctx context.Context) error {
	const tick = 100 * time.Millisecond
	// The writer does not watch Stop (it is given no ctx that ends): a
	// batch is either written completely or the producer fails, so the
	// counts are exact.
	w := putrecords.Writer{Client: p.kc, Stream: p.stream, MaxAttempts: 50, RetryCalls: true, CallTimeout: 10 * time.Second,
		OnFailure: func(err error) {
			p.mu.Lock()
			p.errs++
			p.lastErr = err
			p.mu.Unlock()
		}}
	records := putrecords.NewNumbered(p.keys, 1)
	began := time.Now()
	sent := 0
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		due := int(time.Since(began).Seconds() * p.rate)
		for sent < due && ctx.Err() == nil {
			entries := records.Next(min(due-sent, p.keys)) // at most one per key
			at := time.Now().UnixMilli()
			if _, err := w.Put(context.Background(), entries); err != nil {
				return fmt.Errorf("clusterrun: producer: %w", err)
			}
			p.add(entries, at)
			sent += len(entries)
		}
	}
}

func (p *Producer) add(entries []types.PutRecordsRequestEntry, at int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range entries {
		pk := aws.ToString(e.PartitionKey)
		p.produced[pk]++
		p.written[pk] = append(p.written[pk], at)
		p.total++
	}
}

// Written returns, per key, when each record was written (index n-1, Unix
// ms at the start of the PutRecords call that wrote it).
func (p *Producer) Written() map[string][]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string][]int64, len(p.written))
	for k, v := range p.written {
		m[k] = slices.Clone(v)
	}
	return m
}

// Produced returns the records written so far per key and in total.
func (p *Producer) Produced() (map[string]int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.produced), p.total
}

// Errors returns how many PutRecords calls failed (they were retried) and
// the last error.
func (p *Producer) Errors() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs, p.lastErr
}

// Stop stops writing, waits for the call in flight, and returns what was
// written per key and the error that stopped the producer early, if any.
func (p *Producer) Stop() (map[string]int, error) {
	p.cancel()
	<-p.done
	m, _ := p.Produced()
	return m, p.err
}

// Done is closed when the producer has stopped (by Stop or an error).
func (p *Producer) Done() <-chan struct{} { return p.done }
