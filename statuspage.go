package kinactor

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strings"
)

// statusPage is the status page: one HTML file, its CSS and JS inline, no
// external assets. It polls /cluster every second.
//
//go:embed statuspage/index.html
var statusPage string

// initialMarker is where the page takes the first snapshot, so that it
// renders without waiting for its first fetch.
const initialMarker = "/*INITIAL*/null"

// pageCSP keeps the page to itself: its inline script and style, and
// requests to its own origin only.
const pageCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"

func init() {
	if !strings.Contains(statusPage, initialMarker) {
		panic("kinactor: statuspage/index.html lacks the initial snapshot marker")
	}
}

// servePage serves the status page with the cluster view inlined.
func (n *Node) servePage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	cs := n.view.get(r.Context(), n.ClusterStatus)
	// json.Marshal escapes <, > and &: the snapshot cannot end the script.
	b, err := json.Marshal(cs)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = strings.NewReplacer(initialMarker, string(b)).WriteString(w, statusPage)
}

// serveCluster serves the cluster view as JSON.
func (n *Node) serveCluster(w http.ResponseWriter, r *http.Request) {
	cs := n.view.get(r.Context(), n.ClusterStatus)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(cs)
}
