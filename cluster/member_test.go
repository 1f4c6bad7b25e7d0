package cluster

import (
	"encoding/json"
	"strings"
	"testing"
)

// A member's state travels as a word and reads back as the same state; an
// unknown word is an error that names it.
func TestMemberStateJSON(t *testing.T) {
	for s := StateAlive; s <= StateLeft; s++ {
		in := Member{Name: "n1", Addr: "127.0.0.1:7946", State: s, Meta: Meta{Weight: 2, Version: "v"}}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"state":"`+s.String()+`"`) {
			t.Errorf("%v written as %s", s, b)
		}
		var out Member
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		if !out.Meta.Equal(in.Meta) || out.Name != in.Name || out.Addr != in.Addr || out.State != in.State {
			t.Errorf("read back %+v, wrote %+v", out, in)
		}
	}
	var m Member
	err := json.Unmarshal([]byte(`{"name":"n1","state":"zombie"}`), &m)
	if err == nil || !strings.Contains(err.Error(), `"zombie"`) {
		t.Errorf("unknown state: err %v, want one naming \"zombie\"", err)
	}
	if _, err := json.Marshal(Member{State: 7}); err == nil {
		t.Error("an invalid state was written")
	}
}
