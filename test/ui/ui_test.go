//go:build ui

package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// chromiumPath is Debian's Chromium, which `make test-ui` installs.
const chromiumPath = "/usr/bin/chromium"

// screenshotEnv, when set, is where the test also copies its screenshot.
const screenshotEnv = "KINACTOR_UI_SCREENSHOT"

// TestStatusPageInBrowser starts three `kinactor node` processes on a
// 4-shard stream with records flowing, waits until every shard is owned,
// then renders one node's status page in headless Chromium and checks the
// DOM: every member, every shard with its owner as the nodes report it,
// numeric lag and records/s, a take among the moves. Another node's page
// must show the same owners (every page shows the whole cluster). Last, a
// screenshot, checked to be a real picture.
func TestStatusPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing (%v): run `make test-ui`, which installs Debian's chromium and runs this test", chromiumPath, err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	type built struct {
		bin string
		err error
	}
	bch := make(chan built, 1)
	go func() {
		bin, err := clusterrun.Build(ctx, dir)
		bch <- built{bin, err}
	}()
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	b := <-bch
	if b.err != nil {
		t.Fatalf("build: %v", b.err)
	}
	kc := env.KinesisClient()
	const streamName, app, shards = "ui-orders", "ui-orders", 4
	localaws.CreateStreamT(t, kc, streamName, shards)

	c, err := clusterrun.Start(ctx, clusterrun.Options{Bin: b.bin, Dir: dir, App: app, Stream: streamName, Nodes: 1, Env: env.Environ()})
	if err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(3000))
			}
		}
	})
	prod := clusterrun.StartProducer(kc, streamName, 16, 40)
	t.Cleanup(func() { _, _ = prod.Stop() })
	if err := c.Grow(ctx, 3, shards, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	nodes := c.Nodes()
	var names []string
	for _, p := range nodes {
		names = append(names, p.Name)
	}

	// Every shard owned once, and the first node's cluster view agrees,
	// with every shard's load measured (records/s past its first sample).
	var owners map[string]string
	checkFor(t, 60*time.Second, func() error {
		live, err := c.Owners(ctx)
		if err != nil {
			return err
		}
		owners = map[string]string{}
		for s, os := range live {
			if len(os) != 1 {
				return fmt.Errorf("shard %s run by %v", s, os)
			}
			owners[s] = os[0]
		}
		if len(owners) != shards {
			return fmt.Errorf("%d of %d shards owned: %v", len(owners), shards, owners)
		}
		cs, err := clusterOf(ctx, nodes[0])
		if err != nil {
			return err
		}
		return viewAgrees(cs, names, owners)
	})
	t.Logf("owners: %v", owners)

	// The first node's page.
	var dom string
	checkFor(t, 60*time.Second, func() error {
		dom = dumpDOM(t, "http://"+nodes[0].HTTP+"/")
		return checkPage(dom, nodes[0].Name, names, owners, true)
	})
	// Another node's page shows the same cluster.
	checkFor(t, 60*time.Second, func() error {
		return checkPage(dumpDOM(t, "http://"+nodes[2].HTTP+"/"), nodes[2].Name, names, owners, false)
	})

	shot := filepath.Join(t.TempDir(), "status-page.png")
	chromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", "http://"+nodes[0].HTTP+"/")
	checkPNG(t, shot, 1280, 900)
	if to := os.Getenv(screenshotEnv); to != "" {
		png, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(to, png, 0o644)
		}
		if err != nil {
			t.Fatalf("%s: %v", screenshotEnv, err)
		}
		t.Logf("screenshot copied to %s (%d bytes)", to, len(png))
	}
}

// clusterOf reads a node's /cluster.
func clusterOf(ctx context.Context, p *clusterrun.Proc) (kinactor.ClusterStatus, error) {
	var cs kinactor.ClusterStatus
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTP+"/cluster", nil)
	if err != nil {
		return cs, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return cs, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return cs, err
	}
	if resp.StatusCode != http.StatusOK {
		return cs, fmt.Errorf("%s /cluster: HTTP %d: %s", p.Name, resp.StatusCode, b)
	}
	return cs, json.Unmarshal(b, &cs)
}

// viewAgrees: the cluster view lists the members and the owners, every
// member read, and every shard processing with its load measured.
func viewAgrees(cs kinactor.ClusterStatus, names []string, owners map[string]string) error {
	var got []string
	for _, m := range cs.Members {
		got = append(got, m.Name)
		if m.StatusError != "" {
			return fmt.Errorf("member %s: %s", m.Name, m.StatusError)
		}
	}
	if !slices.Equal(got, names) {
		return fmt.Errorf("members %v, want %v", got, names)
	}
	if len(cs.Shards) != len(owners) {
		return fmt.Errorf("%d shards in the view, want %d", len(cs.Shards), len(owners))
	}
	for _, s := range cs.Shards {
		switch {
		case s.Owner != owners[s.Shard]:
			return fmt.Errorf("shard %s: owner %q in the view, %q runs it", s.Shard, s.Owner, owners[s.Shard])
		case s.State != kinactor.ShardProcessing || s.Conflict != "":
			return fmt.Errorf("shard %s: %s %s", s.Shard, s.State, s.Conflict)
		case !s.Measured:
			return fmt.Errorf("shard %s: load not measured yet", s.Shard)
		}
	}
	return nil
}

var (
	rowRe     = regexp.MustCompile(`(?s)<tr\b([^>]*)>(.*?)</tr>`)
	attrRe    = regexp.MustCompile(`([a-z-]+)="([^"]*)"`)
	numericRe = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
)

// table returns the rows of the page's table id: each row's attributes
// and inner HTML.
func table(dom, id string) ([]map[string]string, []string, error) {
	i := strings.Index(dom, `<table id="`+id+`"`)
	if i < 0 {
		return nil, nil, fmt.Errorf("no table %q in the page", id)
	}
	end := strings.Index(dom[i:], "</table>")
	if end < 0 {
		return nil, nil, fmt.Errorf("table %q not closed", id)
	}
	body := dom[i : i+end]
	if j := strings.Index(body, "<tbody>"); j >= 0 {
		body = body[j:]
	}
	var attrs []map[string]string
	var inner []string
	for _, m := range rowRe.FindAllStringSubmatch(body, -1) {
		a := map[string]string{}
		for _, kv := range attrRe.FindAllStringSubmatch(m[1], -1) {
			a[kv[1]] = kv[2]
		}
		attrs, inner = append(attrs, a), append(inner, m[2])
	}
	return attrs, inner, nil
}

// cell is the text of the row's cell with class cls.
func cell(row, cls string) string {
	m := regexp.MustCompile(`<td class="[^"]*\b` + cls + `\b[^"]*"[^>]*>([^<]*)</td>`).FindStringSubmatch(row)
	if m == nil {
		return ""
	}
	return m[1]
}

// checkPage checks a rendered page: served by self, every member, every
// shard with its owner and numeric lag and records/s, and (moves) a take.
func checkPage(dom, self string, names []string, owners map[string]string, moves bool) error {
	if !strings.Contains(dom, `id="served-by">`+self+`<`) {
		return fmt.Errorf("the page does not say it is served by %s", self)
	}
	if m := regexp.MustCompile(`<div id="banner"[^>]*>([^<]+)<`).FindStringSubmatch(dom); m != nil {
		return fmt.Errorf("error banner: %s", m[1])
	}
	ms, _, err := table(dom, "members")
	if err != nil {
		return err
	}
	var got []string
	for _, a := range ms {
		got = append(got, a["data-member"])
	}
	if !slices.Equal(got, names) {
		return fmt.Errorf("members shown %v, want %v", got, names)
	}
	ss, rows, err := table(dom, "shards")
	if err != nil {
		return err
	}
	seen := map[string]string{}
	for i, a := range ss {
		s := a["data-shard"]
		seen[s] = a["data-owner"]
		if owners[s] == "" {
			return fmt.Errorf("shard %s shown, not in the cluster %v", s, owners)
		}
		if lag, rps := cell(rows[i], "c-lag"), cell(rows[i], "c-rps"); !numericRe.MatchString(lag) || !numericRe.MatchString(rps) {
			return fmt.Errorf("shard %s: lag %q, records/s %q: want numbers", s, lag, rps)
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(owners) {
		return fmt.Errorf("owners shown %v, the nodes say %v", seen, owners)
	}
	if moves {
		mv, _, err := table(dom, "moves")
		if err != nil {
			return err
		}
		take := false
		for _, a := range mv {
			take = take || a["data-kind"] == "take"
		}
		if !take {
			return fmt.Errorf("no move of kind take among %d moves", len(mv))
		}
	}
	return nil
}

// dumpDOM renders url and returns the DOM after 5 s of virtual time.
func dumpDOM(t *testing.T, url string) string {
	t.Helper()
	return string(chromium(t, "--dump-dom", url))
}

// chromium runs headless Chromium with args and returns its stdout. Its
// process group is killed when it exits or after 90 s, so that no helper
// process outlives it.
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000"}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	pid := cmd.Process.Pid
	err = cmd.Wait()
	_ = syscall.Kill(-pid, syscall.SIGKILL) // leftovers of its group, if any
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 3000))
	}
	return stdout.Bytes()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// checkPNG: the file is a PNG of the window's size, and not of one colour.
func checkPNG(t *testing.T, path string, w, h int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("screenshot is %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	colours := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, bl, a}] = true
		}
	}
	if len(colours) < 16 {
		t.Errorf("screenshot has %d colours: not a rendered page", len(colours))
	}
	st, _ := os.Stat(path)
	t.Logf("screenshot %s: %dx%d, %d bytes, %d colours sampled", path, b.Dx(), b.Dy(), st.Size(), len(colours))
}

// checkFor polls f every 200 ms until it returns nil, or fails the test
// with f's last error after total.
func checkFor(t *testing.T, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", total, err)
		}
		<-time.After(200 * time.Millisecond)
	}
}
