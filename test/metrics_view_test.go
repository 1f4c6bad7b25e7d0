package test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kinactor/kinactor"
)

// metricsView is a node's /metrics as scraped through Node.Handler, the
// way an operator's Prometheus sees it.
type metricsView map[string]*dto.MetricFamily

func scrape(t testing.TB, n *kinactor.Node) metricsView {
	t.Helper()
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", rec.Code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return fams
}

// sum adds the values of the series of name whose labels include labels
// (name=value pairs); counters and gauges.
func (v metricsView) sum(name string, labels ...string) float64 {
	f := v[name]
	if f == nil {
		return 0
	}
	total := 0.0
outer:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue outer
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		}
	}
	return total
}

// hist returns the sample count and sum of a histogram without labels.
func (v metricsView) hist(name string) (uint64, float64) {
	f := v[name]
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, 0
	}
	h := f.GetMetric()[0].GetHistogram()
	return h.GetSampleCount(), h.GetSampleSum()
}
