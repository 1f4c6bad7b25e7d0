package ownership

import (
	"container/heap"
	"time"
)

// expiryTracker keeps, per shard, the owner and counter last observed and
// since when (this node's monotonic clock) they have stood still, and a heap
// of deadlines at which a shard must be looked at again. It never compares
// wall clocks across hosts: every time in it is a local time.Now() reading
// taken when an observation arrived (a read of the table or a heartbeat).
type expiryTracker struct {
	obs  map[string]observation
	due  deadlines
	seq  uint64
	live map[string]deadline // key → its earliest pending deadline
}

type observation struct {
	owner   string
	counter int64
	since   time.Time
	seen    time.Time // the last observation (news or not)
}

func newExpiryTracker() *expiryTracker {
	return &expiryTracker{obs: map[string]observation{}, live: map[string]deadline{}}
}

// observe records that key was seen with owner at counter at now, and
// reports whether that is news (owner or counter changed, or first sight):
// then the standstill starts again at now.
//
// The tracker never goes backwards on gossip: an observation with a lower
// counter than the one held (a delayed heartbeat, a late release) is
// dropped. authority marks a read of the table that began after the last
// gossip news of the row arrived: it replaces the observation even with a
// lower counter, since rows can be deleted and created again, and a wrong
// word (a release at counter 500 of a row held at 5) must not stop the
// lease from ever expiring.
func (t *expiryTracker) observe(key, owner string, counter int64, now time.Time, authority bool) bool {
	o, ok := t.obs[key]
	if ok && o.owner == owner && o.counter == counter {
		o.seen = now
		t.obs[key] = o
		return false
	}
	if ok && counter < o.counter && !authority {
		return false // an older observation arriving late (a delayed heartbeat)
	}
	t.obs[key] = observation{owner: owner, counter: counter, since: now, seen: now}
	return true
}

// seenAgo returns how long ago key was last observed (a read of the
// table, a heartbeat, a write of ours), news or not.
func (t *expiryTracker) seenAgo(key string, now time.Time) (time.Duration, bool) {
	o, ok := t.obs[key]
	if !ok {
		return 0, false
	}
	return now.Sub(o.seen), true
}

// still returns for how long key has stood still at (owner, counter) as of
// now, or false when the last observation differs.
func (t *expiryTracker) still(key, owner string, counter int64, now time.Time) (time.Duration, bool) {
	o, ok := t.obs[key]
	if !ok || o.owner != owner || o.counter != counter {
		return 0, false
	}
	return now.Sub(o.since), true
}

// since returns when the current observation of key began.
func (t *expiryTracker) since(key string) (time.Time, bool) {
	o, ok := t.obs[key]
	return o.since, ok
}

// forget drops key.
func (t *expiryTracker) forget(key string) {
	delete(t.obs, key)
	delete(t.live, key)
}

// wake asks for key to be looked at again no later than at. A key has at
// most one pending deadline, the earliest asked for: whoever handles it
// looks at the key afresh and asks again if need be, so deadlines that move
// later (a standstill that starts again) cost nothing until they come.
func (t *expiryTracker) wake(key string, at time.Time) {
	if d, ok := t.live[key]; ok && !at.Before(d.at) {
		return
	}
	t.seq++
	d := deadline{at: at, key: key, seq: t.seq}
	t.live[key] = d
	heap.Push(&t.due, d)
}

// dueBy pops the keys whose deadline has come by now.
func (t *expiryTracker) dueBy(now time.Time, fn func(key string)) {
	for len(t.due) > 0 && !t.due[0].at.After(now) {
		d := heap.Pop(&t.due).(deadline)
		if t.live[d.key].seq != d.seq {
			continue // superseded by an earlier deadline
		}
		delete(t.live, d.key)
		fn(d.key)
	}
}

type deadline struct {
	at  time.Time
	key string
	seq uint64
}

type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at.Before(d[j].at) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	n := len(old)
	x := old[n-1]
	*d = old[:n-1]
	return x
}
