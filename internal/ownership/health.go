package ownership

import (
	"slices"
	"time"

	"github.com/kinactor/kinactor/cluster"
)

// services lists what a node can be unhealthy on.
var services = []string{ServiceDynamoDB, ServiceKinesis, ServiceProcessor}

// health is this node's own health: what its shards and its own calls say,
// what it published, and what it plans with.
type health struct {
	failing   map[string]time.Time // service → first failure of the node's own calls in a row
	bad       map[string]time.Time // service → unhealthy since
	probing   map[string]bool
	nextProbe map[string]time.Time

	published   cluster.Meta // last meta gossiped
	publishedAt time.Time
	effective   cluster.Meta // this node's meta as the planning uses it (published, settled)
	started     bool
}

func (h *health) init() {
	h.failing = map[string]time.Time{}
	h.bad = map[string]time.Time{}
	h.probing = map[string]bool{}
	h.nextProbe = map[string]time.Time{}
}

// ownMeta is the meta this node should gossip now.
func (m *Machine) ownMeta() cluster.Meta {
	meta := m.cfg.Meta
	meta.App = m.cfg.App
	meta.Draining = m.stopping
	meta.Unhealthy = nil
	for _, s := range services {
		if _, ok := m.health.bad[s]; ok {
			meta.Unhealthy = append(meta.Unhealthy, s)
		}
	}
	meta.Refuse = nil
	for k := range m.refused {
		meta.Refuse = append(meta.Refuse, k)
	}
	slices.Sort(meta.Refuse)
	// memberlist's meta is at most 512 bytes: keep what fits.
	for len(meta.Refuse) > 0 {
		if _, err := meta.Encode(); err == nil {
			break
		}
		meta.Refuse = meta.Refuse[:len(meta.Refuse)-1]
	}
	return meta
}

// opFailed records a failed call of the node's own to a service.
func (m *Machine) opFailed(now time.Time, svc string) {
	if _, ok := m.health.failing[svc]; !ok {
		m.health.failing[svc] = now
	}
}

// opOK records a successful call to a service: the failure streak ends,
// and an unhealthy mark ends unless the node's shards still say otherwise.
func (m *Machine) opOK(now time.Time, svc string) {
	delete(m.health.failing, svc)
	if _, ok := m.health.bad[svc]; ok && svc != ServiceProcessor && !m.allStalledOn(svc) {
		delete(m.health.bad, svc)
	}
}

// allStalledOn: the node runs shards and every one of them is stalled on svc.
func (m *Machine) allStalledOn(svc string) bool {
	if len(m.run) == 0 || len(m.stalled) != len(m.run) {
		return false
	}
	for _, c := range m.stalled {
		if c != svc {
			return false
		}
	}
	return true
}

// markBad makes the node unhealthy on svc from now.
func (m *Machine) markBad(now time.Time, svc string) {
	if _, ok := m.health.bad[svc]; !ok {
		m.health.bad[svc] = now
	}
}

// updateHealth derives the node's health and refusals and publishes its
// meta when it changed.
func (m *Machine) updateHealth(now time.Time, out *effects) {
	h := &m.health
	for _, s := range services {
		cond := m.allStalledOn(s)
		if at, ok := h.failing[s]; ok && now.Sub(at) >= m.cfg.StallTimeout {
			cond = true
		}
		if cond {
			if _, ok := h.bad[s]; !ok {
				out.note(4, "node unhealthy: its shards or its own calls cannot use the service", "service", s)
			}
			m.markBad(now, s)
		} else if at, ok := h.bad[s]; ok && s == ServiceProcessor && now.Sub(at) >= m.cfg.RefusalTTL {
			delete(h.bad, s) // no probe for a processor: try again after a while
		}
	}
	// A stalled shard on a service the node is otherwise healthy on is
	// refused, so that it moves alone.
	for k, cause := range m.stalled {
		if _, bad := h.bad[cause]; bad {
			continue
		}
		if _, ok := m.refused[k]; !ok {
			out.note(4, "shard stalled: refusing it so that another node takes it", "shard", k, "service", cause)
			m.refused[k] = now.Add(m.cfg.RefusalTTL)
			m.refusedFor[k] = cause
		}
	}
	for k, until := range m.refused {
		_, bad := h.bad[m.refusedFor[k]]
		if (!until.IsZero() && !now.Before(until)) || (m.refusedFor[k] != "" && bad) {
			delete(m.refused, k)
			delete(m.refusedFor, k)
		}
	}
	m.publish(now, out)
}

// publish gossips the node's meta if it changed. Health marks take effect
// in this node's own planning only after HealthSettle; draining at once.
func (m *Machine) publish(now time.Time, out *effects) {
	h := &m.health
	want := m.ownMeta()
	if !h.started {
		h.started = true
		h.published, h.effective, h.publishedAt = want, want, now
		if m.cfg.Clustered {
			out.add(PublishMeta{Meta: want})
		}
		return
	}
	if want.Equal(h.published) {
		return
	}
	h.published, h.publishedAt = want, now
	if want.Draining != h.effective.Draining {
		h.effective.Draining = want.Draining
		m.assignDirty = true
	}
	if m.cfg.Clustered {
		out.add(PublishMeta{Meta: want})
	}
	m.settle(now)
}

// settle makes the published health marks effective once they have stood
// for HealthSettle.
func (m *Machine) settle(now time.Time) {
	h := &m.health
	if h.effective.Equal(h.published) || now.Sub(h.publishedAt) < m.cfg.HealthSettle {
		return
	}
	h.effective = h.published
	m.assignDirty = true
}

// probe asks for probes of the services the node is unhealthy on.
func (m *Machine) probe(now time.Time, out *effects) {
	h := &m.health
	for _, s := range []string{ServiceDynamoDB, ServiceKinesis} {
		_, bad := h.bad[s]
		_, failing := h.failing[s]
		if (!bad && !failing) || h.probing[s] || now.Before(h.nextProbe[s]) {
			continue
		}
		h.probing[s] = true
		out.add(Probe{Service: s})
	}
}

func (m *Machine) onProbe(now time.Time, e ProbeDone, out *effects) {
	h := &m.health
	h.probing[e.Service] = false
	h.nextProbe[e.Service] = now.Add(m.cfg.ProbeInterval)
	if e.Err != nil {
		m.opFailed(now, e.Service)
		return
	}
	if _, bad := h.bad[e.Service]; bad {
		out.note(0, "service answers again", "service", e.Service)
	}
	m.opOK(now, e.Service)
}
