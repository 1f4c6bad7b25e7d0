// Package backoff computes capped exponential backoff with equal jitter:
// attempt n waits a random time between half and all of min(Cap, Base·2^(n-1)),
// so delays grow but never collapse to zero. It is pure: the caller supplies
// the attempt number and the random source, so delays are reproducible in
// tests.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff: attempt n (1-based) waits a random
// duration in [Base*2^(n-1)/2, min(Cap, Base*2^(n-1))] ("equal jitter"), so
// the delay grows but never collapses to zero and never exceeds Cap.
type Policy struct {
	Base time.Duration // delay ceiling of the first attempt; must be > 0
	Cap  time.Duration // upper bound of any delay; must be >= Base
}

// Ceiling is the un-jittered upper bound for attempt n (n < 1 is treated as 1).
func (p Policy) Ceiling(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	d := p.Base
	for i := 1; i < n; i++ {
		d *= 2
		if d >= p.Cap || d <= 0 { // d <= 0: overflow
			return p.Cap
		}
	}
	if d > p.Cap {
		return p.Cap
	}
	return d
}

// Delay returns the jittered delay for attempt n using r (nil: the global
// source). The result lies in [Ceiling(n)/2, Ceiling(n)].
func (p Policy) Delay(n int, r *rand.Rand) time.Duration {
	c := p.Ceiling(n)
	half := c / 2
	if half <= 0 {
		return c
	}
	var j int64
	if r != nil {
		j = r.Int64N(int64(c-half) + 1)
	} else {
		j = rand.Int64N(int64(c-half) + 1)
	}
	return half + time.Duration(j)
}

// Sleep waits for d or until ctx ends, whichever comes first, and returns
// ctx's error in the second case (also at once when d ≤ 0 and ctx ended).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
