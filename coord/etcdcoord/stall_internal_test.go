package etcdcoord

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvstore/kvstore/etcdembed"
	"github.com/kvstore/kvstore/internal/soon"
)

// TestWatchStreamNotesItsMember checks what a stuck watch relies on to mark
// its member: the etcd client opens a watch's stream with a context that
// keeps the watch's values, so the picker records the member in the
// watch's pickNote.
func TestWatchStreamNotesItsMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := etcdembed.DefaultConfig()
	cfg.Dir = t.TempDir()
	srv, err := etcdembed.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := New(ctx, Config{Endpoints: []string{srv.ClientURL()}, Prefix: "/notes/"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	wctx, note := withPickNote(wctx)
	wch := c.client.Watch(ownStream(wctx), "/notes/k", clientv3.WithCreatedNotify())
	select {
	case wr := <-wch:
		if !wr.Created {
			t.Fatalf("first watch response %+v, want created", wr)
		}
	case <-ctx.Done():
		t.Fatal("watch not created")
	}
	soon.Succeeds(t, 5*time.Second, func() error {
		if a := note.addr.Load(); a == nil || "http://"+*a != srv.ClientURL() {
			return fmt.Errorf("noted %v, want %s", a, srv.ClientURL())
		}
		return nil
	})
	c.markStalled(note)
	if m, _ := c.stalls.list(); len(m) != 1 {
		t.Errorf("marked %v, want the watch's member", m)
	}
}
