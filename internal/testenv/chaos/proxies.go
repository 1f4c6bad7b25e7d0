package chaos

import (
	"fmt"
	"slices"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/testenv/faultproxy"
)

// nodeProxies are one node's own Kinesis and DynamoDB fault proxies: the
// node's AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL_DYNAMODB. A
// whole-service fault is set on every node's proxy of that service; a cut
// or a node's ambiguous fault on one node's.
type nodeProxies struct {
	kin, ddb *faultproxy.Proxy
}

func (np *nodeProxies) of(svc faultproxy.Service) *faultproxy.Proxy {
	if svc == faultproxy.Kinesis {
		return np.kin
	}
	return np.ddb
}

func (np *nodeProxies) set(svc faultproxy.Service, f faultproxy.Faults) { np.of(svc).Set(f) }

// nodeEnv starts the proxies of a node about to start (clusterrun's
// NodeEnv) with the whole-service faults in force, and returns its
// endpoints. The proxies' seeds follow the order nodes start in, so the
// same scenario gives the same proxy decisions.
func (r *runner) nodeEnv(name string) ([]string, error) {
	r.mu.Lock()
	i := uint64(len(r.proxyOrder))
	r.mu.Unlock()
	kin, err := faultproxy.Start(faultproxy.Kinesis, r.kinURL, r.s.Seed+2*i)
	if err != nil {
		return nil, err
	}
	ddb, err := faultproxy.Start(faultproxy.DynamoDB, r.ddbURL, r.s.Seed+2*i+1)
	if err != nil {
		_ = kin.Close()
		return nil, err
	}
	np := &nodeProxies{kin: kin, ddb: ddb}
	r.mu.Lock()
	r.proxies[name] = np
	r.proxyOrder = append(r.proxyOrder, name)
	kin.Set(r.svcFaults[faultproxy.Kinesis])
	ddb.Set(r.svcFaults[faultproxy.DynamoDB])
	r.mu.Unlock()
	return []string{"AWS_ENDPOINT_URL_KINESIS=" + kin.URL, "AWS_ENDPOINT_URL_DYNAMODB=" + ddb.URL}, nil
}

// proxiesOf returns a node's proxies (nil if it has none).
func (r *runner) proxiesOf(name string) *nodeProxies {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proxies[name]
}

// setServiceFaults sets f on every node's proxy of svc, and on those of
// nodes that start later.
func (r *runner) setServiceFaults(svc faultproxy.Service, f faultproxy.Faults) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.svcFaults[svc] = f
	for _, np := range r.proxies {
		np.set(svc, f)
	}
}

func (r *runner) serviceFaults(svc faultproxy.Service) faultproxy.Faults {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svcFaults[svc]
}

func (r *runner) closeProxies() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, np := range r.proxies {
		_ = np.kin.Close()
		_ = np.ddb.Close()
	}
}

// proxyCounts sums what every node's proxies of each service did.
func (r *runner) proxyCounts() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := map[string]*faultproxy.Counts{"kinesis": {}, "dynamodb": {}}
	for _, np := range r.proxies {
		for name, p := range map[string]*faultproxy.Proxy{"kinesis": np.kin, "dynamodb": np.ddb} {
			c, s := p.Counts(), sum[name]
			s.Requests += c.Requests
			s.Throttled += c.Throttled
			s.Errored += c.Errored
			s.Delayed += c.Delayed
			s.Held += c.Held
			s.Ambiguous += c.Ambiguous
		}
	}
	out := map[string]string{}
	for name, c := range sum {
		out[name] = fmt.Sprintf("%d requests, %d throttled, %d errors, %d delayed, %d held, %d ambiguous (%d proxies)",
			c.Requests, c.Throttled, c.Errored, c.Delayed, c.Held, c.Ambiguous, len(r.proxies))
	}
	return out
}

// nodeWrites returns, per node, the lease-table writes its DynamoDB proxy
// passed a success on, for the verifier.
func (r *runner) nodeWrites() map[string][]Write {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]Write{}
	for name, np := range r.proxies {
		ws := []Write{}
		for _, w := range np.ddb.Writes() {
			ws = append(ws, toWrite(w))
		}
		out[name] = ws
	}
	return out
}

func toWrite(w faultproxy.Write) Write {
	owner := slices.Contains(w.Sets, lease.AttrLeaseOwner)
	return Write{At: w.At, Shard: w.Key,
		Take:       w.Op == "UpdateItem" && owner,
		Checkpoint: w.Op == "UpdateItem" && !owner && slices.Contains(w.Sets, lease.AttrCheckpoint)}
}
